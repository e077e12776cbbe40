// check-generated regenerates each generated folder into a temporary folder and fails when it differs
// from the committed one (someone changed a .proto without `npm run generate`): gen/ (the server's,
// buf.gen.yaml) and clients/js/src/gen/ (the client package's, without protovalidate's options).
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

/** TARGETS are the generation templates and the folder each writes. */
const TARGETS = [
  { template: "buf.gen.yaml", dir: "gen" },
  { template: "clients/js/buf.gen.yaml", dir: "clients/js/src/gen" },
];

function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const drift: string[] = [];
let count = 0;
for (const { template, dir } of TARGETS) {
  const out = mkdtempSync(join(tmpdir(), "opengms-gen-"));
  try {
    execFileSync("node_modules/.bin/buf", ["generate", "--template", template, "--output", out], { stdio: "inherit" });
    const fresh = new Map(files(join(out, dir)).map((f) => [relative(join(out, dir), f), f]));
    const committed = new Map(files(dir).map((f) => [relative(dir, f), f]));
    for (const [name, path] of fresh) {
      const mine = committed.get(name);
      if (mine === undefined) drift.push(`missing: ${dir}/${name}`);
      else if (!readFileSync(mine).equals(readFileSync(path))) drift.push(`differs: ${dir}/${name}`);
    }
    for (const name of committed.keys()) if (!fresh.has(name)) drift.push(`stale: ${dir}/${name}`);
    count += fresh.size;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
if (drift.length > 0) {
  process.stderr.write(`generated code is out of date with proto/ (run npm run generate):\n  ${drift.join("\n  ")}\n`);
  process.exit(1);
}
process.stdout.write(`${TARGETS.map((t) => `${t.dir}/`).join(" and ")} are up to date (${count} files)\n`);
