// Fills the current network namespace with TIME_WAIT sockets for the diagnostics benchmark: servers on
// several 127.0.0.1 ports, clients that connect and close first (the side that closes first keeps the
// TIME_WAIT). Run it inside a namespace made for the purpose (`ip netns exec NS node timewait.mjs`);
// it never targets anything but loopback. Bounded in count and in time.
// Usage: node scripts/bench/timewait.mjs [--count 50000] [--ports 10] [--concurrency 200] [--deadline-ms 20000]
// Prints one JSON line: { closed, failed, ms, ports }.
import net from 'node:net';
import { once } from 'node:events';
import { intFlag } from './table.mjs';


const COUNT = intFlag('count', 50_000);
// One destination port slows connect() sharply once most even local ports hold a TIME_WAIT to it
// (see shared/testing.md); spreading the churn keeps each destination's share of the range small.
const PORTS = intFlag('ports', 10);
const CONCURRENCY = intFlag('concurrency', 200);
const DEADLINE_MS = intFlag('deadline-ms', 20_000);

const servers = [];
for (let i = 0; i < PORTS; i++) {
  // Default allowHalfOpen=false: the server answers the client's FIN with its own at once, so the
  // client passes FIN_WAIT_2 quickly and lands in TIME_WAIT.
  const server = net.createServer((s) => s.on('error', () => {}).resume());
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
  servers.push(server);
}
await Promise.all(servers.map((s) => once(s, 'listening')));
const ports = servers.map((s) => s.address().port);

const t0 = performance.now();
const deadline = t0 + DEADLINE_MS;
let started = 0;
let closed = 0;
let failed = 0;
const firstErrors = new Map();

await new Promise((resolve) => {
  let active = 0;
  const next = () => {
    while (active < CONCURRENCY && started < COUNT && performance.now() < deadline) {
      const port = ports[started++ % PORTS];
      active++;
      const c = net.connect({ port, host: '127.0.0.1' });
      c.on('connect', () => c.end());
      c.on('error', (err) => {
        failed++;
        if (!firstErrors.has(err.code)) firstErrors.set(err.code, err.message);
      });
      c.resume();
      c.on('close', (hadError) => {
        active--;
        if (!hadError) closed++;
        next();
      });
    }
    if (active === 0) resolve();
  };
  next();
});

const ms = performance.now() - t0;
await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
process.stdout.write(`${JSON.stringify({ closed, failed, errors: Object.fromEntries(firstErrors), ms, ports, deadlineHit: closed + failed < COUNT })}\n`);
