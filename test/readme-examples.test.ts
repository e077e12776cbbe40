// The README's examples, run as a user runs them: every ```sh block marked `<!-- example: <name> -->`
// is taken as written, and all of them run in order in one bash, with curl, jq and npx buf, against
// the real server on the shipped configuration (config/gms.yaml). Only the address differs: the
// examples read it from GMS, which this test sets to its server's. The `opengms` they call is this
// checkout's, on PATH as an operator puts the installed one (run from its source, so no build is needed).
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../src/clock.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ROOT = resolve(import.meta.dirname, "..");

/** Example is one runnable block of the README. */
interface Example {
  name: string;
  code: string;
}

/** examplesOf extracts the marked ```sh blocks of a Markdown text, in order. */
function examplesOf(markdown: string): Example[] {
  return [...markdown.matchAll(/^<!-- example: ([a-z0-9-]+) -->\n```sh\n([\s\S]*?)^```$/gm)].map((m) => ({ name: m[1] ?? "", code: m[2] ?? "" }));
}

/**
 * EXPECTED is what each example's output must hold. An example whose fragments name no error
 * `"code"` must print none: a reply of the Connect protocol with `"code"` is an error.
 */
const EXPECTED: Record<string, readonly string[]> = {
  start: ['{"status":"SERVING"}'],
  helper: [],
  access: ['"service":"iPhoneService"', '"resourceGroup":"iPhoneService"', '"accessNumber":"+1800555'],
  match: ['"data":{"current_location_latitude":{"text":"48.8583"}}', '"phoneNumber":"6504669999"', '"code":"not_found"', '"type":"gms.v1.NoMatch"'],
  code: ['"resourceGroup":"DNIS"', '"accessCode":"', '"matches":[{"sessionId":"'],
  session: ['"access":{"accessNumber":"+1800555', '"state":"SESSION_STATE_ACTIVE"', "{}"],
  chat: [
    '"secureKey":"',
    '"nickname":"Bob","type":"PARTICIPANT_TYPE_AGENT"',
    '"typing":[{"participantId":"',
    '"text":"Where is my parcel?"',
    '"clientMessageId":"m-1"',
    '"text": "It left this morning."',
    '"position": "6"',
    '"type": "CHAT_EVENT_TYPE_CHAT_ENDED"',
  ],
  storage: ['"version":"1"', '{"value":{"text":"Ann"}}', '"filename":"a.png"', '"version":"2"', '"code":"failed_precondition"', '"code":"not_found"'],
  "gms-storage": ['{"id":"', '"Key1":"Value1"', '"FileKey":{"filename":"note.txt","contentType":"text/plain","size":18}', "Hello from the app", '"exception":"NotFound"', '"code":"not_found"'],
  "gms-service": ['"_access_number":"+1800555', '"_expiration_time":', '{"_id":"', '"_data_id":"'],
  "gms-chat": ['"statusCode":0', '"type":"ParticipantJoined"', '"nickname":"First Last"', '"index":2,"type":"Message","utcTime":', '"text":"Where is my parcel?"', '"chatEnded":true'],
  metrics: ['opengms_access_numbers{group="iPhoneService",state="reserved"} ', 'opengms_access_numbers{group="iPhoneService",state="free"} '],
  cli: [
    "SERVING\n",
    "GROUP          FREE  RESERVED  COOLING DOWN  RETIRED  RESERVATIONS\nDNIS ",
    "NUMBER        GROUP          SESSION",
    "  iPhoneService  ",
    "  6504661111  ",
    "state    active\n",
    " ended\n",
    '{"name":"iPhoneService","free":"',
    "exit status 2",
  ],
};

describe("the README's examples", () => {
  const examples = examplesOf(readFileSync(join(ROOT, "README.md"), "utf8"));

  it("are the marked blocks this test knows what to expect of, each once", () => {
    expect(examples.map((e) => e.name)).toEqual(Object.keys(EXPECTED));
  });

  describe.each(DIALECTS)("run as written, in order, in one shell, against the server on config/gms.yaml on %s", (dialect) => {
    let t: TestServer;
    let dir: string;
    beforeAll(async () => {
      // The shipped configuration, on a database of the test's own and a free port; the real clock, as a user's server has.
      const config = parseYaml(readFileSync(join(ROOT, "config", "gms.yaml"), "utf8")) as Record<string, Record<string, unknown>>;
      config["server"] = { ...config["server"], host: "127.0.0.1", port: 0 };
      t = await startTestServer(dialect, { config, clock: systemClock });
      // The examples write into the current folder; npx finds buf through node_modules, as in a checkout.
      dir = mkdtempSync(join(tmpdir(), "opengms-readme-"));
      symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
      mkdirSync(join(dir, "bin"));
      writeFileSync(join(dir, "bin", "opengms"), `#!/bin/sh\nexec node --import tsx '${join(ROOT, "src", "main.ts")}' "$@"\n`);
      chmodSync(join(dir, "bin", "opengms"), 0o755);
    });
    afterAll(async () => {
      await t?.close();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    it("every example succeeds and prints what the README says", async () => {
      // Each example is preceded by a line naming it, so that the outputs can be told apart.
      const script = ["set -euo pipefail", ...examples.flatMap((e) => [`printf '\\n@@ %s\\n' '${e.name}'`, e.code])].join("\n");
      const env: NodeJS.ProcessEnv = { ...process.env, GMS: t.server.url, PATH: `${join(dir, "bin")}:${process.env["PATH"] ?? ""}` };
      delete env["GMS_URL"];
      delete env["GMS_API_KEY"];
      const run = await bash(script, { cwd: dir, env });
      const context = `\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
      expect(run.code, `bash exited ${run.code}${context}`).toBe(0);
      const outputs = new Map<string, string>();
      for (const part of run.stdout.split(/^@@ /m).slice(1)) {
        const newline = part.indexOf("\n");
        outputs.set(newline < 0 ? part : part.slice(0, newline), newline < 0 ? "" : part.slice(newline + 1));
      }
      expect([...outputs.keys()]).toEqual(examples.map((e) => e.name));
      for (const [name, fragments] of Object.entries(EXPECTED)) {
        const output = outputs.get(name) ?? "";
        for (const fragment of fragments) expect(output, `example "${name}" should print ${fragment}${context}`).toContain(fragment);
        if (!fragments.some((f) => f.startsWith('"code"'))) expect(output, `example "${name}" printed an error${context}`).not.toContain('"code"');
      }
    }, 120_000);
  });
});

/** bash runs a script and collects its exit code and output; it is killed after two minutes. */
function bash(script: string, options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn("bash", ["-c", script], { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"], timeout: 110_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.once("error", reject);
    child.once("close", (code) => resolvePromise({ code, stdout, stderr }));
  });
}
