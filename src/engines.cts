/**
 * The Node.js versions socktune runs on, as package.json's `engines` says (test/53 checks that the
 * two agree). Every entry point asks this first (`import 'socktune'`, `require('socktune')`,
 * `socktune/register` either way) and throws its error, so an older Node gets one error that names
 * the supported range, instead of whatever fails first there (ERR_REQUIRE_ESM, or a call that
 * misbehaves later). CommonJS, so that the CommonJS entries can load it on any Node; it throws
 * nothing itself (a CommonJS module that throws while an ES module imports it ends an older Node's
 * process even when the importer catches). Other runtimes (Bun, Deno) report a Node version of
 * their own and are not held to it.
 * @module
 */

/** The supported range, as in package.json's `engines.node`. */
export const supportedNode = '>=20.19';

/** The error for a Node.js below {@link supportedNode}, or `undefined` in range (and on other runtimes). */
export function unsupportedNode(): (Error & { code: string }) | undefined {
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
  const versions = process.versions as NodeJS.ProcessVersions & { bun?: string; deno?: string };
  if (versions.bun !== undefined || versions.deno !== undefined || major > 20 || (major === 20 && minor >= 19)) return undefined;
  const err = new Error(
    `socktune supports Node.js ${supportedNode} (package.json "engines"); this process runs Node.js ${process.version}. ` +
      'Upgrade Node.js to 20.19 or later (22.12 or later on the 22 line for require())',
  ) as Error & { code: string };
  err.code = 'ERR_SOCKTUNE_UNSUPPORTED_NODE';
  return err;
}
