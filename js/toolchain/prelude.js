// The prelude build.mjs puts before every JavaScript app (the generated entry
// imports it first). It wraps each `fetch` event listener the app registers:
//
// - an exception thrown by the listener before it answers, or a promise given
//   to `event.respondWith` that rejects (or resolves to something that is not
//   a Response), answers 500 with the error's message and stack, and logs it
//   with console.error (the host's per-app log), instead of StarlingMonkey's
//   bare "no fetch-event handler triggered";
// - a promise given to `event.waitUntil` that rejects is logged;
// - the current event is published at Symbol.for("wasm-host.fetch-event") so
//   @wasm-host/sdk's waitUntil/afterResponse work without its serve().
//
// It also serves the entry module's default export when that has a `fetch`
// method (`export default app`, as Bun, Deno and Workers apps do) and nothing
// registered a fetch listener.

const EVENT_KEY = Symbol.for("wasm-host.fetch-event");
const realAddEventListener = globalThis.addEventListener;
let fetchListeners = 0;

function describe(err) {
  if (err instanceof Error) {
    const head = `${err.name}: ${err.message}`;
    return err.stack ? `${head}\n${err.stack.trimEnd()}` : head;
  }
  try {
    return `thrown value: ${typeof err === "string" ? err : JSON.stringify(err)}`;
  } catch {
    return `thrown value: ${String(err)}`;
  }
}

function errorResponse(err) {
  const text = describe(err);
  console.error(`uncaught error in the fetch handler: ${text}`);
  return new Response(`500 Internal Server Error\n\n${text}\n`, {
    status: 500,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

function checked(value) {
  if (value instanceof Response) {
    return value;
  }
  const what = value === null ? "null" : typeof value === "object" ? (value.constructor?.name ?? "an object") : typeof value;
  return errorResponse(new TypeError(`the fetch handler answered with ${what}, not a Response`));
}

function guard(listener) {
  return function guardedFetchListener(event) {
    const respondWith = event.respondWith;
    const waitUntil = event.waitUntil;
    let responded = false;
    const ownRespondWith = (answer) => {
      responded = true;
      return respondWith.call(event, Promise.resolve(answer).then(checked, errorResponse));
    };
    const ownWaitUntil = (promise) =>
      waitUntil.call(
        event,
        Promise.resolve(promise).catch((err) => console.error(`uncaught error in work after the response: ${describe(err)}`)),
      );
    Object.defineProperty(event, "respondWith", { value: ownRespondWith, configurable: true });
    Object.defineProperty(event, "waitUntil", { value: ownWaitUntil, configurable: true });
    globalThis[EVENT_KEY] = event;
    try {
      if (typeof listener === "function") {
        listener.call(this, event);
      } else {
        listener.handleEvent(event);
      }
    } catch (err) {
      if (responded) {
        console.error(`uncaught error in the fetch listener after it answered: ${describe(err)}`);
      } else {
        ownRespondWith(errorResponse(err));
      }
    }
  };
}

if (typeof realAddEventListener === "function") {
  globalThis.addEventListener = function addEventListener(type, listener, options) {
    if (type === "fetch" && listener) {
      fetchListeners++;
      return realAddEventListener.call(this, type, guard(listener), options);
    }
    return realAddEventListener.call(this, type, listener, options);
  };
}

// Called by the generated entry after the app's module has run.
export function __wasmHostServeDefault(entry) {
  const app = entry.default;
  if (fetchListeners > 0 || !app || typeof app.fetch !== "function") {
    return;
  }
  addEventListener("fetch", (event) => {
    const ctx = {
      waitUntil: (promise) => event.waitUntil(promise),
      passThroughOnException() {},
    };
    event.respondWith(app.fetch(event.request, {}, ctx));
  });
}

// Wraps the entry module's `lifecycle` export for componentize-js, which
// turns a thrown string into the hook's `err` but traps on a thrown Error:
// init's error becomes its message (shown to whoever reloads); a failing
// drain is logged, not a trap.
export function __wasmHostLifecycle(hooks) {
  return {
    async init() {
      if (typeof hooks?.init !== "function") {
        return;
      }
      try {
        await hooks.init();
      } catch (err) {
        const text = typeof err === "string" ? err : err instanceof Error ? err.message : (err?.payload ?? describe(err));
        console.error(`init hook refused this version: ${err instanceof Error ? describe(err) : text}`);
        throw String(text);
      }
    },
    async drain() {
      try {
        await hooks?.drain?.();
      } catch (err) {
        console.error(`drain hook failed: ${describe(err)}`);
      }
    },
  };
}
