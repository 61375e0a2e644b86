// Runs the built `socktune` command (dist/cli.js) and returns its exit status and output, whatever
// the status: the CLI tests check all three.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function socktune(...args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: unknown }).code as number) : 0, stdout, stderr });
    });
  });
}
