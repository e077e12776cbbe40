// check-generated regenerates gen/ into a temporary folder and fails when it differs from the
// committed gen/ (someone changed a .proto without `npm run generate`).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const out = mkdtempSync(join(tmpdir(), "opengms-gen-"));
try {
  execFileSync("node_modules/.bin/buf", ["generate", "--output", out], { stdio: "inherit" });
  const fresh = new Map(files(join(out, "gen")).map((f) => [relative(join(out, "gen"), f), f]));
  const committed = new Map(files("gen").map((f) => [relative("gen", f), f]));
  const drift: string[] = [];
  for (const [name, path] of fresh) {
    const mine = committed.get(name);
    if (mine === undefined) drift.push(`missing: gen/${name}`);
    else if (!readFileSync(mine).equals(readFileSync(path))) drift.push(`differs: gen/${name}`);
  }
  for (const name of committed.keys()) if (!fresh.has(name)) drift.push(`stale: gen/${name}`);
  if (drift.length > 0) {
    process.stderr.write(`gen/ is out of date with proto/ (run npm run generate):\n  ${drift.join("\n  ")}\n`);
    process.exit(1);
  }
  process.stdout.write(`gen/ is up to date (${fresh.size} files)\n`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
