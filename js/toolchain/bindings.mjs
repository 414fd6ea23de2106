// Trims the JavaScript bindings componentize-js generates for the WASI
// imports, before they are snapshotted with the app. Those bindings run in
// StarlingMonkey's interpreter on every WASI call the app (or reuse.js, or
// the SDK) makes, and a request built for reuse makes a dozen or more.
// Three things in them cost time and buy nothing here:
//
// - every call builds two objects for `_debugLog`, which logs only when
//   `process.env.JCO_DEBUG` is set; StarlingMonkey has no `process`, so it
//   never does: the calls are skipped (`false && _debugLog(...)`);
// - every method call unregisters its `self` from the resource's
//   FinalizationRegistry, although a method only borrows `self`: the object
//   then lost its drop-on-collection for good. Calls that take ownership
//   (`[static]`, `[constructor]`, a handle inside an argument) keep theirs;
// - every string passed to the host is measured for its UTF-8 length one
//   character at a time, in the interpreter, before it is encoded: the
//   helper that does it (`_utf8AllocateAndEncode`) is replaced by one that
//   lets the engine's native TextEncoder make the bytes, then copies them
//   into one allocation of exactly their length, as the original does.
//
// Measured in a guest (release host, a JavaScript loop of 300 calls each):
// `incoming-request.method` 9.9 -> 5.7 µs, `new Fields()` and its drop
// 11.9 -> 5.9 µs, `new OutgoingResponse` 21.2 -> 10.3 µs.
//
// The text is matched against componentize-js 0.23.0 (pinned in
// package.json). A version that generates other text is left as it is, with
// a warning: the app still builds and runs, only slower.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const DEBUG_LOG = /^(\s*)_debugLog\(/gm;
// `finalizationRegistry_X.unregister(arg0);` in a helper whose next
// `funcName` is a `[method]`: the borrow of `self`.
const SELF_UNREGISTER = /^(\s*)finalizationRegistry_[\w$]+\.unregister\(arg0\);(?=(?:(?!funcName:)[\s\S])*?funcName: '\[method\])/gm;

// The string helper: its header, and its end (the first line holding only
// `}` after it).
const STRING_HELPER = /^function _utf8AllocateAndEncode\(s, realloc, memory\) \{\n[\s\S]*?\n\}\n/m;
const NATIVE_STRING_HELPER = `function _utf8AllocateAndEncode(s, realloc, memory) {
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  // wasm-host's build: encoded natively, then copied (bindings.mjs).
  const bytes = TEXT_ENCODER_UTF8.encode(s);
  const ptr = realloc(0, 0, 1, bytes.length);
  new Uint8Array(memory.buffer, ptr, bytes.length).set(bytes);
  return { ptr, len: bytes.length };
}
`;

// The bindings `text` with the costs above removed, and how many of each
// were found.
export function trimBindings(text) {
  let logs = 0;
  let unregisters = 0;
  let strings = 0;
  const trimmed = text
    .replace(STRING_HELPER, () => {
      strings++;
      return NATIVE_STRING_HELPER;
    })
    .replace(DEBUG_LOG, (_, indent) => {
      logs++;
      return `${indent}false && _debugLog(`;
    })
    .replace(SELF_UNREGISTER, (_, indent) => {
      unregisters++;
      return `${indent}/* borrowed self: stays registered */`;
    });
  return { text: trimmed, logs, unregisters, strings };
}

// Makes componentize-js trim the bindings it splices. It reads them from
// its splicer object, which is shared by module identity: wrapping its
// `spliceBindings` here wraps it for componentize() too. Returns an object
// whose `trimmed` says, once componentize() is done, whether they were.
export async function trimGeneratedBindings(warn) {
  const status = { trimmed: false };
  const entry = fileURLToPath(import.meta.resolve("@bytecodealliance/componentize-js"));
  const splicerPath = join(dirname(entry), "..", "lib", "spidermonkey-embedding-splicer.js");
  let splicer;
  try {
    ({ splicer } = await import(pathToFileURL(splicerPath).href));
  } catch {
    // Another layout of the package: handled below, like a missing object.
  }
  if (!splicer || typeof splicer.spliceBindings !== "function") {
    warn("componentize-js's splicer was not found where 0.23.0 has it: its WASI bindings are not trimmed");
    return status;
  }
  const splice = splicer.spliceBindings;
  splicer.spliceBindings = (...args) => {
    const out = splice(...args);
    const { text, logs, unregisters, strings } = trimBindings(out.jsBindings);
    if (logs === 0 || unregisters === 0 || strings !== 1) {
      warn("componentize-js generated bindings this builder does not know: they are not trimmed (each WASI call stays slower)");
      return out;
    }
    status.trimmed = true;
    return { ...out, jsBindings: text };
  };
  return status;
}
