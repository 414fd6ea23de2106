// The prelude build.mjs puts before every JavaScript app (the generated entry
// imports it first). It wraps each `fetch` event listener the app registers:
//
// - an exception thrown by the listener before it answers, or a promise given
//   to `event.respondWith` that rejects (or resolves to something that is not
//   a Response), answers 500 with the error's name, message and the app's
//   line it came from, and logs it with its whole stack with console.error
//   (the host's per-app log), instead of StarlingMonkey's bare "no
//   fetch-event handler triggered";
// - a promise given to `event.waitUntil` that rejects is logged;
// - the current event is published at Symbol.for("wasm-host.fetch-event") so
//   @wasm-host/sdk's waitUntil/afterResponse work without its serve().
//
// Stack traces name the app's files, not the bundle: build.mjs appends to the
// bundle a table made from its source map (sourcemap.mjs, stackTable), and
// mapStack rewrites each "bundle.js:LINE:COL" with it, when an error is
// formatted. console.log/info/warn/error/debug do the same for a string or
// an Error they are given; @wasm-host/sdk finds these functions at
// Symbol.for("wasm-host.errors").
//
// It also serves the entry module's default export when that has a `fetch`
// method (`export default app`, as Bun, Deno and Workers apps do) and nothing
// registered a fetch listener.

const EVENT_KEY = Symbol.for("wasm-host.fetch-event");
const SERVED_KEY = Symbol.for("wasm-host.served");
const realAddEventListener = globalThis.addEventListener;
let fetchListeners = 0;

// --- Stack traces in the app's files ------------------------------------------
// build.mjs ends the bundle with the table (its last statement, so that no
// line before it moves): { sources, app, lines }; see stackTable.
const TABLE_KEY = Symbol.for("wasm-host.stack-table");
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BUNDLE = "bundle.js:";
const FRAME = /\bbundle\.js:(\d+):(\d+)/g;
let tableLines = null;

// Base64 digit values by character code.
const DIGITS = new Uint8Array(128);
for (let i = 0; i < B64.length; i++) DIGITS[B64.charCodeAt(i)] = i;

// Where bundle.js:line:column (1-based) comes from: { source, line, column,
// app }. Reads the line's segments [genColumn, source, line, column] up to
// the first that starts after `column`.
function locate(line, column) {
  const table = globalThis[TABLE_KEY];
  if (!table) return undefined;
  tableLines ??= table.lines.split(";");
  const text = tableLines[line - 1];
  if (!text) return undefined;
  const seg = [0, 0, 0, 0];
  let best;
  let field = 0;
  let value = 0;
  let shift = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 44 /* , */) continue;
    const digit = DIGITS[code];
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
      continue;
    }
    seg[field] += value & 1 ? -(value >>> 1) : value >>> 1;
    value = 0;
    shift = 0;
    if (++field === 4) {
      if (seg[0] > column - 1) break;
      best = seg.slice();
      field = 0;
    }
  }
  if (!best) return undefined;
  return {
    source: table.sources[best[1]],
    line: best[2] + 1,
    column: best[3] + (column - 1 - best[0]) + 1,
    app: table.app.includes(best[1]),
  };
}

const where = (at) => `${at.source}:${at.line}:${at.column}`;

/** Rewrites each "bundle.js:LINE:COL" in `text` to the source's "FILE:LINE:COL". */
function mapStack(text) {
  if (typeof text !== "string" || !text.includes(BUNDLE)) return text;
  return text.replace(FRAME, (whole, line, column) => {
    const at = locate(Number(line), Number(column));
    return at ? where(at) : whole;
  });
}

function thrownValue(err) {
  try {
    return `thrown value: ${typeof err === "string" ? err : JSON.stringify(err)}`;
  } catch {
    return `thrown value: ${String(err)}`;
  }
}

/** The error with its whole stack, mapped: for the log. */
function describe(err) {
  if (err instanceof Error) {
    const head = `${err.name}: ${err.message}`;
    return typeof err.stack === "string" && err.stack ? `${head}\n${mapStack(err.stack.trimEnd())}` : head;
  }
  return thrownValue(err);
}

/**
 * The error and the one place it came from, for a client: "Name: message",
 * then "    at FILE:LINE:COL" of the topmost frame in the app's own files
 * (else the topmost frame the table knows).
 */
function summary(err) {
  if (!(err instanceof Error)) return thrownValue(err);
  const head = `${err.name}: ${err.message}`;
  let top;
  if (typeof err.stack === "string") {
    for (const match of err.stack.matchAll(FRAME)) {
      const at = locate(Number(match[1]), Number(match[2]));
      if (at?.app) {
        top = at;
        break;
      }
      top ??= at;
    }
  }
  return top ? `${head}\n    at ${where(top)}` : head;
}

Object.defineProperty(globalThis, Symbol.for("wasm-host.errors"), {
  value: Object.freeze({ mapStack, describe, summary }),
});

// console's own formatting is kept; only what names the bundle is rewritten.
for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = globalThis.console?.[level];
  if (typeof original !== "function") continue;
  console[level] = function (...args) {
    for (let i = 0; i < args.length; i++) {
      const arg = args[i];
      if (typeof arg === "string") {
        if (arg.includes(BUNDLE)) args[i] = mapStack(arg);
      } else if (arg instanceof Error && typeof arg.stack === "string" && arg.stack.includes(BUNDLE)) {
        args[i] = describe(arg);
      }
    }
    return original.apply(console, args);
  };
}

// --- The fetch listener ---------------------------------------------------------
function errorResponse(err) {
  console.error(`uncaught error in the fetch handler: ${describe(err)}`);
  return new Response(`500 Internal Server Error\n\n${summary(err)}\n`, {
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

// Built for reuse, the adapter (reuse.js, which ran first) guards each
// listener and checks its answer itself: a second guard here would only add
// promise hops to every request.
const adapterGuards = globalThis[Symbol.for("wasm-host.reuse")] !== undefined;

if (typeof realAddEventListener === "function") {
  globalThis.addEventListener = function addEventListener(type, listener, options) {
    if (type === "fetch" && listener) {
      fetchListeners++;
      return realAddEventListener.call(this, type, adapterGuards ? listener : guard(listener), options);
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
  served().push(app);
  addEventListener("fetch", (event) => {
    const ctx = {
      waitUntil: (promise) => event.waitUntil(promise),
      passThroughOnException() {},
    };
    event.respondWith(app.fetch(event.request, {}, ctx));
  });
}

// What serves requests: the default export above and whatever the SDK's
// serve() was given (it pushes its handler here).
function served() {
  globalThis[SERVED_KEY] ??= [];
  return globalThis[SERVED_KEY];
}

// Called by the generated entry last, while the build snapshots the engine:
// work a router defers to its first request is done here once instead of in
// every fresh instance. Hono's routers compile their route table into
// regular expressions on the first match, which was ~4 of the ~5 ms of
// JavaScript a request to a nine-route app cost. Only the router is touched:
// no handler or middleware runs (key-value, config and the environment do
// not exist at build time), and a router that fails here is left as it was.
export function __wasmHostWarm() {
  for (const handler of served()) {
    const router = handler?.router;
    if (router && typeof router.match === "function") {
      try {
        router.match("GET", "/");
      } catch (err) {
        console.warn(`could not prepare the router at build time (it will on the first request): ${describe(err)}`);
      }
    }
  }
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
