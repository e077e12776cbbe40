// What a web developer does with @opengms/client: pack it (`npm pack` in clients/js, which builds
// it), install the tarball into an empty project from the npm registry, run the README's Node
// example against a real server, and bundle the README's browser example with esbuild — its size
// (minified, gzipped) under a budget, no protovalidate descriptor and nothing of Node in it — and
// run that bundle in Chromium against the server, an agent answering from Node. The examples are
// the README's blocks marked `<!-- client: node -->` and `<!-- client: browser -->`, as written;
// only the server's address differs.
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium, type Browser } from "playwright-core";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../src/clock.js";
import { AgentChat, createClient } from "../clients/js/src/node.js";
import { DIALECTS } from "./helpers/databases.js";
import { waitFor } from "./helpers/calls.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const ROOT = join(import.meta.dirname, "..");
const CLIENT = join(ROOT, "clients", "js");
const VERSION = (JSON.parse(readFileSync(join(CLIENT, "package.json"), "utf8")) as { version: string }).version;
const INSTALL_TIMEOUT_MS = 120_000;

/**
 * BUDGET_GZIP_BYTES bounds the browser example's bundle, gzipped (level 9): 37.3 kB measured when
 * set (128 kB minified), against the 47 kB of a chat page built from gen/ with protovalidate's
 * descriptor. A change that pulls in more (a second transport's code, every service, the
 * validation rules) fails here.
 */
const BUDGET_GZIP_BYTES = 38_500;

/** clientBlocks are the README's ```js blocks marked `<!-- client: name -->`, by name. */
function clientBlocks(): Map<string, string> {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  return new Map([...readme.matchAll(/^<!-- client: ([a-z-]+) -->\n```js\n([\s\S]*?)^```$/gm)].map((m) => [m[1] ?? "", m[2] ?? ""]));
}

/** run runs a command to its end and gives its stdout; a failure throws with its output. */
function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return execFileSync(cmd, args, { cwd, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: INSTALL_TIMEOUT_MS });
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${x.message}\n${x.stdout ?? ""}\n${x.stderr ?? ""}`, { cause: e });
  }
}

/** runAsync runs a command without blocking the event loop, which the in-process server needs to answer it. */
async function runAsync(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  try {
    return (await promisify(execFile)(cmd, args, { cwd, env, encoding: "utf8", timeout: 60_000 })).stdout;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${x.message}\n${x.stdout ?? ""}\n${x.stderr ?? ""}`, { cause: e });
  }
}

/**
 * descriptors decodes the base64 string literals of a bundle: protoc-gen-es embeds each file's
 * descriptor that way, so a schema's name shows only once decoded ("buf.validate" never appears
 * in plain text, even where protovalidate's descriptor is).
 */
function descriptors(bundle: string): string {
  return [...bundle.matchAll(/"([A-Za-z0-9+/]{64,}={0,2})"/g)].map((m) => Buffer.from(m[1] ?? "", "base64").toString("latin1")).join("\n");
}

/** sizes are a bundle's bytes, minified and gzipped (level 9). */
function sizes(bundle: string): { minified: number; gzipped: number } {
  return { minified: Buffer.byteLength(bundle), gzipped: gzipSync(bundle, { level: 9 }).length };
}

/** BASELINE is the same customer page written over gen/ (with protovalidate's descriptor), as before this package. */
const BASELINE = `
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ChatService } from "./gen/gms/v1/chat_pb.js";
const chat = createClient(ChatService, createConnectTransport({ baseUrl: "http://localhost:8080" }));
const r = await chat.requestChat({ nickname: "Ann" });
for await (const e of chat.subscribe({ chatId: r.chatId, secureKey: r.secureKey, fromPosition: 1n })) document.body.append(e.text);
`;

describe("@opengms/client packed, installed and used as a user does", () => {
  const blocks = clientBlocks();
  let work: string;
  let project: string;
  let t: TestServer;

  beforeAll(async () => {
    if (!existsSync(join(CLIENT, "node_modules", ".bin", "tsc"))) throw new Error("clients/js has no node_modules: run `npm ci` in clients/js (.ci/run does)");
    work = mkdtempSync(join(tmpdir(), "opengms-client-pack-"));
    run("npm", ["pack", "--pack-destination", work], CLIENT);
    project = join(work, "project");
    run("mkdir", ["-p", project], work);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "shop", private: true, type: "module" }));
    // As the README says: the package, then connect-node for the "grpc" transport.
    run("npm", ["install", "--no-audit", "--no-fund", join(work, `opengms-client-${VERSION}.tgz`)], project);
    run("npm", ["install", "--no-audit", "--no-fund", "@connectrpc/connect-node@2.1.2"], project);
    // The shipped configuration, a free port, the page's origin allowed; the real clock, as a user's server has.
    const config = parseYaml(readFileSync(join(ROOT, "config", "gms.yaml"), "utf8")) as Record<string, Record<string, unknown>>;
    config["server"] = { ...config["server"], host: "127.0.0.1", port: 0, cors_origins: ["*"] };
    t = await startTestServer(DIALECTS.at(-1) ?? "sqlite", { config, clock: systemClock });
  }, INSTALL_TIMEOUT_MS * 2);

  afterAll(async () => {
    await t?.close();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it("ships built JavaScript, declarations and no protovalidate", () => {
    const files = run("tar", ["-tzf", join(work, `opengms-client-${VERSION}.tgz`)], work).split("\n");
    expect(files).toContain("package/dist/index.js");
    expect(files).toContain("package/dist/index.d.ts");
    expect(files).toContain("package/dist/node.js");
    expect(files).toContain("package/dist/gen/gms/v1/chat_pb.js");
    const installed = join(project, "node_modules", "@opengms", "client", "dist", "gen", "gms", "v1");
    for (const f of readdirSync(installed)) expect(readFileSync(join(installed, f), "utf8"), f).not.toContain("buf/validate");
    expect(existsSync(join(project, "node_modules", "@bufbuild", "protovalidate"))).toBe(false);
    // One copy of the protobuf runtime for the package, connect and connect-node (a second would double the bundle).
    expect(existsSync(join(project, "node_modules", "@opengms", "client", "node_modules"))).toBe(false);
  });

  it("runs the README's Node example from the installed package", async () => {
    const code = blocks.get("node");
    expect(code, "README.md has no block marked <!-- client: node -->").toBeDefined();
    writeFileSync(join(project, "example.mjs"), code ?? "");
    const out = await runAsync("node", ["example.mjs"], project, { ...process.env, GMS: t.server.url });
    expect(out).toContain("#1 PARTICIPANT_JOINED Ann: ");
    expect(out).toContain("#2 PARTICIPANT_JOINED Bob: ");
    expect(out).toContain("#3 MESSAGE Ann: Where is my parcel?");
    expect(out).toContain("#4 MESSAGE Bob: It left this morning.");
    expect(out).toContain("#6 CHAT_ENDED");
    expect(out.match(/^#\d+ /gm)).toHaveLength(6);
    expect(out).toContain("no match: NO_RESERVATION");
  });

  describe("the README's browser example", () => {
    let bundle: string;
    let page: http.Server;
    let pageUrl: string;
    let browser: Browser | undefined;

    beforeAll(async () => {
      const code = blocks.get("browser");
      if (code === undefined) throw new Error("README.md has no block marked <!-- client: browser -->");
      writeFileSync(join(project, "chat.js"), code.replaceAll("http://localhost:8080", t.server.url));
      run(join(ROOT, "node_modules", ".bin", "esbuild"), ["chat.js", "--bundle", "--minify", "--format=esm", "--platform=browser", "--target=es2022", "--outfile=dist/chat.js"], project);
      bundle = readFileSync(join(project, "dist", "chat.js"), "utf8");
      page = http.createServer((req, res) => {
        if (req.url === "/chat.js") res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
        else res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><meta charset="utf-8"><title>Shop</title><script type="module" src="/chat.js"></script>');
      });
      await new Promise<void>((resolve) => page.listen(0, "127.0.0.1", resolve));
      pageUrl = `http://127.0.0.1:${(page.address() as AddressInfo).port}/`;
    });
    afterAll(async () => {
      await browser?.close();
      await new Promise<void>((resolve) => page?.close(() => resolve()) ?? resolve());
    });

    it("bundles under its size budget, without protovalidate's descriptor or anything of Node", () => {
      const { minified, gzipped } = sizes(bundle);
      process.stdout.write(`browser example bundle: ${minified} bytes minified, ${gzipped} bytes gzipped (budget ${BUDGET_GZIP_BYTES})\n`);
      expect(gzipped).toBeLessThan(BUDGET_GZIP_BYTES);
      const schemas = descriptors(bundle);
      expect(schemas).toContain("gms/v1/chat.proto");
      expect(schemas).not.toContain("buf/validate");
      expect(bundle).not.toContain("buf.validate");
      expect(bundle).not.toContain("connect-node");
      expect(bundle).not.toContain("node:http2");
      // Only the chat's service: the other services' descriptors are left out.
      expect(schemas).not.toContain("gms/v1/admin.proto");
      expect(schemas).not.toContain("gms/v1/access.proto");
    });

    it("bundles with createClient every service's schema, which createTransport leaves out (tree-shaking works)", () => {
      const code = (blocks.get("browser") ?? "")
        .replace("import { ChatEventType, CustomerChat, createTransport }", "import { ChatEventType, CustomerChat, createClient }")
        .replace(/const gms = \{ transport: createTransport\((\{[^}]*\})\) \};/, "const gms = createClient($1);");
      expect(code).toContain("createClient({");
      writeFileSync(join(project, "chat-all.js"), code);
      run(join(ROOT, "node_modules", ".bin", "esbuild"), ["chat-all.js", "--bundle", "--minify", "--format=esm", "--platform=browser", "--target=es2022", "--outfile=dist/chat-all.js"], project);
      const all = readFileSync(join(project, "dist", "chat-all.js"), "utf8");
      const { minified, gzipped } = sizes(all);
      process.stdout.write(`the same with createClient: ${minified} bytes minified, ${gzipped} bytes gzipped\n`);
      // The five other services' schemas (AdminService's alone is several kB, and grows with the contract).
      expect(gzipped - sizes(bundle).gzipped).toBeGreaterThan(3000);
      expect(descriptors(all)).toContain("gms/v1/admin.proto");
      expect(descriptors(all)).not.toContain("buf/validate");
    });

    it("finds protovalidate's descriptor in the same page built over gen/, as before the package (the check above can fail)", () => {
      const base = execFileSync(join(ROOT, "node_modules", ".bin", "esbuild"), ["--bundle", "--minify", "--format=esm", "--platform=browser", "--target=es2022", "--loader=ts"], { cwd: ROOT, input: BASELINE, encoding: "utf8" });
      const { minified, gzipped } = sizes(base);
      process.stdout.write(`the same page over gen/: ${minified} bytes minified, ${gzipped} bytes gzipped\n`);
      expect(descriptors(base)).toContain("buf/validate/validate.proto");
      expect(gzipped).toBeGreaterThan(sizes(bundle).gzipped);
    });

    it("runs in Chromium: the customer's page and an agent in Node exchange messages, typing is shown", { timeout: 60_000 }, async () => {
      browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu"] });
      const tab = await browser.newPage();
      const problems: string[] = [];
      tab.on("pageerror", (e) => problems.push(e.message));
      await tab.goto(pageUrl);
      const desk = createClient({ baseUrl: t.server.url, transport: "grpc" });
      const agent = await AgentChat.accept(desk, { endpoint: "default", nickname: "Bob", waitSeconds: 10 });
      const heard: string[] = [];
      const stop = agent.subscribe({ message: (e) => heard.push(e.text) });
      try {
        await tab.waitForSelector("body[data-state=live]");
        await agent.typing(true);
        await tab.waitForSelector("p:text('Bob is typing…')");
        await agent.send("Hello, how can I help?");
        await tab.waitForSelector("li:text('Bob: Hello, how can I help?')");
        await tab.fill("input", "Where is my parcel?");
        await tab.press("input", "Enter");
        await waitFor("the agent to read the page's message", () => heard.includes("Where is my parcel?"));
        await tab.waitForSelector("li:text('Ann: Where is my parcel?')");
        await agent.end();
        await tab.waitForSelector("input:disabled");
        expect(problems).toEqual([]);
      } finally {
        stop();
      }
    });
  });
});
