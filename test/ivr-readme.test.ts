// The README's section "IVRs: matching over plain HTTP" holds what it shows: its Kamailio recipe is
// the very configuration test/ivr-sip.test.ts runs, and its shell example runs as written against a
// real server (an open one, as the shipped configuration is) and prints what its comments say.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { KAMAILIO_CFG } from "./sip/harness.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ROOT = resolve(import.meta.dirname, "..");
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** section is the README's "## IVRs: matching over plain HTTP", up to the next "## " heading. */
const section = (() => {
  const start = README.indexOf("\n## IVRs: matching over plain HTTP\n");
  expect(start).toBeGreaterThan(0);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
})();

/** blocks are the section's fenced code blocks with their info string. */
const blocks = [...section.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({ lang: m[1] ?? "", code: m[2] ?? "" }));

describe("the README's IVR section", () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer("sqlite", { config: { resources: { solo: { numbers: ["+18005550300"], locking: true } } } });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it("shows the Kamailio configuration the SIP test runs, as it is", () => {
    expect(blocks.filter((b) => b.code.startsWith("#!KAMAILIO")).map((b) => b.code)).toEqual([readFileSync(KAMAILIO_CFG, "utf8")]);
  });

  it("has a shell example that runs as written and answers as its comments say", async () => {
    const sh = blocks.filter((b) => b.lang === "sh");
    expect(sh).toHaveLength(1);
    const app = createClient(AccessService, ts.connect);
    const r = await app.requestInteraction({ phoneNumber: "6504669999", resourceGroup: "solo" });
    // Asynchronously: the server answering the example runs in this process.
    const run = await promisify(execFile)("bash", ["-euo", "pipefail", "-c", sh[0]!.code], { env: { ...process.env, GMS: ts.server.url, NUMBER: r.access!.accessNumber }, encoding: "utf8", timeout: 30_000 });
    expect(run.stderr).toBe("");
    const matched = `matched ${r.session!.id} ${r.session!.dataId}`;
    expect(run.stdout).toBe(`${matched}\n${matched}\nno_match no_reservation\n`);
    // The comments say the same.
    expect([...sh[0]!.code.matchAll(/# (matched|the same line|no_match \w+)/g)].map((m) => m[1])).toEqual(["matched", "the same line", "no_match no_reservation"]);
  });
});
