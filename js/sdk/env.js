// env: the environment variables the host gives the app (`--env NAME=VALUE`,
// `env = {...}` in a config file), read through wasi:cli/environment, typed.
import { getEnvironment } from "wasi:cli/environment@0.2.10";

const TRUE = ["1", "true", "yes", "on"];
const FALSE = ["0", "false", "no", "off"];

function lookup(name) {
  for (const [key, value] of getEnvironment()) {
    if (key === name) {
      return value;
    }
  }
  return undefined;
}

export const env = {
  /** The variable's value, or undefined. */
  get: (name) => lookup(name),
  /** Every variable, as an object. */
  all: () => Object.fromEntries(getEnvironment()),
  /** The value, or `fallback` when unset or empty. */
  string(name, fallback) {
    const value = lookup(name);
    return value === undefined || value === "" ? fallback : value;
  },
  /** The value as an integer, or `fallback` when unset or empty; throws on anything else. */
  int(name, fallback) {
    const value = lookup(name)?.trim();
    if (value === undefined || value === "") {
      return fallback;
    }
    if (!/^[+-]?\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
      throw new Error(`environment variable ${name} must be a whole number, not ${JSON.stringify(value)}`);
    }
    return Number(value);
  },
  /** true for 1/true/yes/on, false for 0/false/no/off (any case), `fallback` when unset or empty. */
  bool(name, fallback) {
    const value = lookup(name)?.trim().toLowerCase();
    if (value === undefined || value === "") {
      return fallback;
    }
    if (TRUE.includes(value)) return true;
    if (FALSE.includes(value)) return false;
    throw new Error(`environment variable ${name} must be one of ${[...TRUE, ...FALSE].join("/")}, not ${JSON.stringify(value)}`);
  },
  /** The value; throws when it is unset or empty. */
  require(name) {
    const value = lookup(name);
    if (value === undefined || value === "") {
      throw new Error(`environment variable ${name} is not set (give it with 'wasm-host serve --env ${name}=VALUE' or env = { ${name} = "..." } in the config file)`);
    }
    return value;
  },
};
