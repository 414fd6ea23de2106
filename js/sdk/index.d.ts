// Types and API documentation of @wasm-host/sdk, the helpers for JavaScript
// apps on wasm-host. The code is in the *.js modules beside this file.

/** What a handler gets besides the request. */
export interface Context {
  /** Keeps the request going until `promise` settles; see {@link waitUntil}. */
  waitUntil(promise: Promise<unknown>): void;
  /** Runs `fn` once the response is produced; see {@link afterResponse}. */
  afterResponse(fn: () => unknown): void;
  /** Accepted for Workers-style code; does nothing. */
  passThroughOnException(): void;
}

/** A request handler: a function, or an object with `fetch` (e.g. a Hono app). */
export type Handler =
  | ((request: Request, ctx: Context) => Response | Promise<Response>)
  | { fetch(request: Request, env: Record<string, never>, ctx: Context): Response | Promise<Response> };

/**
 * Serves requests with `handler`. Call it once, at the top level of the
 * entry module. A handler that throws, or whose promise rejects, gets a 500
 * answer whose body holds the error's name, message and the app's
 * `file:line:col` it came from; the error is also logged with its whole
 * stack (the host's per-app log), in the app's files, not the bundle's.
 */
export function serve(handler: Handler): void;

/**
 * Keeps the current request going until `promise` settles, after its
 * response too. The host counts that time as the request's work: a reload
 * or shutdown waits for it (up to the drain timeout), and `--request-timeout`
 * bounds it. A rejection is logged. Throws when no request is in progress.
 *
 * A bare `setTimeout` after the response is lost: the instance ends once the
 * response is done and nothing given to `waitUntil` is pending.
 */
export function waitUntil(promise: Promise<unknown>): void;

/** Runs `fn` after the handler has produced its response, as work the host waits for (like {@link waitUntil}). */
export function afterResponse(fn: () => unknown): void;

/** A key-value bucket of the app (wasi:keyvalue). Every version of the app sees the same data. */
export declare class Bucket {
  readonly name: string;
  /** The value as a UTF-8 string, or undefined when the key is unset. */
  get(key: string): string | undefined;
  /** The value parsed as JSON, or undefined when the key is unset. Throws if it is not JSON. */
  getJson<T = unknown>(key: string): T | undefined;
  /** The value as bytes, or undefined when the key is unset. */
  getBytes(key: string): Uint8Array | undefined;
  /** Stores a string as UTF-8, bytes as they are, any other value as JSON. */
  set(key: string, value: string | Uint8Array | ArrayBuffer | ArrayBufferView | unknown): void;
  delete(key: string): void;
  exists(key: string): boolean;
  /** Every key of the bucket. */
  keys(): string[];
  /** Adds `delta` (a whole number ≥ 0, default 1) to the counter at `key` (unset counts as 0), atomically. Returns the new value. */
  increment(key: string, delta?: number): number;
  /**
   * Sets `key` to `value` if its current value is `expected` (undefined: the
   * key is unset), as one atomic step. Returns false when another writer got
   * there first: read again and retry.
   */
  compareAndSwap(key: string, expected: string | Uint8Array | unknown | undefined, value: string | Uint8Array | unknown): boolean;
}

export declare const kv: {
  /**
   * Opens a bucket: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with `.`
   * ("default" when omitted). Keys up to 1 KiB, values up to 1 MiB.
   */
  open(name?: string): Bucket;
};

/** The app's wasi:config values (`--config-var KEY=VALUE`, `[app.NAME.config]`). */
export declare const config: {
  /** The value of `key`, or undefined when it is not set. */
  get(key: string): string | undefined;
  /** Every value. */
  getAll(): Record<string, string>;
};

/** The environment variables the host gives the app (`--env NAME=VALUE`). Read them in handlers and hooks, not at the top level. */
export declare const env: {
  get(name: string): string | undefined;
  all(): Record<string, string>;
  /** The value, or `fallback` when unset or empty. */
  string(name: string, fallback: string): string;
  string(name: string): string | undefined;
  /** The value as a whole number, or `fallback` when unset or empty. Throws on anything else. */
  int(name: string, fallback: number): number;
  int(name: string): number | undefined;
  /** 1/true/yes/on or 0/false/no/off (any case), or `fallback` when unset or empty. Throws on anything else. */
  bool(name: string, fallback: boolean): boolean;
  bool(name: string): boolean | undefined;
  /** The value; throws an Error naming the variable when it is unset or empty. */
  require(name: string): string;
};

/** What a version knows about itself (wasm-host:app/info). */
export declare const info: {
  /** 1 for the app's first version, one more per reload. */
  generation(): number;
  /** The app's name in the host. */
  appName(): string;
};

/** The hooks of a version. Either may be async. */
export interface LifecycleHooks {
  /**
   * Runs once when a version is loaded, before it takes traffic. Throwing
   * (or rejecting) refuses the version: `wasm-host reload` prints the
   * error's message and the running version keeps serving.
   */
  init?(): void | Promise<void>;
  /** Runs once when the version stops taking new requests; the version is kept until it returns. Errors are logged. */
  drain?(): void | Promise<void>;
}

/**
 * The value of the entry module's `lifecycle` export (wasm-host:app/lifecycle):
 *
 *     export const lifecycle = defineLifecycle({ init, drain });
 *
 * The export must be in the entry module; an export of another module is not seen.
 */
export function defineLifecycle(hooks: LifecycleHooks): { init(): Promise<void>; drain(): Promise<void> };
