// The processes of the churn benchmark (scripts/bench/churn.mjs), run inside its network namespace:
//   serve  <json {count}>                                        request/response servers on 127.0.0.1
//   client <json {ports, arms, rounds, per, concurrency, order}> short-connection churn, arm by arm
// The client runs every arm once per round, in a rotating order, and prints one JSON line with every
// batch: wall time, client CPU time and the TIME_WAIT it left towards the arm's own server ports.
// Both exit when stdin closes, so a parent that dies takes them along.
import net from 'node:net';
import { once } from 'node:events';
import { connectionStates, presets, resetClose, tune } from '../../dist/index.js';

const [mode, json] = process.argv.slice(2);
const args = JSON.parse(json ?? '{}');
if (mode === 'serve' || mode === 'client') {
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

const print = (m) => new Promise((resolve) => process.stdout.write(`${JSON.stringify(m)}\n`, resolve));

if (mode === 'serve') {
  const servers = [];
  for (let i = 0; i < args.count; i++) {
    // allowHalfOpen false: the client's FIN is answered at once, so a FIN close ends in TIME_WAIT.
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d) => {
        if (d.includes(10)) s.write('pong\n');
      });
    });
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 });
    servers.push(server);
  }
  await Promise.all(servers.map((s) => once(s, 'listening')));
  await print({ ports: servers.map((s) => s.address().port) });
} else if (mode === 'client') {
  const policy = presets.rstOnClose();
  // How each arm ends a connection once the response has arrived. Everything else is identical.
  const arms = {
    destroy: { close: (s) => s.destroy() },
    resetAndDestroy: { close: (s) => s.resetAndDestroy() },
    policyEnd: { setup: (s) => tune(s, policy), close: (s) => s.end() },
    resetClose: { close: (s) => void resetClose(s) },
  };

  function timeWait(ports) {
    let n = 0;
    for (const port of ports) n += connectionStates({ states: ['TIME_WAIT'], remoteAddress: '127.0.0.1', remotePort: port }).states.TIME_WAIT;
    return n;
  }

  /** `count` connections at `concurrency`, each: connect, 'ping', 'pong', close the arm's way. */
  function batch(arm, ports, count, concurrency) {
    const { setup, close } = arms[arm];
    return new Promise((resolve) => {
      let started = 0;
      let active = 0;
      let ok = 0;
      const errors = {};
      const next = () => {
        while (active < concurrency && started < count) {
          const port = ports[started++ % ports.length];
          active++;
          const s = net.connect({ host: '127.0.0.1', port });
          setup?.(s);
          let failed;
          s.once('connect', () => s.write('ping\n'));
          s.once('data', () => close(s));
          s.on('error', (err) => (failed ??= err.code ?? err.message));
          s.on('close', () => {
            active--;
            if (failed) errors[failed] = (errors[failed] ?? 0) + 1;
            else ok++;
            if (active === 0 && started >= count) resolve({ ok, errors });
            else next();
          });
        }
      };
      next();
    });
  }

  const names = args.arms;
  const portsOf = Object.fromEntries(names.map((a, i) => [a, args.ports.slice(i * args.portsPerArm, (i + 1) * args.portsPerArm)]));
  // Warm-up: the JIT and the first-use costs of every path, outside the measurement.
  for (const a of names) await batch(a, portsOf[a], Math.min(200, args.per), args.concurrency);
  const batches = [];
  for (let r = 0; r < args.rounds; r++) {
    // Rotate the order so no arm always runs right after the one that leaves TIME_WAIT behind.
    const order = names.map((_, i) => names[(i + r) % names.length]);
    for (const a of order) {
      const before = timeWait(portsOf[a]);
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const { ok, errors } = await batch(a, portsOf[a], args.per, args.concurrency);
      const ns = Number(process.hrtime.bigint() - t0);
      const cpu = process.cpuUsage(cpu0);
      // TIME_WAIT is entered within a round trip of the last close; loopback needs a moment at most.
      await new Promise((r) => setTimeout(r, 20));
      batches.push({ round: r, arm: a, ok, errors, ns, cpuUs: cpu.user + cpu.system, timeWait: timeWait(portsOf[a]) - before });
    }
  }
  await print({ batches });
  process.exit(0);
} else if (mode === 'strace-client') {
  // One arm, no measurement: run under `strace -c` by the parent, which subtracts a count=0 run.
  const policy = presets.rstOnClose();
  const closeOf = {
    destroy: (s) => s.destroy(),
    resetAndDestroy: (s) => s.resetAndDestroy(),
    policyEnd: (s) => s.end(),
    resetClose: (s) => void resetClose(s),
  };
  let done = 0;
  const one = () =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: args.ports[done % args.ports.length] });
      if (args.arm === 'policyEnd') tune(s, policy);
      s.once('connect', () => s.write('ping\n'));
      s.once('data', () => closeOf[args.arm](s));
      s.on('error', () => {});
      s.on('close', resolve);
    });
  // One at a time: the count per connection is then exact, not an average over overlapping work.
  for (; done < args.count; done++) await one();
  await print({ done });
  process.exit(0);
} else {
  process.stderr.write('usage: churn-peer.mjs <serve|client|strace-client> <json arguments>\n');
  process.exit(2);
}
