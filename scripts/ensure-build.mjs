// scripts/ensure-build.mjs builds dist/ when it is missing or older than the sources (with
// --force, always: `npm run build`), so that `npm start` on a fresh clone just works and never runs
// stale JavaScript: the server (tsc: dist/src, dist/gen) and the pages it serves (Vite, through
// scripts/build-web.mjs: dist/web). It is plain JavaScript run by node, before the build exists. An
// installed package (no src/) ships its build: nothing to do.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const STAMP = join(ROOT, "dist", ".build-stamp");
const INPUTS = ["src", "gen", "tsconfig.json", "tsconfig.build.json", "package.json"];
const WEB_STAMP = join(ROOT, "dist", "web", ".build-stamp");
const WEB_INPUTS = ["web", "clients/js/src", "scripts/build-web.mjs", "package.json"];
/** WEB_PAGES are the built pages' entry files; a missing one means the pages must be built. */
const WEB_PAGES = ["chat", "agent"].map((page) => join(ROOT, "dist", "web", page, "index.html"));
const force = process.argv.includes("--force");

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

/**
 * stale tells whether a build stamped at `stamp` is older than any of its inputs (or missing).
 * @param {string} stamp
 * @param {string[]} inputs
 * @returns {boolean}
 */
function stale(stamp, inputs) {
  const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
  return Math.max(...inputs.filter((p) => existsSync(join(ROOT, p))).map((p) => newest(join(ROOT, p)))) > built;
}

if (existsSync(join(ROOT, "src"))) {
  if (force || stale(STAMP, INPUTS)) {
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
  if (force || stale(WEB_STAMP, WEB_INPUTS) || !WEB_PAGES.every((p) => existsSync(p))) {
    if (!existsSync(join(ROOT, "node_modules", "vite", "package.json"))) {
      // The server runs without its pages (they answer 503 saying so); a release must have them.
      process.stderr.write("opengms: the pages (/chat/, /agent/) must be built and Vite is not installed: run `npm ci` first\n");
      if (force) process.exit(1);
    } else {
      process.stderr.write("opengms: building dist/web/ (the chat widget and the agent console)\n");
      const r = spawnSync(process.execPath, [join(ROOT, "scripts", "build-web.mjs")], { cwd: ROOT, stdio: "inherit" });
      if (r.status !== 0) process.exit(r.status ?? 1);
      writeFileSync(WEB_STAMP, `${new Date().toISOString()}\n`);
    }
  }
}
