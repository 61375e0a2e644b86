// Deploys drop no request. Two backends behind a real HAProxy (Debian's package, configured as its
// own defaults are: 3 retries to the same server, no redispatch; health checks on /health) under
// a steady ~1000 requests/s from autocannon, each
// backend restarted in turn: SIGTERM, wait for its exit, start it again. The backends have no
// socktune code: the socktune arm runs them under socktune/register with SOCKTUNE_SHUTDOWN (the
// drain: Connection: close on every response and 503 on /health from the signal, answer for a
// delay while HAProxy takes the backend out, stop accepting, close idle connections spread out,
// let requests finish); the others end the way applications do:
// server.close(), http-terminator and stoppable (npm). Everything runs in a namespace of this file's own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { canUse } from '../helpers/env.js';
import { Netns } from '../helpers/netns.js';
import { startHAProxy, type HAProxy } from '../helpers/haproxy.js';
import { startApp, type App } from '../helpers/register.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const FRONT = 8000;
const BACKENDS = [9001, 9002];
const RATE = 1000;

interface Load {
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  resets: number;
  requests: number;
}

const modes: Array<{ mode: string; restarts: number; env: Record<string, string> }> = [
  {
    mode: 'socktune',
    restarts: 50,
    env: {
      NODE_OPTIONS: '--import=socktune/register',
      SOCKTUNE_POLICY: 'gracefulHeartbeat',
      SOCKTUNE_SHUTDOWN: JSON.stringify({ signal: 'SIGTERM', delay: 800, timeout: 5000, spread: 200, readinessPath: '/health' }),
    },
  },
  { mode: 'close', restarts: 10, env: {} },
  { mode: 'terminator', restarts: 10, env: {} },
  { mode: 'stoppable', restarts: 10, env: {} },
];

describe.runIf(canUse('ip', 'ss', 'haproxy'))('restarting two backends behind HAProxy under load', () => {
  const ns = new Netns('dpl');
  let haproxy: HAProxy | undefined;
  beforeAll(async () => {
    ns.create();
    haproxy = await startHAProxy({
      netns: ns.name,
      port: FRONT,
      config: [
        'global',
        '  maxconn 8192',
        'defaults',
        '  mode http',
        '  timeout connect 1s',
        '  timeout client 30s',
        '  timeout server 30s',
        '  timeout http-keep-alive 30s',
        '  retries 3',
        'frontend fe',
        `  bind 127.0.0.1:${FRONT}`,
        '  default_backend be',
        'backend be',
        '  balance roundrobin',
        '  option httpchk GET /health',
        // A down backend is seen after 2 failed checks 200 ms apart; an up one after 1.
        '  default-server check inter 200 fall 2 rise 1',
        ...BACKENDS.map((port, i) => `  server b${i} 127.0.0.1:${port}`),
      ],
    });
  });
  afterAll(async () => {
    await haproxy?.stop();
    await ns.destroy();
  });

  async function backend(port: number, mode: (typeof modes)[number]): Promise<App> {
    return startApp(fixture('deploy-backend.mjs'), { ns: ns.name, env: mode.env, args: [String(port), mode.mode] });
  }

  it.each(modes)('$mode: $restarts restarts of each backend', { timeout: 600_000 }, async (mode) => {
    const running = await Promise.all(BACKENDS.map((port) => backend(port, mode)));
    await sleep(500); // HAProxy's checks see both up
    const load = await startApp(fixture('load.mjs'), { ns: ns.name, args: [`http://127.0.0.1:${FRONT}/`, String(RATE), '50'] });
    try {
      await sleep(1000);
      for (let round = 0; round < mode.restarts; round++) {
        for (let i = 0; i < BACKENDS.length; i++) {
          const exited = once(running[i].child, 'exit');
          running[i].child.kill('SIGTERM');
          await exited;
          running[i] = await backend(BACKENDS[i], mode);
          await sleep(500); // back in rotation (a check every 200 ms, rise 1)
        }
      }
      load.child.stdin!.end();
      const result = (await load.next()) as unknown as Load;
      console.log(`deploy, ${mode.mode}, ${mode.restarts} restarts of each backend: ${JSON.stringify(result)}`);
      expect(result.ok).toBeGreaterThan(0);
      if (mode.mode === 'socktune')
        expect({ non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts }).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    } finally {
      await load.stop();
      for (const b of running) {
        b.child.kill('SIGKILL');
        await b.stop();
      }
    }
  });
});
