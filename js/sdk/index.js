// @wasm-host/sdk: what a JavaScript app on wasm-host imports. Each feature
// lives in its own module and imports only the WIT interface it needs, so
// the bundler drops the unused ones and the generated world imports only
// what the app uses ("sideEffects": false in package.json).
export { serve, waitUntil, afterResponse } from "./serve.js";
export { kv, Bucket } from "./kv.js";
export { config } from "./config.js";
export { env } from "./env.js";
export { info } from "./info.js";
export { defineLifecycle } from "./lifecycle.js";
