/**
 * The CommonJS entry of `socktune/register`, for `node --require socktune/register` and CommonJS
 * applications. It loads the ES module (Node >= 20.19 requires ES modules synchronously), so
 * `require` and `import` share one registration and one set of guards.
 * @module
 */
import engines = require('../engines.cjs');
const unsupported = engines.unsupportedNode();
if (unsupported !== undefined) throw unsupported;
import register = require('./index.js');
export = register;
