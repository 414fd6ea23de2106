// A small web app in the style of an Express one, on Hono, for wasm-host.
//
//   GET /            "hello from js <VERSION>"
//   GET /slow?ms=N   waits N ms (0 to 10000, default 100), then answers
//   GET /work?ms=N   answers 202 at once; a job then runs for N ms (default
//                    100) after the response and logs when it is done
//   GET /seen        how many requests this instance has seen: always 1,
//                    since each request starts from the snapshot
//
// StarlingMonkey (the engine componentize-js embeds) calls the `fetch` event
// listener once per request, on a fresh instance: state kept in module
// variables does not carry over from one request to the next.
import { Hono } from "hono";

// The build replaces __APP_VERSION__ (esbuild `define`, see build.mjs); an
// unbundled run falls back to "dev".
const VERSION = typeof __APP_VERSION__ === "string" ? __APP_VERSION__ : "dev";

const MAX_MS = 10_000;

const app = new Hono();

app.get("/", (c) => c.text(`hello from js ${VERSION}\n`));

let seen = 0;
app.get("/seen", (c) => c.text(`${(seen += 1)}\n`));

app.get("/slow", async (c) => {
  const ms = millis(c.req.query("ms"), 100);
  if (ms === null) {
    return c.text(`ms must be a whole number from 0 to ${MAX_MS}\n`, 400);
  }
  await sleep(ms);
  return c.text(`slept ${ms} ms\n`);
});

app.get("/work", (c) => {
  const ms = millis(c.req.query("ms"), 100);
  if (ms === null) {
    return c.text(`ms must be a whole number from 0 to ${MAX_MS}\n`, 400);
  }
  const started = Date.now();
  // `waitUntil` is what keeps the instance alive after the response: the
  // engine runs its event loop until every promise given here settles, and
  // the host counts that time as the request's own (a reload waits for it).
  // A bare `setTimeout` without it is dropped when the response is done.
  c.executionCtx.waitUntil(
    sleep(ms).then(() => {
      console.log(`work done: ${ms} ms job finished ${Date.now() - started} ms after /work arrived`);
    }),
  );
  return c.text(`accepted: a ${ms} ms job runs after this response\n`, 202);
});

app.notFound((c) => c.text(`no route for ${c.req.method} ${c.req.path}\n`, 404));

app.onError((err, c) => {
  console.error(`error in ${c.req.method} ${c.req.path}:`, err);
  return c.text(`internal error: ${err.message}\n`, 500);
});

// The FetchEvent doubles as Hono's execution context: it has `waitUntil`.
addEventListener("fetch", (event) => {
  event.respondWith(app.fetch(event.request, {}, event));
});

function millis(raw, fallback) {
  if (raw === undefined || raw === "") {
    return fallback;
  }
  if (!/^\d+$/.test(raw)) {
    return null;
  }
  const ms = Number(raw);
  return ms <= MAX_MS ? ms : null;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
