// Runs a command in a mount namespace of its own in which some /proc files cannot be read, even by
// root, and never touches the machine's own /proc: each file is covered by a bind mount of
// /proc/sys/vm/drop_caches, a write-only sysctl whose open for reading fails with EACCES for
// everyone. Files under /proc/net are covered through a copy of the directory mounted over
// /proc/<pid>/net (the kernel revalidates /proc/net entries on every lookup, which drops a mount on
// the file itself), and the command is exec'd with that pid, so its /proc/self/net is the copy.
import { execFile } from 'node:child_process';

const WRITE_ONLY = '/proc/sys/vm/drop_caches';

const script = `
set -e
netdir=""
for f in $UNREADABLE; do
  case "$f" in
    /proc/net/*)
      if [ -z "$netdir" ]; then
        netdir=$(mktemp -d)
        for real in /proc/$$/net/*; do
          [ -f "$real" ] || continue
          : > "$netdir/\${real##*/}"
          mount --bind "$real" "$netdir/\${real##*/}"
        done
      fi
      mount --bind ${WRITE_ONLY} "$netdir/\${f##*/}"
      ;;
    *) mount --bind ${WRITE_ONLY} "$f" ;;
  esac
done
[ -z "$netdir" ] || mount --rbind "$netdir" /proc/$$/net
exec "$@"
`;

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd args` (inside network namespace `netns` when given) with `paths` unreadable; resolves
 * with its exit code and output whatever the code.
 */
export function runWithUnreadable(paths: string[], cmd: string, args: string[], netns?: string): Promise<Ran> {
  const inner = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, 'sh', cmd, ...args];
  const full = netns ? ['ip', 'netns', 'exec', netns, ...inner] : inner;
  return new Promise((resolve) => {
    execFile(full[0], full.slice(1), { env: { ...process.env, UNREADABLE: paths.join(' ') }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
