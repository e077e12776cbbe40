// scripts/ensure-build.mjs builds dist/ when it is missing or older than the sources (with
// --force, always: `npm run build`), so that `npm start` on a fresh clone just works and never runs stale JavaScript. It is
// plain JavaScript run by node, before the build exists. An installed package (no src/) ships its
// build: nothing to do.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const STAMP = join(ROOT, "dist", ".build-stamp");
const INPUTS = ["src", "gen", "tsconfig.json", "tsconfig.build.json", "package.json"];

/**
 * newest is the latest modification time of a file or of any file under a directory.
 * @param {string} path
 * @returns {number}
 */
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let latest = st.mtimeMs;
  for (const name of readdirSync(path)) latest = Math.max(latest, newest(join(path, name)));
  return latest;
}

if (existsSync(join(ROOT, "src"))) {
  const built = existsSync(STAMP) ? statSync(STAMP).mtimeMs : 0;
  const changed = Math.max(...INPUTS.filter((p) => existsSync(join(ROOT, p))).map((p) => newest(join(ROOT, p))));
  if (process.argv.includes("--force") || changed > built) {
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    if (!existsSync(tsc)) {
      process.stderr.write("opengms: dist/ must be built and TypeScript is not installed: run `npm ci` first\n");
      process.exit(1);
    }
    process.stderr.write("opengms: building dist/\n");
    const r = spawnSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json")], { cwd: ROOT, stdio: "inherit" });
    if (r.status !== 0) process.exit(r.status ?? 1);
    writeFileSync(STAMP, `${new Date().toISOString()}\n`);
  }
}
