// serve(): the app's fetch listener, and the work a request may leave for
// after its response (waitUntil, afterResponse), which the host counts as the
// request's own: a reload waits for it.
const EVENT_KEY = Symbol.for("wasm-host.fetch-event");
const SERVED_KEY = Symbol.for("wasm-host.served");

// The request in progress. StarlingMonkey runs one request per instance, so
// there is at most one.
let current = null;

// The toolchain's prelude formats errors with stack traces in the app's
// files (not the bundle's lines); this is the fallback without it.
const ERRORS_KEY = Symbol.for("wasm-host.errors");

function describe(err) {
  const own = globalThis[ERRORS_KEY];
  if (own) {
    return own.describe(err);
  }
  if (err instanceof Error) {
    const head = `${err.name}: ${err.message}`;
    return err.stack ? `${head}\n${err.stack.trimEnd()}` : head;
  }
  return String(err);
}

// The 500 answer says what happened and where in the app, not the whole
// stack (that goes to the log).
function summary(err) {
  const own = globalThis[ERRORS_KEY];
  if (own) {
    return own.summary(err);
  }
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function errorResponse(err) {
  console.error(`uncaught error in the request handler: ${describe(err)}`);
  return new Response(`500 Internal Server Error\n\n${summary(err)}\n`, {
    status: 500,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

function asResponse(value) {
  if (value instanceof Response) {
    return value;
  }
  return errorResponse(new TypeError(`the handler answered with ${value === null ? "null" : typeof value}, not a Response`));
}

function eventNow(what) {
  const event = current?.event ?? globalThis[EVENT_KEY];
  if (!event) {
    throw new Error(`${what}: no request is in progress (call it while handling a request)`);
  }
  return event;
}

/** Keeps the request going until `promise` settles (after the response too). */
export function waitUntil(promise) {
  const event = eventNow("waitUntil");
  event.waitUntil(
    Promise.resolve(promise).catch((err) => console.error(`uncaught error in work after the response: ${describe(err)}`)),
  );
}

// Settles once the handler of `request` has produced its response; made
// only when afterResponse asks, so a request that does not ask pays for no
// promise.
function answeredOf(request) {
  if (!request) return new Promise((resolve) => setTimeout(resolve, 0));
  if (request.answered) return Promise.resolve();
  return (request.waiting ??= new Promise((resolve) => (request.settle = resolve)));
}

function markAnswered(request) {
  request.answered = true;
  request.settle?.();
}

function isThenable(value) {
  return value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function";
}

/** Runs `fn` once the handler has produced its response; the host waits for it. */
export function afterResponse(fn) {
  waitUntil(answeredOf(current).then(() => fn()));
}

function passThroughOnException() {}

/**
 * Serves requests with `handler`: a function `(request, ctx) => Response`
 * (or a promise of one), or an object with `fetch(request, env, ctx)`, such
 * as a Hono app. Call it once, at the top level of the entry module.
 */
export function serve(handler) {
  let call;
  if (typeof handler === "function") {
    call = (request, ctx) => handler(request, ctx);
  } else if (handler && typeof handler.fetch === "function") {
    call = (request, ctx) => handler.fetch(request, {}, ctx);
  } else {
    throw new TypeError("serve() needs a function (request, ctx) => Response or an object with a fetch method");
  }
  // The toolchain's prelude prepares what serves requests (e.g. a Hono
  // router) while the build snapshots the engine.
  (globalThis[SERVED_KEY] ??= []).push(handler);
  addEventListener("fetch", (event) => {
    const request = { event, answered: false, waiting: null, settle: null };
    current = request;
    let answer;
    try {
      // A context per request: a library may set its own fields on it.
      answer = call(event.request, { waitUntil, afterResponse, passThroughOnException });
    } catch (err) {
      answer = errorResponse(err);
    }
    // A Response given at once is handed on at once: an app built for
    // reuse then answers without a turn of the event loop.
    if (isThenable(answer)) {
      answer = Promise.resolve(answer).then(asResponse, errorResponse);
      answer.then(() => markAnswered(request));
    } else {
      answer = asResponse(answer);
      markAnswered(request);
    }
    event.respondWith(answer);
  });
}
