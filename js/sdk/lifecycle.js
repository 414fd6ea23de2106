// defineLifecycle(): the hooks a version runs when it is loaded (init) and
// when it stops taking requests (drain), as the entry module's export
// `lifecycle` (wasm-host:app/lifecycle).

function text(err) {
  return typeof err === "string" ? err : err instanceof Error ? err.message : String(err?.payload ?? err);
}

/**
 * Returns the object to export from the entry module:
 * `export const lifecycle = defineLifecycle({ init, drain })`.
 */
export function defineLifecycle({ init, drain } = {}) {
  if ((init !== undefined && typeof init !== "function") || (drain !== undefined && typeof drain !== "function")) {
    throw new TypeError("defineLifecycle({ init, drain }): each hook must be a function");
  }
  return {
    async init() {
      try {
        await init?.();
      } catch (err) {
        // componentize-js makes a thrown string the hook's error; an Error traps.
        throw text(err);
      }
    },
    async drain() {
      try {
        await drain?.();
      } catch (err) {
        console.error(`drain hook failed: ${err instanceof Error ? (err.stack ?? err.message) : text(err)}`);
      }
    },
  };
}
