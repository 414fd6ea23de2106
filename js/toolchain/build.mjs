#!/usr/bin/env node
// Builds a JavaScript (or TypeScript) app folder into a WASI 0.2
// `wasi:http/proxy` component for wasm-host; `wasm-host serve DIR` runs it.
//
// Usage: node build.mjs --app DIR --out FILE.wasm --work-dir DIR --wit DIR --sdk DIR [options]
//
//   --app DIR             the app: its entry module and its node_modules
//   --out FILE.wasm       the component; its source map goes to FILE.wasm.map
//   --work-dir DIR        scratch folder (bundle, generated entry, WIT)
//   --wit DIR             wasm-host's WIT: app.wit and deps/*.wit
//   --sdk DIR             the @wasm-host/sdk package, used unless the app has
//                         its own node_modules/@wasm-host/sdk
//   --entry FILE          the entry module (default: package.json "main" or
//                         "module", else src/index, src/app, index, app with
//                         .js, .mjs, .ts or .mts)
//   --disable FEATURE     drop an engine feature: stdio, random, clocks, http
//                         (outgoing fetch) (repeatable)
//   --runtime-args ARGS   extra StarlingMonkey arguments, e.g. "--verbose"
//   --reuse               build for instance reuse: the bundle answers
//                         wasi:http/incoming-handler itself (reuse.js) instead
//                         of StarlingMonkey's fetch event, so one instance can
//                         serve many requests in sequence; the component is
//                         marked with the custom section `wasm-host:reuse`
//
// The WIT world is generated from what the bundle imports: always
// wasi:http/proxy, plus each wasi:keyvalue, wasi:config, wasi:cli/environment
// and wasm-host:app interface the bundle imports, plus the
// wasm-host:app/lifecycle export when the entry module exports `lifecycle`.
// Errors are printed with file:line:column; the last line says the build
// failed, and the exit status is 1. At run time, stack traces name the app's
// files too: the bundle ends with a table from its source map, which the
// prelude reads (see prelude.js).
import { build } from "esbuild";
import { componentize } from "@bytecodealliance/componentize-js";
import { _setPreopens } from "@bytecodealliance/preview2-shim/filesystem";
import { existsSync } from "node:fs";
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { trimGeneratedBindings } from "./bindings.mjs";
import { bundleMapper, stackTable } from "./sourcemap.mjs";
import { generateWorld, relabelWit } from "./world.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const FEATURES = ["stdio", "random", "clocks", "http"];
const EXTENSIONS = [".js", ".mjs", ".ts", ".mts"];
const NODE_BUILTINS = ["fs", "path", "os", "net", "http", "https", "crypto", "buffer", "stream", "child_process", "url", "util", "events", "zlib", "process", "tls", "dns"];

function fail(message, ...hints) {
  console.error(`build.mjs: ${message}`);
  for (const hint of hints) {
    console.error(`  ${hint}`);
  }
  console.error("build.mjs: the build failed");
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      app: { type: "string" },
      out: { type: "string" },
      "work-dir": { type: "string" },
      wit: { type: "string" },
      sdk: { type: "string" },
      entry: { type: "string" },
      disable: { type: "string", multiple: true, default: [] },
      "runtime-args": { type: "string" },
      reuse: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  }).values;
} catch (err) {
  fail(err.message, "run 'node build.mjs --help' for the options");
}
if (args.help) {
  const lines = (await readFile(fileURLToPath(import.meta.url), "utf8")).split("\n").slice(1);
  const end = lines.findIndex((line) => !line.startsWith("//"));
  console.log(lines.slice(0, end).map((line) => line.slice(3)).join("\n"));
  process.exit(0);
}
for (const name of ["app", "out", "work-dir", "wit", "sdk"]) {
  if (!args[name]) {
    fail(`--${name} is required`, "run 'node build.mjs --help' for the options");
  }
}
for (const feature of args.disable) {
  if (!FEATURES.includes(feature)) {
    fail(`unknown feature '${feature}'`, `features: ${FEATURES.join(", ")}`);
  }
}

const isDir = (path) => stat(path).then((s) => s.isDirectory(), () => false);
const isFile = (path) => stat(path).then((s) => s.isFile(), () => false);
const appDir = resolve(args.app);
const out = resolve(args.out);
const workDir = resolve(args["work-dir"]);
const witIn = resolve(args.wit);
const sdkDir = resolve(args.sdk);
if (!(await isDir(appDir))) fail(`no app folder at ${appDir}`);
if (!(await isFile(join(witIn, "app.wit"))) || !(await isDir(join(witIn, "deps")))) {
  fail(`no WIT at ${witIn}`, "--wit DIR must hold app.wit and deps/*.wit (like wasm-host's wit/)");
}
if (!(await isFile(join(sdkDir, "package.json")))) fail(`no @wasm-host/sdk package at ${sdkDir}`);

// --- The app: package.json, dependencies, entry ---------------------------------
let pkg = {};
if (await isFile(join(appDir, "package.json"))) {
  try {
    pkg = JSON.parse(await readFile(join(appDir, "package.json"), "utf8"));
  } catch (err) {
    fail(`${join(appDir, "package.json")}: ${err.message}`);
  }
}
const missing = Object.keys(pkg.dependencies ?? {}).filter((name) => !existsSync(join(appDir, "node_modules", name)));
if (missing.length > 0) {
  fail(
    `the app's dependencies are not installed (missing: ${missing.join(", ")})`,
    `run 'npm install' (or 'npm ci') in ${appDir}`,
  );
}

async function findEntry() {
  if (args.entry) {
    const path = resolve(appDir, args.entry);
    return (await isFile(path)) ? path : fail(`no entry module at ${path} (--entry)`);
  }
  for (const field of ["main", "module"]) {
    if (typeof pkg[field] === "string") {
      const path = resolve(appDir, pkg[field]);
      return (await isFile(path)) ? path : fail(`package.json "${field}" names ${pkg[field]}, which does not exist in ${appDir}`);
    }
  }
  const tried = [];
  for (const base of ["src/index", "src/app", "index", "app"]) {
    for (const ext of EXTENSIONS) {
      tried.push(base + ext);
      if (await isFile(join(appDir, base + ext))) return join(appDir, base + ext);
    }
  }
  fail(`no entry module in ${appDir}`, `add src/index.js (or .ts), set "main" in package.json, or pass --entry FILE`);
}
const entry = await findEntry();
const version = typeof pkg.version === "string" ? pkg.version : "dev";

// --- 1. Bundle ---------------------------------------------------------------
const started = performance.now();
await mkdir(workDir, { recursive: true });
const bundle = join(workDir, "bundle.js");
// The generated entry: the prelude first, then the app, whose exports it
// passes on; `lifecycle`, when the app exports it, goes through the
// prelude's wrapper (a thrown Error becomes the hook's error text).
const mainPath = join(workDir, "main.js");
// With --reuse, the adapter (reuse.js) comes first: it takes over
// addEventListener("fetch") before the prelude wraps it, and its
// `incomingHandler` export answers requests.
const writeMain = (wrapLifecycle, exportHandler) => {
  const app = JSON.stringify(entry);
  return writeFile(
    mainPath,
    `// Generated by wasm-host's build.mjs: ${args.reuse ? "the reuse adapter, " : ""}the prelude, then the app.\n` +
      (args.reuse ? `import { incomingHandler } from ${JSON.stringify(join(here, "reuse.js"))};\n` : "") +
      `import { __wasmHostServeDefault, __wasmHostLifecycle, __wasmHostWarm } from ${JSON.stringify(join(here, "prelude.js"))};\n` +
      `import * as app from ${app};\n` +
      `export * from ${app};\n` +
      (exportHandler ? `export { incomingHandler };\n` : "") +
      (wrapLifecycle ? `export const lifecycle = __wasmHostLifecycle(app.lifecycle);\n` : "") +
      `__wasmHostServeDefault(app);\n` +
      `__wasmHostWarm();\n`,
  );
};
const ownSdk = existsSync(join(appDir, "node_modules", "@wasm-host", "sdk"));
// Imports of WIT interfaces are bound by componentize-js, not bundled. A
// `wasi:*@0.2.N` import is named at the version the engine's world uses.
const witImports = (wasiVersion) => ({
  name: "wit-imports",
  setup(b) {
    b.onResolve({ filter: /^(wasi|wasm-host):/ }, ({ path }) => ({
      path: path.replace(/^(wasi:[a-z][a-z0-9-]*\/[a-z][a-z0-9-]*)@0\.2\.\d+$/, `$1@${wasiVersion}`),
      external: true,
    }));
  },
});

const engineDir = join(dirname(fileURLToPath(import.meta.resolve("@bytecodealliance/componentize-js"))), "..", "lib");
const engineBytes = await readFile(join(engineDir, "starlingmonkey_embedding.wasm")).catch((err) =>
  fail(`cannot read the StarlingMonkey engine: ${err.message}`, `reinstall the toolchain with 'npm ci --ignore-scripts' in ${here}`),
);
// StarlingMonkey's `fetch` handler is an export of the one
// `wasi:http/incoming-handler@0.2.N` the engine was built against; the world
// must name that version.
const wasiVersion = /wasi:http\/incoming-handler@(0\.2\.\d+)/.exec(engineBytes.toString("latin1"))?.[1];
if (!wasiVersion) fail("the componentize-js engine names no wasi:http/incoming-handler@0.2.N");

const options = {
  entryPoints: [mainPath],
  outfile: bundle,
  absWorkingDir: appDir,
  bundle: true,
  format: "esm",
  // StarlingMonkey is a web-style runtime: no Node built-ins to fall back on.
  platform: "neutral",
  mainFields: ["module", "main"],
  conditions: ["worker", "browser"],
  resolveExtensions: [".ts", ".mts", ".js", ".mjs", ".json"],
  target: "es2022",
  sourcemap: "external",
  sourcesContent: false,
  metafile: true,
  define: {
    __APP_VERSION__: JSON.stringify(version),
    "process.env.NODE_ENV": JSON.stringify("production"),
  },
  alias: ownSdk ? {} : { "@wasm-host/sdk": sdkDir },
  plugins: [witImports(wasiVersion)],
  logLevel: "warning",
};
const bundleOutput = (metafile) =>
  Object.entries(metafile.outputs).find(([path]) => resolve(appDir, path) === bundle)?.[1] ??
  fail("esbuild's metafile does not describe the bundle");
let output;
try {
  await writeMain(false, false);
  output = bundleOutput((await build(options)).metafile);
  // The first pass shows the app's own exports: with --reuse, the entry
  // must leave `incomingHandler` to the adapter.
  if (args.reuse && output.exports.includes("incomingHandler")) {
    fail(`${relative(appDir, entry)} exports incomingHandler, which --reuse provides (reuse.js): build without --reuse, or rename the export`);
  }
  if (output.exports.includes("lifecycle") || args.reuse) {
    await writeMain(output.exports.includes("lifecycle"), args.reuse);
    // Warnings were shown by the first pass.
    output = bundleOutput((await build({ ...options, logLevel: "error" })).metafile);
  }
} catch (err) {
  // esbuild has printed each error with file:line:column.
  const builtin = (err.errors ?? []).map((e) => /Could not resolve "((node:)?[a-z_]+)"/.exec(e.text)?.[1]).find((m) => m && (m.startsWith("node:") || NODE_BUILTINS.includes(m)));
  fail(
    `esbuild could not bundle ${relative(appDir, entry)} (the errors are above)`,
    ...(builtin ? [`"${builtin}" is a Node.js module; wasm-host apps run on web APIs (see @wasm-host/sdk's README for what to use instead)`] : []),
  );
}
const bundled = performance.now();

// --- 2. The WIT world, from what the bundle imports and exports ---------------
const imported = [...new Set(output.imports.filter((i) => i.external).map((i) => i.path))];
const witDir = join(workDir, "wit");
await rm(witDir, { recursive: true, force: true });
await mkdir(join(witDir, "deps"), { recursive: true });
const known = await relabelWit(witIn, join(witDir, "deps"), wasiVersion);
let world;
try {
  world = generateWorld({ imported, exported: output.exports, wasiVersion, known, reuse: args.reuse });
} catch (err) {
  fail(err.message);
}
await writeFile(join(witDir, "world.wit"), world.text);

// --- 3. The source map, named from the app's folder ----------------------------
const map = JSON.parse(await readFile(`${bundle}.map`, "utf8"));
const absoluteSources = map.sources.map((source) => resolve(workDir, source));
const posix = (path) => path.split(sep).join("/");
const inside = (dir, path) => {
  const rel = relative(dir, path);
  return rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
};
map.sources = absoluteSources.map((path) => posix(relative(appDir, path)));
delete map.sourceRoot;
delete map.sourcesContent;

// Runtime stack traces: the prelude maps "bundle.js:L:C" with a table the
// bundle's last statement defines (appended, so no line before it moves).
// Its names: the app's files relative to the app folder (node_modules
// included), the SDK as wasm-host/sdk/FILE, the toolchain's as
// wasm-host/FILE. `app` lists the app's own files (not node_modules), whose
// topmost frame the 500 answer names.
const appSources = [];
const stackSources = absoluteSources.map((path, i) => {
  if (inside(sdkDir, path)) return `wasm-host/sdk/${posix(relative(sdkDir, path))}`;
  if (inside(here, path)) return `wasm-host/${posix(relative(here, path))}`;
  if (inside(workDir, path)) return `wasm-host/${posix(relative(workDir, path))}`;
  const name = posix(relative(appDir, path));
  if (inside(appDir, path) && !name.split("/").includes("node_modules")) appSources.push(i);
  return name;
});
const table = { sources: stackSources, app: appSources, lines: stackTable(map) };
await appendFile(
  bundle,
  `\nObject.defineProperty(globalThis, Symbol.for("wasm-host.stack-table"), { value: ${JSON.stringify(table)} });\n`,
);

// --- 4. Componentize -----------------------------------------------------------
// componentize-js reads the WIT with a splicer component run on Node through
// preview2-shim, which preopens nothing unless told: grant the WIT folder.
_setPreopens({ [witDir]: witDir });
// Stack traces name the source relative to the working directory: "bundle.js".
process.chdir(workDir);
const bindings = await trimGeneratedBindings((message) => console.warn(`build.mjs: ${message}`));
let component;
try {
  ({ component } = await componentize({
    sourcePath: bundle,
    witPath: witDir,
    worldName: "js-app",
    disableFeatures: args.disable,
    runtimeArgs: args["runtime-args"],
  }));
} catch (err) {
  // Name the app's files, not the bundle's lines.
  const text = bundleMapper(map, "bundle.js")(String(err.message ?? err).trimEnd());
  fail(
    `componentize-js could not build the component:\n${text}`,
    ...(/top-level/.test(text)
      ? ["the app's top-level code runs at build time (it is snapshotted), where env, config, kv and info are unavailable: use them in handlers and hooks"]
      : []),
  );
}
const componentized = performance.now();

// Map first, then the component, each under a temporary name renamed into
// place: a watcher of the .wasm never sees half a file or a stale map.
await mkdir(dirname(out), { recursive: true });
async function put(path, data) {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}
// The mark of a --reuse build, read by the host: a component-level custom
// section `wasm-host:reuse` holding "1", appended after the last section.
if (args.reuse) {
  component = withCustomSection(component, "wasm-host:reuse", new TextEncoder().encode("1"));
}
await put(`${out}.map`, JSON.stringify(map));
await put(out, component);

function leb128(n) {
  const bytes = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (n !== 0);
  return bytes;
}

// `bytes` with a custom section (id 0: name, then payload) appended. Valid
// at the end of a component as of a core module.
function withCustomSection(bytes, name, payload) {
  const nameBytes = new TextEncoder().encode(name);
  const content = [...leb128(nameBytes.length), ...nameBytes, ...payload];
  return Buffer.concat([Buffer.from(bytes), Buffer.from([0, ...leb128(content.length), ...content])]);
}

const mib = (component.length / (1024 * 1024)).toFixed(1);
const sec = (ms) => (ms / 1000).toFixed(1);
console.error(
  `build.mjs: wrote ${out} (${mib} MiB; ${world.summary}${bindings.trimmed ? "; WASI bindings trimmed" : ""}): ` +
    `bundle ${sec(bundled - started)} s, componentize ${sec(componentized - bundled)} s`,
);
