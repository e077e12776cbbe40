// Where opengms is installed and which version it is, found from this module's own location: the
// same from the sources (src/, run by tsx in development), from the build (dist/src/) and from an
// installed package (node_modules/opengms/dist/src/), wherever the process was started.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** PACKAGE_NAME is the name in package.json that marks the package's root. */
const PACKAGE_NAME = "opengms";

/** findRoot walks up from `dir` to the directory of opengms' package.json. */
function findRoot(dir: string): string {
  for (let d = dir; ; d = dirname(d)) {
    const manifest = join(d, "package.json");
    if (existsSync(manifest)) {
      const name = (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name;
      if (name === PACKAGE_NAME) return d;
    }
    if (dirname(d) === d) throw new Error(`opengms: no package.json named "${PACKAGE_NAME}" above ${dir}`);
  }
}

/** PACKAGE_ROOT is the directory opengms is installed in (its package.json, config/, proto/). */
export const PACKAGE_ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

/** VERSION is opengms' version, from its package.json. */
export const VERSION = (JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;

/** BUNDLED_CONFIG is the example configuration shipped with the package (config/gms.yaml). */
export const BUNDLED_CONFIG = join(PACKAGE_ROOT, "config", "gms.yaml");
