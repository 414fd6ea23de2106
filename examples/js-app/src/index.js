// js-app: the classic Express app of a PM2 zero-downtime walkthrough, on
// wasm-host. Hono routes; @wasm-host/sdk for key-value, config, environment,
// work after the response and the reload hooks.
//
//   GET  /              hello, with the version and the generation
//   GET  /slow?ms=N     answers after N ms (0-10000, default 1000)
//   GET  /work?ms=N     202 at once; a job of N ms (default 500) runs after the
//   POST /jobs?ms=N     response, logs, and counts itself in kv `jobs_done`
//   GET  /jobs          how many jobs finished
//   GET  /count         increments the kv counter `count`, answers its value
//   GET  /drained       the kv keys drained_gen_N the drain hook wrote
//   GET  /config/:key   a wasi:config value (--config-var KEY=VALUE)
//   GET  /boom          throws: the SDK answers 500 with the message and line
//   POST /echo          the request body back, with its content-type
//   GET  /stream        three lines, sent as a ReadableStream
//   GET  /seen          requests this instance has served: always 1 with a
//                       fresh instance per request; counts up when the app is
//                       built for reuse (serve DIR --reuse-instances N)
//
// The version is $APP_VERSION (wasm-host serve --env APP_VERSION=2.0.0),
// read per request, else package.json's version (the build defines
// __APP_VERSION__). Top-level code runs at build time (it is snapshotted):
// read env, config and kv inside handlers and hooks only.
import { Hono } from "hono";
import { serve, waitUntil, kv, config, env, info, defineLifecycle } from "@wasm-host/sdk";

const MAX_MS = 10_000;
const app = new Hono();

const version = () => env.string("APP_VERSION", typeof __APP_VERSION__ === "string" ? __APP_VERSION__ : "dev");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function millis(raw, fallback) {
  if (raw === undefined || raw === "") return fallback;
  const ms = /^\d+$/.test(raw) ? Number(raw) : NaN;
  return ms <= MAX_MS ? ms : null;
}

app.get("/", (c) => c.text(`hello from js-app ${version()} (generation ${info.generation()})\n`));

app.get("/slow", async (c) => {
  const ms = millis(c.req.query("ms"), 1000);
  if (ms === null) return c.text(`ms must be a whole number from 0 to ${MAX_MS}\n`, 400);
  await sleep(ms);
  return c.text(`slept ${ms} ms\n`);
});

function startJob(c) {
  const ms = millis(c.req.query("ms"), 500);
  if (ms === null) return c.text(`ms must be a whole number from 0 to ${MAX_MS}\n`, 400);
  const started = Date.now();
  // The host counts this as the request's work: a reload waits for it.
  waitUntil(
    sleep(ms).then(() => {
      const done = kv.open().increment("jobs_done");
      console.log(`job done: ${ms} ms, ${Date.now() - started} ms after it arrived; ${done} jobs done`);
    }),
  );
  return c.text(`accepted: a ${ms} ms job runs after this response\n`, 202);
}
app.get("/work", startJob);
app.post("/jobs", startJob);

app.get("/jobs", (c) => c.text(`${kv.open().get("jobs_done") ?? 0} jobs done\n`));

app.get("/count", (c) => c.text(`${kv.open().increment("count")}\n`));

app.get("/drained", (c) => {
  const bucket = kv.open();
  const lines = bucket.keys().filter((key) => key.startsWith("drained_gen_")).map((key) => `${key} ${bucket.get(key)}\n`);
  return c.text(lines.join("") || "no version has drained yet\n");
});

app.get("/config/:key", (c) => {
  const key = c.req.param("key");
  const value = config.get(key);
  return value === undefined ? c.text(`no config value ${key}\n`, 404) : c.text(`${value}\n`);
});

app.get("/boom", () => {
  throw new Error("boom: this route always fails");
});

app.post("/echo", async (c) => {
  const body = await c.req.arrayBuffer();
  return c.body(body, 200, { "content-type": c.req.header("content-type") ?? "application/octet-stream" });
});

// A body made while it is sent, one chunk per pull.
app.get("/stream", () => {
  const encoder = new TextEncoder();
  let sent = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (sent < 3) controller.enqueue(encoder.encode(`chunk ${sent++}\n`));
      else controller.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/plain; charset=utf-8" } });
});

// Module state lives as long as the instance: one request, or many in reuse.
let seen = 0;
app.get("/seen", (c) => c.text(`${(seen += 1)}\n`));

app.notFound((c) => c.text(`no route for ${c.req.method} ${c.req.path}\n`, 404));
// Hono catches handler errors; hand them on so the SDK answers 500 with the
// message and the line it came from, and logs the stack.
app.onError((err) => {
  throw err;
});

serve(app);

export const lifecycle = defineLifecycle({
  init() {
    // `wasm-host reload` prints this message and the running version stays.
    if (config.get("refuse") === "yes") {
      throw new Error("this version refuses to start: config value refuse=yes");
    }
    console.log(`init: js-app ${version()} generation ${info.generation()} ready`);
  },
  drain() {
    const generation = info.generation();
    kv.open().set(`drained_gen_${generation}`, new Date().toISOString());
    console.log(`drain: generation ${generation} stops taking requests`);
  },
});
