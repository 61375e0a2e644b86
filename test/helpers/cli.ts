// Runs the built `socktune` command (dist/cli.js) and returns its exit status and output, whatever
// the status: the CLI tests check all three.
import { fileURLToPath } from 'node:url';
import { runCommand, type Ran } from './children.js';

export const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export type CliRun = Ran;

/** Runs `socktune ...args` with this Node to its end. */
export function socktune(...args: string[]): Promise<CliRun> {
  return runCommand(process.execPath, [cli, ...args]);
}
