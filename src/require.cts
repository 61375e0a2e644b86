/**
 * The CommonJS entry of `socktune` (`require('socktune')`): the ES module itself, loaded through
 * Node's require() of ES modules (Node 20.19+, 22.12+), so `require` and `import` share one
 * instance. Where that is off (Node 22.0 to 22.11 without --experimental-require-module), one
 * clear error says so instead of ERR_REQUIRE_ESM.
 * @module
 */
import engines = require('./engines.cjs');
const unsupported = engines.unsupportedNode();
if (unsupported !== undefined) throw unsupported;
const features = process.features as NodeJS.ProcessFeatures & { require_module?: boolean };
if (features.require_module === false) {
  const err = new Error(
    `require('socktune') loads an ES module, which this Node.js (${process.version}) does not do by default: ` +
      `use import, or run Node.js 22.12 or later (socktune supports Node.js ${engines.supportedNode}; on 22.0 to 22.11, --experimental-require-module)`,
  ) as Error & { code: string };
  err.code = 'ERR_SOCKTUNE_UNSUPPORTED_NODE';
  throw err;
}
import socktune = require('./index.js');
export = socktune;
