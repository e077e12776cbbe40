// scripts/build-web.mjs builds the pages (web/): the customer chat widget and the agent console,
// each with Vite into dist/web/<page>/, which opengms serves at /<page>/ (src/http/web.ts). It is
// run by scripts/ensure-build.mjs (`npm start` when the pages are missing or older than their
// sources, `npm run build` always). `--out <dir>` builds into another folder (the browser tests
// build their own; `server.web.dir` serves such a folder).
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { build } from "vite";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** PAGES are the folders under web/ that are pages (src/http/web.ts serves the same). */
const PAGES = ["chat", "agent"];

const at = process.argv.indexOf("--out");
const OUT = at > 0 && process.argv[at + 1] !== undefined ? resolve(process.argv[at + 1]) : join(ROOT, "dist", "web");

for (const page of PAGES) {
  await build({
    configFile: join(ROOT, "web", "vite.config.ts"),
    root: join(ROOT, "web", page),
    logLevel: "warn",
    build: { outDir: join(OUT, page) },
  });
}
