// The instance-reuse adapter build.mjs puts before every JavaScript app built
// with --reuse. The bundle then answers `wasi:http/incoming-handler` itself
// (the export `incomingHandler` below, which componentize-js binds and which
// makes it leave out StarlingMonkey's own fetch-event handler), so one
// instance can serve request after request; StarlingMonkey's fetch event
// answers once per instance (StarlingMonkey issue #247).
//
// Per request, `handle`:
//
// 1. turns the incoming-request into a web Request (method, URL from scheme,
//    authority and path, headers, and the body as a ReadableStream over the
//    input-stream, read with blocking-read as the app reads it);
// 2. dispatches a fetch event to the listeners the app registered with
//    addEventListener("fetch", ...) (which this module takes over before the
//    prelude and the app run; the SDK's serve() and the prelude's default
//    export with `fetch` register one too), with respondWith and waitUntil;
// 3. sets the response-outparam as soon as the answer is there (the host
//    sends it then), writes its body (a string or bytes as given, a stream
//    chunk by chunk), then finishes the outgoing-body;
// 4. waits for every promise given to waitUntil, and only then returns: the
//    host counts what follows the answer as the request's background work;
// 5. drops every handle it made, in child-before-parent order.
//
// The usual request runs to its end without a promise (see `handle`).
//
// Nothing may escape `handle`: componentize-js awaits the promise an export
// returns, running the event loop until it settles, and traps on a rejection.
// A throw or rejection in the app answers 500 with the prelude's text; a
// failure after the answer is logged. Timer and microtask callbacks are
// guarded too: StarlingMonkey's event loop ends with an error (a trap) when a
// timer callback throws.
import { Fields, IncomingBody, OutgoingBody, OutgoingResponse, ResponseOutparam } from "wasi:http/types@0.2.10";

const EVENT_KEY = Symbol.for("wasm-host.fetch-event");
const ERRORS_KEY = Symbol.for("wasm-host.errors");
const REUSE_KEY = Symbol.for("wasm-host.reuse");
const DISPOSE = Symbol.dispose ?? Symbol.for("dispose");
// Bytes asked of one blocking-read.
const READ_SIZE = 65536;
// The engine's event loop, with a promise pending and no task queued (a
// promise nothing will ever settle), ends with an error, which traps a
// reused instance. One long timer kept in the queue turns that into a wait
// the host's --request-timeout ends instead (the instance is then dropped,
// and reuse stays on for the version). Re-armed when it fires.
const STALL_GUARD_MS = 3_600_000;

// --- Errors: the prelude's formatting when it is there ---------------------------
function describe(err) {
  const own = globalThis[ERRORS_KEY];
  if (own) return own.describe(err);
  if (err instanceof Error) {
    const head = `${err.name}: ${err.message}`;
    return err.stack ? `${head}\n${String(err.stack).trimEnd()}` : head;
  }
  try {
    return `thrown value: ${typeof err === "string" ? err : JSON.stringify(err)}`;
  } catch {
    return `thrown value: ${String(err)}`;
  }
}

function summary(err) {
  const own = globalThis[ERRORS_KEY];
  if (own) return own.summary(err);
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function logError(what, err) {
  try {
    const text = err?.payload !== undefined ? `${witText(err)}\n${describe(err)}` : describe(err);
    console.error(`uncaught error in ${what}: ${text}`);
  } catch {
    // console itself failed: nothing else to tell it with.
  }
}

// The prelude's 500 answer (same text), for what its guard did not catch.
function errorResponse(err) {
  logError("the fetch handler", err);
  return new Response(`500 Internal Server Error\n\n${summary(err)}\n`, {
    status: 500,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

function asResponse(value) {
  if (value instanceof Response) return value;
  const what = value === null ? "null" : typeof value === "object" ? (value.constructor?.name ?? "an object") : typeof value;
  return errorResponse(new TypeError(`the fetch handler answered with ${what}, not a Response`));
}

// A WIT error (componentize-js throws an Error whose `payload` is the `err`
// value) as text; drops a wasi:io/error it carries.
function witText(err) {
  const payload = err?.payload;
  if (payload && typeof payload === "object" && "tag" in payload) {
    let detail = "";
    const val = payload.val;
    if (val && typeof val === "object" && typeof val.toDebugString === "function") {
      try {
        detail = `: ${val.toDebugString()}`;
      } catch {}
      drop(val);
    } else if (val !== undefined) {
      detail = `: ${typeof val === "object" ? JSON.stringify(val) : val}`;
    }
    return `${payload.tag}${detail}`;
  }
  return err instanceof Error ? err.message : String(err);
}

function drop(resource) {
  if (!resource) return;
  try {
    resource[DISPOSE]();
  } catch (err) {
    logError("dropping a WASI handle", err);
  }
}

// --- Guarded callbacks: a throw is logged, never a trap --------------------------
function guard(callback, what) {
  return function guardedCallback(...args) {
    try {
      return callback.apply(this, args);
    } catch (err) {
      logError(what, err);
    }
  };
}

for (const name of ["setTimeout", "setInterval"]) {
  const real = globalThis[name];
  if (typeof real !== "function") continue;
  globalThis[name] = function (callback, ...rest) {
    return real(typeof callback === "function" ? guard(callback, `a ${name} callback`) : callback, ...rest);
  };
}
if (typeof globalThis.queueMicrotask === "function") {
  const real = globalThis.queueMicrotask;
  globalThis.queueMicrotask = function queueMicrotask(callback) {
    return real(typeof callback === "function" ? guard(callback, "a queueMicrotask callback") : callback);
  };
}

let stallGuard = null;
function armStallGuard() {
  stallGuard ??= setTimeout(() => {
    stallGuard = null;
    armStallGuard();
  }, STALL_GUARD_MS);
}

// --- Fetch listeners ---------------------------------------------------------------
// Taken over before the prelude and the app run: the prelude wraps each fetch
// listener with its error guard and hands it here.
const listeners = [];
const realAddEventListener = globalThis.addEventListener;
const realRemoveEventListener = globalThis.removeEventListener;

globalThis.addEventListener = function addEventListener(type, listener, options) {
  if (type === "fetch") {
    if (listener && !listeners.includes(listener)) listeners.push(listener);
    return;
  }
  return realAddEventListener?.call(this, type, listener, options);
};
globalThis.removeEventListener = function removeEventListener(type, listener, options) {
  if (type === "fetch") {
    const at = listeners.indexOf(listener);
    if (at >= 0) listeners.splice(at, 1);
    return;
  }
  return realRemoveEventListener?.call(this, type, listener, options);
};

function invalidState(message) {
  return typeof DOMException === "function" ? new DOMException(message, "InvalidStateError") : new TypeError(message);
}

// What a StarlingMonkey FetchEvent offers an app: type, request,
// respondWith, waitUntil (Hono uses the event as its execution context too).
class FetchEvent {
  #state;
  constructor(request, state) {
    this.type = "fetch";
    this.request = request;
    this.#state = state;
  }
  respondWith(answer) {
    const state = this.#state;
    if (!state.dispatching) throw invalidState("respondWith must be called while the fetch event is dispatched");
    if (state.answered) throw invalidState("respondWith was already called for this request");
    state.answered = true;
    // Kept as given: a Response answers without waiting for a promise.
    state.answer = answer;
  }
  waitUntil(promise) {
    const state = this.#state;
    const work = Promise.resolve(promise).catch((err) => logError("work after the response", err));
    if (state.done) {
      console.warn("waitUntil was called after its request ended: the work is not waited for");
      return;
    }
    state.pending.push(work);
  }
  passThroughOnException() {}
  preventDefault() {}
  stopPropagation() {}
  stopImmediatePropagation() {
    this.#state.stopped = true;
  }
}

function dispatch(request) {
  const state = { dispatching: true, answered: false, answer: undefined, pending: [], done: false, stopped: false };
  const event = new FetchEvent(request, state);
  globalThis[EVENT_KEY] = event;
  try {
    for (const listener of listeners.slice()) {
      try {
        if (typeof listener === "function") {
          listener.call(globalThis, event);
        } else {
          listener.handleEvent(event);
        }
      } catch (err) {
        if (state.answered) {
          logError("the fetch listener after it answered", err);
        } else {
          state.answered = true;
          state.answer = errorResponse(err);
        }
      }
      if (state.stopped) break;
    }
  } finally {
    state.dispatching = false;
  }
  if (!state.answered) {
    state.answered = true;
    state.answer =
      listeners.length === 0
        ? new Response("500 Internal Server Error\n\nno fetch handler: the app registered none (serve(), export default { fetch }, or addEventListener(\"fetch\", ...))\n", {
            status: 500,
            headers: { "content-type": "text/plain; charset=utf-8" },
          })
        : errorResponse(new Error("no fetch listener called event.respondWith"));
  }
  return { event, state };
}

// --- Response bodies known when the response was made ------------------------------
// Most answers are made with a string (Hono's c.text, c.json, c.html) or
// bytes. Reading such a body back through its ReadableStream (a reader, a
// read per chunk, a promise each) cost more than writing it out, so the
// global Response records the body it was given, and `send` writes that
// directly. A body of any other kind (a stream, a Blob, form data), and a
// response from fetch(), go through the stream as before.
const NativeResponse = globalThis.Response;
const knownBodies = new WeakMap();
const EMPTY = new Uint8Array(0);

function knownBody(body) {
  if (body === null || body === undefined) return EMPTY;
  if (typeof body === "string") return body;
  // Bytes are copied, as the fetch standard does: the app may reuse its
  // buffer once the Response is made.
  if (body instanceof ArrayBuffer) return new Uint8Array(body.slice(0));
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  return undefined;
}

class Response extends NativeResponse {
  constructor(body, init) {
    super(body, init);
    const known = knownBody(body);
    if (known !== undefined) knownBodies.set(this, known);
  }
  // A response made elsewhere (fetch(), Response.json()) is a Response too.
  static [Symbol.hasInstance](value) {
    return value instanceof NativeResponse;
  }
}
globalThis.Response = Response;

// --- The incoming request as a web Request ---------------------------------------
function latin1(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  }
  return text;
}

const encoder = new TextEncoder();
// Header values are ASCII almost always, and ASCII is its own UTF-8: the
// native encoder makes the bytes (a loop over the characters here runs in
// the interpreter, ~1 µs a character). Other characters up to U+00FF are
// one byte each (Latin-1, as the fetch standard's byte strings); a value
// with any above that is sent as UTF-8.
const ASCII = /^[\x00-\x7f]*$/;
const LATIN1 = /^[\x00-\xff]*$/;
function headerBytes(value) {
  if (ASCII.test(value) || !LATIN1.test(value)) return encoder.encode(value);
  const bytes = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) bytes[i] = value.charCodeAt(i);
  return bytes;
}

const SCHEMES = { HTTP: "http", HTTPS: "https" };

// The handles one request holds, dropped children first by `release`.
class Held {
  request = null;
  body = null;
  stream = null;
  closed = false;

  // Ends the body: drops the input-stream, finishes the incoming-body (its
  // trailers are not read: dropped), then drops the request.
  release() {
    this.closed = true;
    drop(this.stream);
    this.stream = null;
    if (this.body) {
      const body = this.body;
      this.body = null;
      try {
        drop(IncomingBody.finish(body));
      } catch (err) {
        logError("finishing the request body", err);
      }
    }
    drop(this.request);
    this.request = null;
  }
}

function bodyStream(held) {
  return new ReadableStream({
    pull(controller) {
      // blocking-read waits for at least one byte or the end; one pull
      // enqueues one chunk (a pull that enqueues nothing is not repeated).
      for (;;) {
        if (held.closed || !held.stream) {
          controller.close();
          return;
        }
        let chunk;
        try {
          chunk = held.stream.blockingRead(READ_SIZE);
        } catch (err) {
          if (err?.payload?.tag === "closed") {
            drop(held.stream);
            held.stream = null;
            controller.close();
          } else {
            controller.error(new TypeError(`reading the request body failed: ${witText(err)}`));
          }
          return;
        }
        if (chunk.length > 0) {
          controller.enqueue(chunk);
          return;
        }
      }
    },
    cancel() {
      drop(held.stream);
      held.stream = null;
    },
  });
}

function acceptedHeaders(pairs) {
  const headers = new Headers();
  for (const [name, value] of pairs) {
    try {
      headers.append(name, value);
    } catch {
      console.warn(`request header ${name} left out: the Headers class refuses its value`);
    }
  }
  return headers;
}

function toRequest(incoming, held) {
  const tag = incoming.method();
  const method = tag.tag === "other" ? tag.val : tag.tag.toUpperCase();
  const scheme = incoming.scheme();
  const schemeText = scheme ? (SCHEMES[scheme.tag] ?? scheme.val ?? "http") : "http";
  const fields = incoming.headers();
  let entries;
  try {
    entries = fields.entries();
  } finally {
    drop(fields);
  }
  // The Request takes the pairs as they are (a Headers made here first
  // would be copied once more).
  const pairs = [];
  let host;
  for (const [name, value] of entries) {
    const text = latin1(value);
    if (host === undefined && name === "host") host = text;
    pairs.push([name, text]);
  }
  const authority = incoming.authority() ?? host ?? "localhost";
  const path = incoming.pathWithQuery() ?? "/";
  const url = `${schemeText}://${authority}${path.startsWith("/") ? path : `/${path}`}`;
  const init = { method, headers: pairs };
  if (method !== "GET" && method !== "HEAD") {
    held.body = incoming.consume();
    held.stream = held.body.stream();
    init.body = bodyStream(held);
    init.duplex = "half";
  }
  try {
    return new Request(url, init);
  } catch (err) {
    // A header value the Headers class refuses (the host checked them
    // already): leave out only those.
    if (!(err instanceof TypeError)) throw err;
    init.headers = acceptedHeaders(pairs);
    return new Request(url, init);
  }
}

// --- Writing the response ------------------------------------------------------------
function toFields(headers) {
  const list = [];
  for (const [name, value] of headers) list.push([name, headerBytes(value)]);
  try {
    return Fields.fromList(list);
  } catch (err) {
    // One header the host refuses (a forbidden or malformed one) fails the
    // whole list: add them one by one, leaving out and logging the refused.
    const fields = new Fields();
    for (const [name, value] of list) {
      try {
        fields.append(name, value);
      } catch (one) {
        console.warn(`response header ${name} left out: ${witText(one)}`);
      }
    }
    return fields;
  }
}

function chunkBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (typeof chunk === "string") return encoder.encode(chunk);
  throw new TypeError(`the response body gave a chunk that is not bytes (${typeof chunk})`);
}

// Bytes one blocking-write-and-flush may take (the WASI limit).
const ONE_WRITE = 4096;

// Writes all of `bytes` and flushes them. A small chunk (most answers) goes
// in one call: every WASI call costs microseconds of binding code run by
// the interpreter. A larger one is written as the output-stream allows
// (check-write), waiting on its pollable when it allows nothing.
function writeAll(out, bytes) {
  if (bytes.length <= ONE_WRITE) {
    out.blockingWriteAndFlush(bytes);
    return;
  }
  let offset = 0;
  while (offset < bytes.length) {
    const allowed = Number(out.checkWrite());
    if (allowed === 0) {
      const ready = out.subscribe();
      try {
        ready.block();
      } finally {
        drop(ready);
      }
      continue;
    }
    const end = Math.min(bytes.length, offset + allowed);
    out.write(offset === 0 && end === bytes.length ? bytes : bytes.subarray(offset, end));
    offset = end;
  }
  out.blockingFlush();
}

// Sets the answer (the host sends its head now), then writes its body. A
// body known when the response was made (or none) is written at once and
// `send` returns nothing; a stream is read chunk by chunk and `send`
// returns a promise of its end. Either way the body is finished (or cut
// short when the client went away). The body of an answer to HEAD is
// written too, as StarlingMonkey's fetch event does: the host checks it
// against content-length and sends none of it.
function send(response, outparam, answer, beforeFinish) {
  const outgoing = new OutgoingResponse(toFields(response.headers));
  let body;
  try {
    // 200 is the outgoing-response's own (one WASI call less).
    if (response.status !== 200) outgoing.setStatusCode(response.status);
    body = outgoing.body();
  } catch (err) {
    drop(outgoing);
    throw err;
  }
  answer.set = true;
  ResponseOutparam.set(outparam, { tag: "ok", val: outgoing });

  const out = body.write();
  const known = response.bodyUsed ? undefined : knownBodies.get(response);
  if (known === undefined && response.body) return pipe(response.body, body, out, beforeFinish);
  let failed = null;
  try {
    const bytes = known === undefined ? EMPTY : typeof known === "string" ? encoder.encode(known) : known;
    if (bytes.length > 0) writeAll(out, bytes);
  } catch (err) {
    failed = err;
  } finally {
    drop(out);
  }
  endBody(body, failed, null, beforeFinish);
}

async function pipe(stream, body, out, beforeFinish) {
  let reader = null;
  let failed = null;
  try {
    reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const bytes = chunkBytes(value);
      if (bytes.length === 0) continue;
      writeAll(out, bytes);
    }
  } catch (err) {
    failed = err;
  } finally {
    drop(out);
  }
  endBody(body, failed, reader, beforeFinish);
}

// Ends the outgoing body: finished when all of it was written, else
// dropped unfinished (the host reports the response as cut short), and the
// app's stream is told.
function endBody(body, failed, reader, beforeFinish) {
  if (failed) {
    reader?.cancel(failed).catch(() => {});
    drop(body);
    if (failed?.payload) {
      console.warn(`the response body was cut short: ${witText(failed)}`);
    } else {
      logError("the response body", failed);
    }
    return;
  }
  beforeFinish();
  try {
    OutgoingBody.finish(body, undefined);
  } catch (err) {
    // E.g. fewer or more bytes than the content-length the app set.
    console.error(`the response body could not be finished: ${witText(err)}`);
  }
}

// An answer when even the error response could not be made: a bare 500.
function sendBare500(outparam) {
  const outgoing = new OutgoingResponse(new Fields());
  let body;
  try {
    outgoing.setStatusCode(500);
    body = outgoing.body();
  } catch (err) {
    drop(outgoing);
    throw err;
  }
  ResponseOutparam.set(outparam, { tag: "ok", val: outgoing });
  OutgoingBody.finish(body, undefined);
}

// --- The export --------------------------------------------------------------------
let served = 0;

function isThenable(value) {
  return value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function";
}

// One request: its handles, its fetch event, and whether it was answered.
class Exchange {
  held = new Held();
  // Whether the response-outparam was given its response (it is consumed).
  answer = { set: false };
  state = null;
  event = null;
  ended = false;

  constructor(incoming, outparam) {
    this.held.request = incoming;
    this.outparam = outparam;
  }

  // The request is over: its event no longer takes work, and its handles go.
  end() {
    if (this.ended) return;
    this.ended = true;
    if (this.state) this.state.done = true;
    if (this.event && globalThis[EVENT_KEY] === this.event) globalThis[EVENT_KEY] = undefined;
    this.held.release();
  }

  // Whether work given to waitUntil is still running.
  get working() {
    return this.state !== null && this.state.pending.length > 0;
  }

  // Sends `response`; a promise when its body streams. The client has the
  // whole answer once the body is finished, and may send its next request
  // at once: what is left to do after that is kept short, so that this
  // instance is free again by then. Without work after the response, the
  // request's handles go before the finish.
  respond(response) {
    try {
      const streaming = send(response, this.outparam, this.answer, () => {
        if (!this.working) this.end();
      });
      return streaming?.catch((err) => this.failed(err));
    } catch (err) {
      this.failed(err);
    }
  }

  // The adapter itself failed: a bare 500 if nothing was sent yet.
  failed(err) {
    logError("the reuse adapter", err);
    if (this.answer.set) return;
    this.answer.set = true;
    try {
      sendBare500(this.outparam);
    } catch (again) {
      logError("the reuse adapter's 500", again);
      drop(this.outparam);
    }
  }

  // Waits for the work after the response (the host counts it as this
  // request's), then ends the request.
  async afterResponse() {
    try {
      while (this.working) {
        await Promise.all(this.state.pending.splice(0));
      }
    } catch (err) {
      logError("work after the response", err);
    }
    this.end();
  }
}

// The usual request (a Response given to respondWith, its body a string or
// bytes, no work after it) is served without a promise: each await is a
// turn of the engine's event loop. A promised answer, a streamed body or
// work after the response continue asynchronously. Nothing escapes: a
// throw answers 500, and every promise returned settles without rejecting.
function handle(incoming, outparam) {
  armStallGuard();
  served++;
  const exchange = new Exchange(incoming, outparam);
  let answer;
  try {
    const request = toRequest(incoming, exchange.held);
    ({ event: exchange.event, state: exchange.state } = dispatch(request));
    answer = exchange.state.answer;
  } catch (err) {
    answer = errorResponse(err);
  }
  if (isThenable(answer)) return answerLater(exchange, answer);
  return afterSending(exchange, exchange.respond(asResponse(answer)));
}

async function answerLater(exchange, promised) {
  let response;
  try {
    response = asResponse(await promised);
  } catch (err) {
    response = errorResponse(err);
  }
  await exchange.respond(response);
  await exchange.afterResponse();
}

function afterSending(exchange, streaming) {
  if (streaming) return streaming.then(() => exchange.afterResponse());
  if (exchange.working) return exchange.afterResponse();
  exchange.end();
}

Object.defineProperty(globalThis, REUSE_KEY, {
  value: Object.freeze({ served: () => served }),
});

export const incomingHandler = { handle };
