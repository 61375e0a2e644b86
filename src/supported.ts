/**
 * The ES-module entry points' first import: an unsupported Node.js stops here, with the error of
 * src/engines.cts (shared with the CommonJS entries), as an ordinary rejection of the importer's
 * `import`, which the importer can catch.
 * @module
 */
import { unsupportedNode } from './engines.cjs';

const unsupported = unsupportedNode();
if (unsupported !== undefined) throw unsupported;
