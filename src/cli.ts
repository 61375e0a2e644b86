#!/usr/bin/env node
/**
 * The `socktune` command. A surface only: every decision lives in the library.
 *
 * It starts fast because operators run it on hosts in trouble (200,000 TIME_WAIT sockets): no
 * argument-parsing dependency, each command imports only what it uses (`stat` never loads the
 * policies, the guard, undici or `node:net`), and on Node 22.1+ V8's compiled code is cached
 * between runs (`module.enableCompileCache`). Only Node built-ins are imported statically.
 *
 * Exit status: 0 done (doctor: nothing needs attention); 1 doctor found something that needs
 * attention; 2 usage error (unknown command or flag, a missing or invalid value); 3 something could
 * not be read or done (a /proc file, netlink, a process or namespace that does not exist, no
 * permission). A closed output pipe (`socktune watch | head -1`) ends the command quietly with 0.
 * @module
 */
import module from 'node:module';

// Before any of socktune's modules is imported, so they are compiled from the cache too.
(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();

/** Exit statuses; README "Exit status" lists them. */
const EXIT = { ok: 0, attention: 1, usage: 2, failed: 3 } as const;

/** A mistake in how the command was called: exit status 2, with the usage line of the command. */
class UsageError extends Error {}

type FlagKind = 'boolean' | 'value' | 'list';

interface FlagSpec {
  name: string;
  /** The one-letter form, where one is conventional (`-p` for --pid, as ss, lsof and pgrep have it). */
  short?: string;
  kind: FlagKind;
  /** Placeholder of the value in help. */
  arg?: string;
  help: string;
}

interface CommandSpec {
  name: string;
  summary: string;
  flags: FlagSpec[];
  run(flags: Flags): Promise<void>;
}

type Flags = Map<string, string | string[] | true>;

const filterFlags: FlagSpec[] = [
  { name: 'pid', short: 'p', kind: 'value', arg: '<pid>', help: 'only the sockets of this process (inodes in /proc/PID/fd), in its network namespace' },
  {
    name: 'netns',
    short: 'n',
    kind: 'value',
    arg: '<name|path>',
    help: 'another network namespace: a name under /run/netns, or a path such as /proc/PID/ns/net (needs root)',
  },
  { name: 'port', kind: 'value', arg: '<port>', help: 'a port on either side' },
  { name: 'local-port', kind: 'value', arg: '<port>', help: 'local port' },
  { name: 'remote-port', kind: 'value', arg: '<port>', help: 'remote port' },
  { name: 'local-address', kind: 'value', arg: '<ip>', help: 'local address' },
  { name: 'remote-address', kind: 'value', arg: '<ip>', help: 'remote address' },
  { name: 'family', kind: 'value', arg: '<4|6>', help: 'address family' },
  { name: 'state', kind: 'list', arg: '<state...>', help: "states to count (kernel names or ss's: time-wait, close-wait, estab, ...)" },
  { name: 'source', kind: 'value', arg: '<netlink|proc>', help: 'where to read (default: netlink, else /proc/net/tcp)' },
];

/** Flags that existed once, with what to use instead. */
const removed: Record<string, string> = {
  process: "--process was removed (it counted the CLI's own sockets): use --pid <pid> for a process",
};

const PORT = { min: 0, max: 65535 };
const TIMER_MAX = 2_147_483_647; // setInterval holds at most 2^31-1 ms; Node turns more into 1 ms
const TOP_MAX = 65_535;
const PID_MAX = 4_194_304;

/** An integer flag within [min, max]; the message names the flag and the range. */
function intFlag(flags: Flags, name: string, min: number, max: number, unit = ''): number | undefined {
  const v = flags.get(name);
  if (v === undefined) return undefined;
  const text = String(v);
  const n = /^-?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}${unit}, got '${text}'`);
  }
  return n;
}

function stringFlag(flags: Flags, name: string): string | undefined {
  const v = flags.get(name);
  return v === undefined ? undefined : String(v);
}

/** ss's state names (and the kernel's, any case) to the kernel's. */
const ssStates: Record<string, string> = {
  estab: 'ESTABLISHED',
  established: 'ESTABLISHED',
  'syn-sent': 'SYN_SENT',
  'syn-recv': 'SYN_RECV',
  'fin-wait-1': 'FIN_WAIT1',
  'fin-wait-2': 'FIN_WAIT2',
  'time-wait': 'TIME_WAIT',
  closed: 'CLOSE',
  'close-wait': 'CLOSE_WAIT',
  'last-ack': 'LAST_ACK',
  listening: 'LISTEN',
  closing: 'CLOSING',
};

/** Turns filter flags into a ConnectionFilter, each value checked here so errors name the flag. */
async function filterFrom(flags: Flags): Promise<import('./diagnose/states.js').ConnectionFilter> {
  const { parseAddress } = await import('./diagnose/address.js');
  const f: import('./diagnose/states.js').ConnectionFilter = {};
  const pid = intFlag(flags, 'pid', 1, PID_MAX);
  if (pid !== undefined) f.pid = pid;
  const netns = stringFlag(flags, 'netns');
  if (netns !== undefined) {
    if (netns === '' || netns === '.' || netns === '..' || (netns.includes('/') && !netns.startsWith('/'))) {
      throw new UsageError(`--netns must be a name under /run/netns or an absolute path, got '${netns}'`);
    }
    f.netns = netns;
  }
  for (const [flag, key] of [
    ['port', 'port'],
    ['local-port', 'localPort'],
    ['remote-port', 'remotePort'],
  ] as const) {
    const n = intFlag(flags, flag, PORT.min, PORT.max);
    if (n !== undefined) f[key] = n;
  }
  for (const [flag, key] of [
    ['local-address', 'localAddress'],
    ['remote-address', 'remoteAddress'],
  ] as const) {
    const a = stringFlag(flags, flag);
    if (a === undefined) continue;
    if (parseAddress(a) === undefined) throw new UsageError(`--${flag} must be an IPv4 or IPv6 address, got '${a}'`);
    f[key] = a;
  }
  const family = stringFlag(flags, 'family');
  if (family !== undefined) {
    if (family !== '4' && family !== '6') throw new UsageError(`--family must be 4 or 6, got '${family}'`);
    f.family = Number(family) as 4 | 6;
  }
  const states = flags.get('state');
  if (states !== undefined) {
    const { constants } = await import('./binding.js');
    const kernel: string[] = constants.tcpStates.slice(1);
    f.states = (states as string[])
      .flatMap((s) => s.split(','))
      .filter(Boolean)
      .map((s) => {
        const name = ssStates[s.toLowerCase()] ?? s.toUpperCase().replace(/-/g, '_');
        if (!kernel.includes(name)) {
          throw new UsageError(`--state '${s}' is not a TCP state; use one of: ${kernel.join(', ')} (or ss's names: ${Object.keys(ssStates).join(', ')})`);
        }
        return name as import('./tables.js').TcpState;
      });
    if (f.states.length === 0) throw new UsageError('--state needs at least one state');
  }
  const source = stringFlag(flags, 'source');
  if (source !== undefined) {
    if (source !== 'netlink' && source !== 'proc') throw new UsageError(`--source must be netlink or proc, got '${source}'`);
    f.source = source;
  }
  return f;
}

function commandOf(pid: number | undefined, readFile: (p: string) => string): string | undefined {
  if (pid === undefined) return undefined;
  try {
    return readFile(`/proc/${pid}/comm`).trimEnd();
  } catch {
    return undefined;
  }
}

const commands: CommandSpec[] = [
  {
    name: 'stat',
    summary: 'count TCP sockets by state, with the peers, destinations and local ports holding TIME_WAIT and CLOSE_WAIT, and who holds the CLOSE_WAIT ones',
    flags: [
      ...filterFlags,
      { name: 'top', kind: 'value', arg: '<n>', help: `rows per ranking, 0 to ${TOP_MAX} (default 5; 0: counts only)` },
      { name: 'json', short: 'j', kind: 'boolean', help: 'print JSON: the shape of connectionReport()' },
    ],
    async run(flags) {
      const filter = await filterFrom(flags);
      const limit = intFlag(flags, 'top', 0, TOP_MAX) ?? 5;
      const { connectionReport } = await import('./diagnose/states.js');
      const report = connectionReport(filter, limit);
      if (flags.has('json')) {
        await write(`${JSON.stringify(report)}\n`);
        return;
      }
      const { readFileSync } = await import('node:fs');
      const { heldBy, scopeText, table } = await import('./format.js');
      // A state asked for by --state is shown with its count even when that is 0.
      const rows = Object.entries(report.states).filter(([s, n]) => n > 0 || (filter.states as string[] | undefined)?.includes(s));
      const max = Math.max(0, ...rows.map(([, n]) => n));
      const bar = (n: number) => '#'.repeat(max > 0 ? Math.round((n / max) * 30) : 0);
      const out = [
        `TCP sockets of ${scopeText(
          report,
          commandOf(report.pid, (p) => readFileSync(p, 'utf8')),
        )} (${report.source}): ${report.total}`,
        '',
        table(
          ['state', 'count', ''],
          rows.map(([s, n]) => [s, String(n), bar(n)]),
        ),
      ];
      for (const [state, t] of Object.entries(report.top)) {
        if (t.peers.length === 0) continue;
        // Destinations of connections opened here; local ports of connections a listener here accepted.
        out.push('', `${state} by peer / destination (opened here) / local port (accepted here):`);
        const len = Math.max(t.peers.length, t.destinations.length, t.localPorts.length);
        const cell = (e?: { key: string; count: number }) => (e ? `${e.count} ${e.key}` : '');
        out.push(
          table(
            ['peer', 'destination', 'local port'],
            Array.from({ length: len }, (_, i) => [cell(t.peers[i]), cell(t.destinations[i]), cell(t.localPorts[i])]),
          ),
        );
        if (!t.owned) {
          out.push(`${state} sockets have no owning process: the kernel keeps them after the process closed them.`);
          continue;
        }
        if (t.sides) out.push(`${state}: ${t.sides.accepted} accepted by a listener here, ${t.sides.opened} opened here.`);
        if (t.ownersError) {
          out.push(`Owners of the ${state} sockets could not be read: ${t.ownersError}`);
          continue;
        }
        out.push('', `${state} held by (pid command: sockets), as ss -p shows them:`);
        const lines: string[][] = [[`all ${state}`, heldBy({ owners: t.holders, unreadable: t.unreadable })]];
        for (const [kind, label] of [
          ['peers', 'peer'],
          ['destinations', 'destination'],
          ['localPorts', 'local port'],
        ] as const) {
          for (const e of t[kind]) lines.push([`${label} ${e.key}`, heldBy(e)]);
        }
        out.push(table(['group', 'held by'], lines));
      }
      await write(`${out.join('\n')}\n`);
    },
  },
  {
    name: 'watch',
    summary: 'live view of TCP state counts and the TIME_WAIT/CLOSE_WAIT trend (q or Ctrl-C quits)',
    flags: [
      ...filterFlags,
      { name: 'interval', kind: 'value', arg: '<ms>', help: `milliseconds between refreshes, 50 to ${TIMER_MAX} (default 1000)` },
      { name: 'count', kind: 'value', arg: '<n>', help: 'stop after n refreshes (1 or more; default: until q or Ctrl-C)' },
      { name: 'json', short: 'j', kind: 'boolean', help: 'print one JSON line per refresh' },
    ],
    async run(flags) {
      const filter = await filterFrom(flags);
      const interval = intFlag(flags, 'interval', 50, TIMER_MAX, ' ms') ?? 1000;
      const count = intFlag(flags, 'count', 1, Number.MAX_SAFE_INTEGER);
      const { watch } = await import('./watch.js');
      await watch({ filter, interval, count, json: flags.has('json') });
    },
  },
  {
    name: 'doctor',
    summary:
      'audit the TIME_WAIT/CLOSE_WAIT/keepalive sysctls and the connections (CLOSE_WAIT and who holds them, TIME_WAIT per destination against the local port range) ' +
      'of this namespace, and check which socket options work here. Exit 1 when a finding is critical or an option that should work does not (with --strict, warnings too)',
    flags: [
      { name: 'json', short: 'j', kind: 'boolean', help: 'print JSON: the sysctlAudit() shape plus connections, selfCheck and ok' },
      { name: 'strict', kind: 'boolean', help: 'exit 1 on warnings too (a setting that could not be read is a warning)' },
    ],
    async run(flags) {
      const { doctor } = await import('./doctor.js');
      process.exitCode = (await doctor({ json: flags.has('json'), strict: flags.has('strict'), write })) ? EXIT.ok : EXIT.attention;
    },
  },
  {
    name: 'demo',
    summary:
      'reproduce TIME_WAIT port exhaustion, a silently vanished peer and pooled "socket hang up", each without and with socktune, ' +
      'in network namespaces of its own (as root; otherwise loopback only), and print what was measured. Takes about 30 s',
    flags: [{ name: 'json', short: 'j', kind: 'boolean', help: 'print JSON: every number of the table, with how it was measured' }],
    async run(flags) {
      // Loaded here: the demo spawns children and needs none of this for the other commands.
      const { runDemo, renderDemo } = await import('./demo/run.js');
      const json = flags.has('json');
      const log = json ? undefined : (line: string) => process.stderr.write(`${line}\n`);
      const report = await runDemo({ log });
      await write(json ? `${JSON.stringify(report, null, 2)}\n` : `${renderDemo(report)}\n`);
      // A scenario the machine cannot run is reported, not failed; one that broke is a failure.
      process.exitCode = report.ok ? EXIT.ok : EXIT.failed;
    },
  },
];

/** Writes to stdout and waits until it is flushed (or the reader went away). */
function write(text: string): Promise<void> {
  return new Promise((resolve) => {
    process.stdout.write(text, () => resolve());
  });
}

function usageLine(c: CommandSpec): string {
  return `socktune ${c.name} ${c.flags.map((f) => `[${f.short ? `-${f.short}|` : ''}--${f.name}${f.arg ? ` ${f.arg}` : ''}]`).join(' ')}`;
}

function commandHelp(c: CommandSpec): string {
  // `-p, --pid <pid>`; a flag without a short form lines up under the long ones.
  const shown = (f: { name: string; short?: string; arg?: string }) => `${f.short ? `-${f.short}, ` : '    '}--${f.name}${f.arg ? ` ${f.arg}` : ''}`;
  const width = Math.max(...c.flags.map((f) => shown(f).length));
  return [
    `usage: socktune ${c.name} [options]`,
    '',
    c.summary,
    '',
    'options:',
    ...c.flags.map((f) => `  ${shown(f).padEnd(width)}  ${f.help}`),
    `  ${shown({ name: 'help', short: 'h' }).padEnd(width)}  show this help`,
  ].join('\n');
}

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: socktune <command> [options]',
    '',
    'TCP lifecycle control and diagnostics for Node.js sockets',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'socktune <command> --help shows the options of a command; socktune --version the version.',
    'exit status: 0 done; 1 doctor found something that needs attention; 2 usage error; 3 something could not be read or done.',
  ].join('\n');
}

/** Parses `--flag value`, `--flag=value`, boolean flags and `--state a b c` against the command's spec. */
async function parseFlags(c: CommandSpec, args: string[]): Promise<Flags | 'help'> {
  const flags: Flags = new Map();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '-h' || arg === '--help') return 'help';
    const short = /^-[A-Za-z]$/.test(arg) ? c.flags.find((f) => f.short === arg[1]) : undefined;
    if (/^-[A-Za-z]$/.test(arg) && !short) {
      const known = c.flags.filter((f) => f.short).map((f) => `-${f.short} (--${f.name})`);
      throw new UsageError(`unknown option ${arg}${known.length ? `; short options: ${known.join(', ')}, -h (--help)` : ''}`);
    }
    if (!short && !arg.startsWith('--')) throw new UsageError(`unexpected argument '${arg}'`);
    const eq = short ? -1 : arg.indexOf('=');
    const name = short ? short.name : arg.slice(2, eq < 0 ? undefined : eq);
    const spec = short ?? c.flags.find((f) => f.name === name);
    if (!spec) {
      if (removed[name]) throw new UsageError(removed[name]);
      const { didYouMean } = await import('./errors.js');
      const hint = didYouMean(
        name,
        c.flags.map((f) => f.name),
      );
      throw new UsageError(`unknown option --${name}${hint ? ` (did you mean --${hint}?)` : ''}`);
    }
    if (spec.kind === 'boolean') {
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      flags.set(name, true);
      continue;
    }
    const values: string[] = [];
    if (eq >= 0) values.push(arg.slice(eq + 1));
    else {
      // A value may start with '-' (--top -1 is then refused for its range, not as a flag); a
      // short option of this command is an option.
      const isFlag = (a: string) => a.startsWith('--') || a === '-h' || c.flags.some((f) => f.short !== undefined && a === `-${f.short}`);
      while (i + 1 < args.length && !isFlag(args[i + 1]) && (spec.kind === 'list' || values.length === 0)) values.push(args[++i]);
    }
    if (values.length === 0) throw new UsageError(`--${name} needs a value ${spec.arg ?? ''}`.trimEnd());
    if (spec.kind === 'list') flags.set(name, [...((flags.get(name) as string[] | undefined) ?? []), ...values]);
    else {
      if (flags.has(name)) throw new UsageError(`--${name} was given twice`);
      flags.set(name, values[0]);
    }
  }
  return flags;
}

async function version(): Promise<string> {
  const { readFileSync } = await import('node:fs');
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** What the process exits with for an error thrown by a command. */
function failure(command: string, err: unknown): number {
  const e = err as Error & { code?: string };
  if (err instanceof UsageError) {
    const c = commands.find((x) => x.name === command);
    process.stderr.write(
      `socktune${command ? ` ${command}` : ''}: ${e.message}\n${c ? `usage: ${usageLine(c)}\n` : 'usage: socktune <command> [options] (socktune --help lists the commands)\n'}`,
    );
    return EXIT.usage;
  }
  if (typeof e?.code === 'string' && (e.code.startsWith('ERR_INVALID_ARG') || e.code === 'ERR_OUT_OF_RANGE')) {
    // A value the library refused that the checks above let through.
    process.stderr.write(`socktune ${command}: ${e.message}\n`);
    return EXIT.usage;
  }
  process.stderr.write(`socktune ${command}: ${e?.message ?? String(err)}\n`);
  return EXIT.failed;
}

async function main(argv: string[]): Promise<number> {
  // A reader that goes away (`socktune watch | head -1`) is not an error: stop quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.ok);
    process.stderr.write(`socktune: cannot write the output: ${err.message}\n`);
    process.exit(EXIT.failed);
  });
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    const c = first === 'help' ? commands.find((x) => x.name === rest[0]) : undefined;
    await write(`${c ? commandHelp(c) : mainHelp()}\n`);
    return first === undefined ? EXIT.usage : EXIT.ok;
  }
  if (first === '-V' || first === '--version') {
    await write(`${await version()}\n`);
    return EXIT.ok;
  }
  const command = commands.find((c) => c.name === first);
  if (!command) {
    const { didYouMean } = await import('./errors.js');
    const hint = didYouMean(
      first,
      commands.map((c) => c.name),
    );
    return failure('', new UsageError(`unknown command '${first}'${hint ? ` (did you mean ${hint}?)` : ''}`));
  }
  try {
    const flags = await parseFlags(command, rest);
    if (flags === 'help') {
      await write(`${commandHelp(command)}\n`);
      return EXIT.ok;
    }
    await command.run(flags);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    return failure(command.name, err);
  }
}

// Every output has been flushed (write() waits for it): exit now rather than tear the runtime down
// piece by piece, which a CLI that has printed its answer does not need.
process.exit(await main(process.argv.slice(2)));
