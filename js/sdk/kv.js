// kv: the app's key-value buckets in the host (wasi:keyvalue 0.2.0-draft
// store and atomics, plus wasm-host:app/keyvalue-cas). They outlive a
// version: every version of the app sees the same data.
import { open } from "wasi:keyvalue/store@0.2.0-draft";
import { increment } from "wasi:keyvalue/atomics@0.2.0-draft";
import { compareAndSwap } from "wasm-host:app/keyvalue-cas@0.1.0";
import { witError } from "./witerror.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Strings are stored as UTF-8, bytes as they are, anything else as JSON.
function encode(value) {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value === undefined) throw new TypeError("kv: cannot store undefined (use delete)");
  return encoder.encode(JSON.stringify(value));
}

export class Bucket {
  #name;
  #handle;

  constructor(name, handle) {
    this.#name = name;
    this.#handle = handle;
  }

  get name() {
    return this.#name;
  }

  #call(what, fn) {
    try {
      return fn();
    } catch (err) {
      throw witError(`kv bucket ${JSON.stringify(this.#name)}: ${what}`, err);
    }
  }

  /** The value as bytes, or undefined when the key is unset. */
  getBytes(key) {
    return this.#call(`get(${JSON.stringify(key)})`, () => this.#handle.get(key)) ?? undefined;
  }

  /** The value as a UTF-8 string, or undefined when the key is unset. */
  get(key) {
    const bytes = this.getBytes(key);
    return bytes === undefined ? undefined : decoder.decode(bytes);
  }

  /** The value parsed as JSON, or undefined when the key is unset. */
  getJson(key) {
    const text = this.get(key);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(`kv bucket ${JSON.stringify(this.#name)}: the value of ${JSON.stringify(key)} is not JSON: ${err.message}`);
    }
  }

  /** Stores a string (UTF-8), bytes, or any other value as JSON. */
  set(key, value) {
    const bytes = encode(value);
    this.#call(`set(${JSON.stringify(key)})`, () => this.#handle.set(key, bytes));
  }

  delete(key) {
    this.#call(`delete(${JSON.stringify(key)})`, () => this.#handle.delete(key));
  }

  exists(key) {
    return this.#call(`exists(${JSON.stringify(key)})`, () => this.#handle.exists(key));
  }

  /** Every key of the bucket. */
  keys() {
    const keys = [];
    let cursor;
    for (let page = 0; page < 1_000_000; page++) {
      const response = this.#call("keys()", () => this.#handle.listKeys(cursor));
      keys.push(...response.keys);
      if (response.cursor === undefined || response.cursor === null) break;
      cursor = response.cursor;
    }
    return keys;
  }

  /** Adds `delta` (a whole number ≥ 0, default 1) to the counter at `key` (unset: 0), atomically; returns the new value. */
  increment(key, delta = 1) {
    if (!Number.isSafeInteger(delta) || delta < 0) {
      throw new RangeError(`kv increment: delta must be a whole number from 0 up, not ${delta}`);
    }
    const value = this.#call(`increment(${JSON.stringify(key)})`, () => increment(this.#handle, key, BigInt(delta)));
    return Number(value);
  }

  /**
   * Sets `key` to `value` if its value is `expected` (undefined: the key is
   * unset), atomically. Returns false when another writer got there first.
   */
  compareAndSwap(key, expected, value) {
    const want = expected === undefined || expected === null ? undefined : encode(expected);
    const bytes = encode(value);
    return this.#call(`compareAndSwap(${JSON.stringify(key)})`, () => compareAndSwap(this.#handle, key, want, bytes));
  }
}

export const kv = {
  /** Opens the bucket `name` ("default" if empty): 1 to 64 of A-Z a-z 0-9 _ - . */
  open(name = "default") {
    try {
      return new Bucket(name, open(name));
    } catch (err) {
      throw witError(`kv.open(${JSON.stringify(name)})`, err);
    }
  },
};
