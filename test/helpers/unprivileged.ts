// What a test runs as an unprivileged user (nobody, as a service account would run socktune) must
// be readable by that user, and the checkout may sit in a directory only root can read (mode 0700,
// such as root's home). So such tests run a copy of the built package, and of the Node binary when
// nobody cannot run the one the tests run on, made in a temp dir everyone can read.
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** setpriv arguments that drop to nobody. */
export const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

const root = fileURLToPath(new URL('../..', import.meta.url));
const made: string[] = [];

/** Whether others may read `path` and search every directory above it (by mode bits). */
export function othersCanRead(path: string): boolean {
  let p = resolve(path);
  if ((statSync(p).mode & 0o004) === 0) return false;
  for (p = dirname(p); ; p = dirname(p)) {
    if ((statSync(p).mode & 0o001) === 0) return false;
    if (p === dirname(p)) return true;
  }
}

let node: string | undefined;
/** The Node binary nobody runs: this process's when nobody can, otherwise a copy of it. */
export function nodeForNobody(): string {
  if (node !== undefined) return node;
  if (othersCanRead(process.execPath)) return (node = process.execPath);
  const dir = mkdtempSync(join(tmpdir(), 'socktune-node-'));
  made.push(dir);
  node = join(dir, 'node');
  copyFileSync(process.execPath, node);
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return node;
}

export interface PackageCopy {
  /** The package's directory (`dist/`, `package.json`, `node_modules/` of its dependencies). */
  pkg: string;
  /** The Node binary to run it with as nobody. */
  node: string;
}

/**
 * A copy of the built package readable by everyone: `dist/`, `package.json` and its runtime
 * dependencies; with `addon`, the addon `npm run build` made (build/Release); `prebuilds` maps
 * prebuild paths (`'linux-x64/socktune.glibc.node'`) to the files to copy there; `files` maps
 * paths in the copy to files to copy there. Removed by {@link removeCopies}.
 */
export function packageCopy(options: { addon?: boolean; prebuilds?: Record<string, string>; files?: Record<string, string> } = {}): PackageCopy {
  const dir = mkdtempSync(join(tmpdir(), 'socktune-pkg-'));
  made.push(dir);
  const pkg = join(dir, 'socktune');
  cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
  copyFileSync(join(root, 'package.json'), join(pkg, 'package.json'));
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const dep of Object.keys(manifest.dependencies ?? {})) {
    cpSync(join(root, 'node_modules', dep), join(pkg, 'node_modules', dep), { recursive: true });
  }
  if (options.addon) {
    const release = join(root, 'build', 'Release');
    if (!existsSync(release)) throw new Error('no build/Release: run npm run build first');
    mkdirSync(join(pkg, 'build', 'Release'), { recursive: true });
    for (const f of readdirSync(release)) if (f.endsWith('.node')) copyFileSync(join(release, f), join(pkg, 'build', 'Release', f));
    // The prebuilds too: with PREBUILDS_ONLY=1 (the portability runs) the loader takes only those.
    if (existsSync(join(root, 'prebuilds'))) cpSync(join(root, 'prebuilds'), join(pkg, 'prebuilds'), { recursive: true });
  }
  for (const [to, from] of Object.entries({
    ...Object.fromEntries(Object.entries(options.prebuilds ?? {}).map(([k, v]) => [join('prebuilds', k), v])),
    ...options.files,
  })) {
    mkdirSync(dirname(join(pkg, to)), { recursive: true });
    copyFileSync(from, join(pkg, to));
  }
  execFileSync('chmod', ['-R', 'a+rX', dir]);
  return { pkg, node: nodeForNobody() };
}

/** Removes every copy made in this process. */
export function removeCopies(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
  node = undefined;
}
