// export-contract writes contract/: the opengms contract as one self-contained bundle for clients
// in other languages, the gms.v1 protos and everything they import (buf/validate), with
// google.rpc's Status and error details, which a gRPC error's `grpc-status-details-bin` trailer
// carries, and the well-known types they import (google/protobuf: not every protoc has them, e.g.
// Debian's without libprotobuf-dev), each third-party tree with its licence. `buf export` picks
// the files it builds; the well-known types, which buf has built in, come from third_party/wkt.
//   node --import tsx scripts/export-contract.ts           rewrite contract/ (npm run generate does)
//   node --import tsx scripts/export-contract.ts --check   fail when contract/ differs (npm run check does)
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";

const ROOT = join(import.meta.dirname, "..");
const CONTRACT = join(ROOT, "contract");

/** PATHS are what the bundle exports; buf adds what they import. */
const PATHS = ["proto/gms", "third_party/proto/google/rpc"];

/** COPIES are the files buf does not export: the third-party trees' licences, and the well-known types. */
const COPIES = [
  { from: "third_party/proto/buf/validate/LICENSE", to: "buf/validate/LICENSE" },
  { from: "third_party/proto/google/rpc/LICENSE", to: "google/rpc/LICENSE" },
  ...["any.proto", "descriptor.proto", "duration.proto", "field_mask.proto", "struct.proto", "timestamp.proto", "LICENSE"].map((f) => ({
    from: `third_party/wkt/google/protobuf/${f}`,
    to: `google/protobuf/${f}`,
  })),
];

const README = `# The opengms contract, self-contained

Written by \`scripts/export-contract.ts\` (\`npm run generate\`) from \`proto/\` and
\`third_party/proto/\`; \`npm run check\` fails when it is out of date. Do not edit it here.

- \`gms/v1/\`: the opengms services and messages.
- \`buf/validate/\`: protovalidate's options, which the gms protos use to state their limits
  (Apache-2.0, \`buf/validate/LICENSE\`).
- \`google/rpc/\`: \`google.rpc.Status\`, what a gRPC error's \`grpc-status-details-bin\` trailer
  carries, and the standard error details (Apache-2.0, \`google/rpc/LICENSE\`). opengms's own details
  (\`gms.v1.PoolExhausted\`, \`NoMatch\`, \`LimitExceeded\`, \`RateLimited\`) are in
  \`gms/v1/error_details.proto\`.
- \`google/protobuf/\`: the well-known types these import (BSD-3-Clause, \`google/protobuf/LICENSE\`),
  for a protoc that has none of its own; generate no code for them (every protobuf runtime has it).

Generate a client with this folder as the only include path, e.g. in Python:
\`protoc -I contract --python_out=out --grpc_python_out=out gms/v1/*.proto buf/validate/validate.proto google/rpc/*.proto\`.
The README's "Other languages" section has tested examples in Python and plain Node.
`;

/** exportTo writes the bundle into `dir`. */
function exportTo(dir: string): void {
  const args = ["export", ".", "--output", dir, ...PATHS.flatMap((p) => ["--path", p])];
  execFileSync(join(ROOT, "node_modules/.bin/buf"), args, { cwd: ROOT, stdio: "inherit" });
  for (const { from, to } of COPIES) {
    mkdirSync(dirname(join(dir, to)), { recursive: true });
    copyFileSync(join(ROOT, from), join(dir, to));
  }
  writeFileSync(join(dir, "README.md"), README);
}

function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const out = mkdtempSync(join(tmpdir(), "opengms-contract-"));
try {
  exportTo(out);
  const fresh = new Map(files(out).map((f) => [relative(out, f), f]));
  const committed = new Map(files(CONTRACT).map((f) => [relative(CONTRACT, f), f]));
  const drift: string[] = [];
  for (const [name, path] of fresh) {
    const mine = committed.get(name);
    if (mine === undefined) drift.push(`missing: contract/${name}`);
    else if (!readFileSync(mine).equals(readFileSync(path))) drift.push(`differs: contract/${name}`);
  }
  for (const name of committed.keys()) if (!fresh.has(name)) drift.push(`stale: contract/${name}`);
  if (process.argv.includes("--check")) {
    if (drift.length > 0) {
      process.stderr.write(`contract/ is out of date with proto/ and third_party/proto/ (run npm run generate):\n  ${drift.join("\n  ")}\n`);
      process.exit(1);
    }
    process.stdout.write(`contract/ is up to date (${fresh.size} files)\n`);
  } else {
    rmSync(CONTRACT, { recursive: true, force: true });
    mkdirSync(CONTRACT);
    for (const [name, path] of fresh) {
      mkdirSync(dirname(join(CONTRACT, name)), { recursive: true });
      copyFileSync(path, join(CONTRACT, name));
    }
    process.stdout.write(`contract/: ${fresh.size} files${drift.length > 0 ? `, ${drift.length} changed` : ", unchanged"}\n`);
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
