// info: what a version knows about itself (wasm-host:app/info).
import { generation, appName } from "wasm-host:app/info@0.1.0";

export const info = {
  /** 1 for the app's first version, one more per reload. */
  generation: () => Number(generation()),
  /** The app's name in the host. */
  appName: () => appName(),
};
