// Fills a network namespace with TIME_WAIT sockets for the diagnostics benchmark, fast: the C
// generator scripts/bench/timewait.c (built on demand into .bench/ with the system's cc) makes each
// connection with five blocking syscalls, no event loop, on a thread per core. ~200,000 TIME_WAIT
// sockets take about 5 s here, against ~22 s for a Node generator, which leaves the 60 s
// TIME_WAIT lifetime to the measurements.
//
// Connections are spread over several loopback addresses (127.0.0.1, .2, ...) × server ports, so
// each destination holds a small share of the local port range (connect() slows sharply once most
// local ports already hold a TIME_WAIT to the destination it picks). The namespace must allow the
// count: tcp_max_tw_buckets (131072 in a new namespace) caps TIME_WAIT, and beyond it the kernel
// closes without TIME_WAIT ("time wait bucket table overflow"); `prepareNamespace` raises it.
// Only ever run inside a namespace made for the purpose: it targets loopback addresses there.
//
// Usage (inside a namespace): node scripts/bench/timewait.mjs [--count 200000] [--addresses 4] [--ports 10] [--threads N]
// Prints one JSON line: { closed, failed, error, ms, destinations, threads }.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { intFlag } from './table.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, 'timewait.c');
const binary = join(here, '..', '..', '.bench', 'timewait');

/** Builds the generator when it is missing or older than its source; returns its path. */
export function generator() {
  if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(source).mtimeMs) {
    mkdirSync(dirname(binary), { recursive: true });
    const r = spawnSync('cc', ['-O2', '-pthread', '-o', binary, source], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cc failed to build ${source}: ${r.error?.message ?? r.stderr}`);
  }
  return binary;
}

/**
 * Sysctls of a namespace made for TIME_WAIT: room for `count` of them, a wide local port range,
 * and tcp_tw_reuse=0 so that no connect() recycles a TIME_WAIT pair and shrinks the count.
 */
export function prepareNamespace(ns, count) {
  const r = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'sysctl',
      '-qw',
      `net.ipv4.tcp_max_tw_buckets=${Math.max(count * 2, 131072)}`,
      'net.ipv4.ip_local_port_range=10000 65000',
      'net.ipv4.tcp_tw_reuse=0',
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`sysctl in ${ns} failed: ${r.stderr}`);
}

function parse(stdout, threads, addresses, ports) {
  const [closed, failed, errno, ms] = stdout.trim().split(/\s+/).map(Number);
  const error = errno ? ((os.constants.errno && Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0]) ?? `errno ${errno}`) : undefined;
  return { closed, failed, error, ms, threads, destinations: addresses.length * ports, addresses, ports };
}

/**
 * Makes `count` TIME_WAIT sockets in namespace `ns` (asynchronously, so the caller's signal handlers
 * run). `onChild` sees the process, to kill it on a signal.
 */
export function generate(ns, { count, addresses = 4, ports = 10, threads = Math.min(os.availableParallelism?.() ?? os.cpus().length, 8), onChild = () => {} }) {
  const hosts = Array.from({ length: addresses }, (_, i) => `127.0.0.${i + 1}`);
  const bin = generator();
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns, bin, String(count), String(threads), String(ports), ...hosts], { stdio: ['ignore', 'pipe', 'pipe'] });
    onChild(c);
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    c.on('error', reject);
    c.on('close', (status, signal) => {
      onChild(undefined);
      if (status === 0) resolve(parse(out, threads, hosts, ports));
      else reject(new Error(`timewait generator ${signal ? `killed by ${signal}` : `exited ${status}`}: ${err.trim()}`));
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = intFlag('count', 200_000);
  const addresses = intFlag('addresses', 4);
  const ports = intFlag('ports', 10);
  const threads = intFlag('threads', Math.min(os.availableParallelism?.() ?? os.cpus().length, 8));
  if (addresses > 250) throw new RangeError('--addresses must be at most 250 (127.0.0.1 to 127.0.0.250)');
  const buckets = Number(readFileSync('/proc/sys/net/ipv4/tcp_max_tw_buckets', 'utf8'));
  if (count > buckets) throw new RangeError(`--count ${count} exceeds net.ipv4.tcp_max_tw_buckets ${buckets} in this namespace: raise it first`);
  const hosts = Array.from({ length: addresses }, (_, i) => `127.0.0.${i + 1}`);
  const r = spawnSync(generator(), [String(count), String(threads), String(ports), ...hosts], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`timewait generator exited ${r.status}: ${r.stderr}`);
  process.stdout.write(`${JSON.stringify(parse(r.stdout, threads, hosts, ports))}\n`);
}
