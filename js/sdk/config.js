// config: the app's settings from the host (wasi:config/store), given with
// `--config-var KEY=VALUE` or an [app.NAME.config] table.
import { get, getAll } from "wasi:config/store@0.2.0-rc.1";
import { witError } from "./witerror.js";

export const config = {
  /** The value of `key`, or undefined when it is not set. */
  get(key) {
    try {
      return get(key) ?? undefined;
    } catch (err) {
      throw witError(`config.get(${JSON.stringify(key)})`, err);
    }
  },
  /** Every value, as an object. */
  getAll() {
    try {
      return Object.fromEntries(getAll());
    } catch (err) {
      throw witError("config.getAll()", err);
    }
  },
};
