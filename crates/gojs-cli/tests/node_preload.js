// Preloaded (`node --require`) before Go 1.19's wasm_exec_node.js, which assigns its own
// `globalThis.crypto` (a `getRandomValues` over `crypto.randomFillSync`): Node >= 19 made that
// property a getter, so the assignment throws and the runner never starts. Here the assignment
// is accepted and ignored, so the runner keeps Node's Web Crypto, as the later runners do
// (`globalThis.crypto ??= require("crypto")`) and as gojs offers every Go version.
const webCrypto = globalThis.crypto;
Object.defineProperty(globalThis, "crypto", {
  get: () => webCrypto,
  set: () => {},
  configurable: true,
  enumerable: true,
});
