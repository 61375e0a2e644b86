// Debian's PostgreSQL for a test: a cluster initialised in a directory of the test's own and its
// server started in a network namespace, both as nobody (PostgreSQL refuses to run as root).
// Stopped with stop(server, 'SIGQUIT', 10_000) from helpers/children.ts: its immediate shutdown.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { printed, stop } from './children.js';

/** Debian's server binaries: /usr/lib/postgresql/<major>/bin, the newest major installed. */
export function postgresBin(): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((d) => existsSync(join(root, d, 'bin', 'postgres'))) : [];
  majors.sort((a, b) => Number(b) - Number(a));
  if (majors.length === 0) throw new Error(`no PostgreSQL server under ${root} (apt-get install postgresql)`);
  return join(root, majors[0], 'bin');
}

/**
 * Initialises a cluster in `dir`/data (owned by nobody, trusting `clients`, a CIDR, besides the
 * local socket in `dir`) and starts its server in `netns` on `address`:`port`; resolves with the
 * server process (the postmaster itself: setpriv execs it) once it accepts connections, within `within` ms.
 */
export async function startPostgres(options: {
  dir: string;
  netns: string;
  address: string;
  port: number;
  clients: string;
  within: number;
}): Promise<ChildProcess> {
  const { dir, netns, address, port, clients, within } = options;
  const bin = postgresBin();
  const id = (flag: string) => Number(execFileSync('id', [flag, 'nobody'], { encoding: 'utf8' }).trim());
  // The data directory belongs to the server's user; /tmp itself is world-traversable.
  chownSync(dir, id('-u'), id('-g'));
  const asNobody = ['setpriv', `--reuid=${id('-u')}`, `--regid=${id('-g')}`, '--clear-groups'];
  execFileSync(
    asNobody[0],
    [...asNobody.slice(1), join(bin, 'initdb'), '-D', join(dir, 'data'), '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'],
    { stdio: 'ignore', timeout: 60_000 },
  );
  appendFileSync(join(dir, 'data', 'pg_hba.conf'), `host all all ${clients} trust\n`);
  const server = spawn(
    'ip',
    [
      'netns',
      'exec',
      netns,
      ...asNobody,
      join(bin, 'postgres'),
      '-D',
      join(dir, 'data'),
      '-k',
      dir,
      '-c',
      `listen_addresses=${address}`,
      '-c',
      `port=${port}`,
      '-c',
      'fsync=off',
      '-c',
      'logging_collector=off',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  try {
    await printed(server, 'ready to accept connections', within, 'postgres did not start');
  } catch (err) {
    await stop(server, 'SIGQUIT', 10_000);
    throw err;
  }
  return server;
}
