#!/usr/bin/env node
// Builds src/app.js into a WASI 0.2 `wasi:http/proxy` component:
//
//   1. esbuild bundles the app and its npm dependencies into one ES module
//      (build/app.js, with build/app.js.map beside it);
//   2. componentize-js pre-initializes StarlingMonkey with that module (Wizer
//      snapshot) and wraps it as a component (dist/js-hello.wasm).
//
// Usage: node build.mjs [options]     (or: npm run build -- [options])
//
//   --out FILE            where the component goes (default dist/js-hello.wasm)
//   --app-version V       the VERSION the app reports at / (default: $APP_VERSION,
//                         else package.json's version)
//   --wit-deps DIR        WASI WIT packages to build against (default:
//                         $WASM_HOST_WIT_DEPS, else the repository's wit/deps)
//   --work-dir DIR        where the bundle and the assembled WIT go (default build/)
//   --disable FEATURE     drop an engine feature: stdio, random, clocks, http
//                         (outgoing fetch) or fetch-event (repeatable)
//   --runtime-args ARGS   extra StarlingMonkey arguments, e.g. "--verbose"
//   --aot                 weval ahead-of-time compilation of the engine's
//                         interpreter; needs --weval-bin (the weval npm package
//                         otherwise downloads a binary from GitHub)
//   --weval-bin FILE      a weval binary for --aot
//
// The component is written under a temporary name and renamed into place, so
// a watcher never sees half a file.
import { build } from "esbuild";
import { componentize } from "@bytecodealliance/componentize-js";
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const FEATURES = ["stdio", "random", "clocks", "http", "fetch-event"];

function fail(message, ...hints) {
  console.error(`build.mjs: ${message}`);
  for (const hint of hints) {
    console.error(`  ${hint}`);
  }
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      out: { type: "string", default: join(here, "dist", "js-hello.wasm") },
      "app-version": { type: "string" },
      "wit-deps": { type: "string" },
      "work-dir": { type: "string", default: join(here, "build") },
      disable: { type: "string", multiple: true, default: [] },
      "runtime-args": { type: "string" },
      aot: { type: "boolean", default: false },
      "weval-bin": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: false,
  }).values;
} catch (err) {
  fail(err.message, "run 'node build.mjs --help' for the options");
}
if (args.help) {
  const text = await readFile(fileURLToPath(import.meta.url), "utf8");
  // The comment at the top of this file, up to its last line before the imports.
  const lines = text.split("\n").slice(1);
  const end = lines.findIndex((line) => !line.startsWith("//"));
  console.log(lines.slice(0, end).map((line) => line.slice(3)).join("\n"));
  process.exit(0);
}
for (const feature of args.disable) {
  if (!FEATURES.includes(feature)) {
    fail(`unknown feature '${feature}'`, `features: ${FEATURES.join(", ")}`);
  }
}
if (args.aot && !args["weval-bin"]) {
  fail("--aot needs --weval-bin FILE", "the weval npm package would download its binary from GitHub, which a build must not depend on");
}

const pkg = JSON.parse(await readFile(join(here, "package.json"), "utf8"));
const version = args["app-version"] ?? process.env.APP_VERSION ?? pkg.version;
const workDir = resolve(args["work-dir"]);
const out = resolve(args.out);
const witDeps = resolve(args["wit-deps"] ?? process.env.WASM_HOST_WIT_DEPS ?? join(here, "..", "..", "wit", "deps"));

const isDir = (path) => stat(path).then((s) => s.isDirectory(), () => false);
if (!(await isDir(witDeps))) {
  fail(`no WIT packages at ${witDeps}`, "pass --wit-deps DIR (or set WASM_HOST_WIT_DEPS) to a folder of wasi:* 0.2.x WIT files");
}

// --- 1. Bundle ---------------------------------------------------------------
const started = performance.now();
await mkdir(workDir, { recursive: true });
const bundle = join(workDir, "app.js");
try {
  await build({
    entryPoints: [join(here, "src", "app.js")],
    outfile: bundle,
    bundle: true,
    format: "esm",
    // StarlingMonkey is a web-style runtime: no Node built-ins to fall back on.
    platform: "neutral",
    mainFields: ["module", "main"],
    target: "es2022",
    sourcemap: "external",
    define: { __APP_VERSION__: JSON.stringify(version) },
    // Imports of WIT interfaces (`import { ... } from "wasi:http/types@0.2.10"`)
    // are bound by componentize-js, not bundled.
    external: ["wasi:*", "wasm-host:*"],
    logLevel: "warning",
  });
} catch {
  // esbuild has printed each error with file:line:column.
  fail("esbuild could not bundle src/app.js (its errors are above)");
}
const bundled = performance.now();

// --- 2. The WIT world: ours, with the WASI packages it includes ---------------
// StarlingMonkey's `fetch` event handler is an export of one fixed
// `wasi:http/incoming-handler@0.2.N`, the version the engine was built
// against; the world must name that same version, or componentize-js fails
// with "failed to find export of interface ... function `handle`".
const worldText = await readFile(join(here, "wit", "world.wit"), "utf8");
const wasiVersion = /wasi:http\/proxy@(0\.2\.\d+)/.exec(worldText)?.[1];
if (!wasiVersion) {
  fail("wit/world.wit includes no wasi:http/proxy@0.2.N");
}
const engineDir = join(dirname(fileURLToPath(import.meta.resolve("@bytecodealliance/componentize-js"))), "..", "lib");
const engine = join(engineDir, args.aot ? "starlingmonkey_embedding_weval.wasm" : "starlingmonkey_embedding.wasm");
const engineBytes = await readFile(engine).catch((err) => fail(`cannot read the engine: ${err.message}`, "reinstall with 'npm ci'"));
const engineWasi = /wasi:http\/incoming-handler@(0\.2\.\d+)/.exec(engineBytes.toString("latin1"))?.[1];
if (engineWasi !== wasiVersion) {
  fail(
    `wit/world.wit names wasi:http@${wasiVersion}, but this componentize-js engine handles ${engineWasi ? `wasi:http@${engineWasi}` : "no wasi:http version it names"}`,
    `change the version in wit/world.wit to ${engineWasi ?? "the engine's"} (engine: ${engine})`,
  );
}

// The WASI 0.2 packages, relabelled from their patch version to the world's.
// Patch releases of WASI 0.2 only add items (each marked `@since` or gated
// `@unstable`), so a newer file describes the older version's items too.
const witDir = join(workDir, "wit");
await rm(witDir, { recursive: true, force: true });
await mkdir(join(witDir, "deps"), { recursive: true });
await writeFile(join(witDir, "world.wit"), worldText);
let relabelled = 0;
for (const entry of await readdir(witDeps, { withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith(".wit")) {
    continue;
  }
  const text = await readFile(join(witDeps, entry.name), "utf8");
  // Only WASI 0.2 packages proper (not keyvalue's or config's drafts).
  if (!/^package wasi:[a-z-]+@0\.2\.\d+;/m.test(text)) {
    continue;
  }
  const rewritten = text
    .replace(/(wasi:[a-z][a-z0-9-]*(?:\/[a-z][a-z0-9-]*)?)@0\.2\.\d+(?![\d-])/g, `$1@${wasiVersion}`)
    // An item added after the world's version (e.g. 0.2.12's
    // `exit-with-code`) may not say so in an older package: gate it behind a
    // feature nobody enables, which leaves it out.
    .replace(/@since\(version = 0\.2\.(\d+)\)/g, (gate, patch) =>
      Number(patch) > Number(wasiVersion.split(".")[2]) ? `@unstable(feature = wasi-0-2-${patch})` : gate,
    );
  await writeFile(join(witDir, "deps", entry.name), rewritten);
  relabelled++;
}
if (relabelled === 0) {
  fail(`no wasi:* 0.2 WIT packages in ${witDeps}`);
}

// --- 3. Componentize -----------------------------------------------------------
// componentize-js reads the WIT with a splicer that is itself a component,
// run on Node through preview2-shim. preview2-shim 0.26 preopens nothing
// unless told (older releases preopened "/"), and componentize-js 0.23.0
// neither sets a preopen nor declares the shim as a dependency (package.json
// pins it): grant the splicer the WIT folder, at its own path.
_setPreopens({ [witDir]: witDir });
// componentize-js names sources relative to the working directory in the
// snapshot (what stack traces show), so run from the work dir: "app.js".
process.chdir(workDir);
let component;
try {
  ({ component } = await componentize({
    sourcePath: bundle,
    witPath: witDir,
    worldName: "js-hello",
    disableFeatures: args.disable,
    runtimeArgs: args["runtime-args"],
    enableAot: args.aot,
    wevalBin: args["weval-bin"],
  }));
} catch (err) {
  fail(`componentize-js could not build the component:\n${err.message ?? err}`);
}
const componentized = performance.now();

await mkdir(dirname(out), { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
await writeFile(tmp, component);
await rename(tmp, out);

const mib = (component.length / (1024 * 1024)).toFixed(1);
const sec = (ms) => (ms / 1000).toFixed(1);
console.error(
  `build.mjs: wrote ${out} (${mib} MiB, version ${version}): ` +
    `bundle ${sec(bundled - started)} s, componentize ${sec(componentized - bundled)} s`,
);
