// Real reverse proxies for tests: Debian's nginx and HAProxy, run as this test's own processes on
// loopback, each with a configuration file written into a temporary folder and free ports, never
// the system's service. The configurations are the README's ("Proxies and load balancers") as
// written, only with their own ports and short timeouts, so that a test sees an idle stream cut in
// seconds.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectOutcome, freePort, waitFor } from "./calls.js";

/** RunningProxy is a proxy process in front of an opengms server. */
export interface RunningProxy {
  /** url is where HTTP/1.1 clients (Connect, gRPC-Web) call, grpcUrl where gRPC clients (HTTP/2) do. */
  readonly url: string;
  readonly grpcUrl: string;
  /** config is the configuration file the proxy runs. */
  readonly config: string;
  /** log is what the proxy wrote to its error log and its output so far. */
  log(): string;
  stop(): Promise<void>;
}

const README = readFileSync(join(import.meta.dirname, "..", "..", "README.md"), "utf8");

/** readmeBlock is the fenced block of the README marked `<!-- proxy: <name> -->`. */
export function readmeBlock(name: string): string {
  const block = new RegExp(`^<!-- proxy: ${name} -->\n\`\`\`[a-z]*\n([\\s\\S]*?)^\`\`\`$`, "m").exec(README)?.[1];
  if (block === undefined) throw new Error(`the README has no block marked <!-- proxy: ${name} -->`);
  return block;
}

/** swap replaces what the README's configuration must contain, `count` times: a README that changed fails here. */
function swap(text: string, from: string, to: string, count = 1): string {
  const parts = text.split(from);
  if (parts.length - 1 !== count) throw new Error(`the README's proxy configuration should contain ${JSON.stringify(from)} ${count} time(s), not ${parts.length - 1}`);
  return parts.join(to);
}

/**
 * nginxConfig is the README's nginx configuration with this test's ports and idle timeout, in a
 * whole nginx.conf that keeps its files in `dir`, and gzips the streams' responses (as many
 * sites' configurations do: gzip buffers what it compresses unless the response asks not to be).
 */
export function nginxConfig(dir: string, ports: { http: number; grpc: number }, upstream: string, idleSeconds: number): string {
  let site = readmeBlock("nginx");
  site = swap(site, "server 127.0.0.1:8080;", `server ${upstream};`);
  site = swap(site, "listen 80;", `listen 127.0.0.1:${ports.http};`);
  site = swap(site, "listen 8081 http2;", `listen 127.0.0.1:${ports.grpc} http2;`);
  site = swap(site, " 60s;", ` ${idleSeconds}s;`, 4);
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${join(dir, t)};`).join("\n");
  return `# nginx in front of opengms (test/helpers/proxies.ts): the README's configuration inside
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} info;
events { worker_connections 512; }
http {
  access_log ${join(dir, "access.log")};
${temp}
  gzip on;
  gzip_min_length 1;
  gzip_types application/json application/connect+json application/connect+proto application/grpc-web+proto application/grpc-web-text;
${site.replace(/^/gm, "  ")}}
`;
}

/** startNginx runs the README's nginx in front of the server at `upstreamPort` on 127.0.0.1, cutting responses idle for `idleSeconds`. */
export async function startNginx(upstreamPort: number, idleSeconds: number): Promise<RunningProxy> {
  const dir = workDir("nginx");
  const ports = { http: await freePort(), grpc: await freePort() };
  const config = join(dir, "nginx.conf");
  writeFileSync(config, nginxConfig(dir, ports, `127.0.0.1:${upstreamPort}`, idleSeconds));
  return run("nginx", ["-p", dir, "-c", config, "-g", "daemon off;"], dir, ports, config, () => readIfThere(join(dir, "error.log")));
}

/** haproxyConfig is the README's HAProxy configuration with this test's ports and idle timeout. */
export function haproxyConfig(port: number, upstream: string, idleSeconds: number): string {
  let cfg = readmeBlock("haproxy");
  cfg = swap(cfg, "bind :80", `bind 127.0.0.1:${port}`);
  cfg = swap(cfg, "server opengms 127.0.0.1:8080", `server opengms ${upstream}`);
  cfg = swap(cfg, " 60s", ` ${idleSeconds}s`, 2);
  return `# HAProxy in front of opengms (test/helpers/proxies.ts): the README's configuration
global
  maxconn 512
${cfg}`;
}

/** startHaproxy runs the README's HAProxy in front of the server at `upstreamPort` on 127.0.0.1, cutting a side idle for `idleSeconds`. */
export async function startHaproxy(upstreamPort: number, idleSeconds: number): Promise<RunningProxy> {
  const dir = workDir("haproxy");
  const port = await freePort();
  const config = join(dir, "haproxy.cfg");
  writeFileSync(config, haproxyConfig(port, `127.0.0.1:${upstreamPort}`, idleSeconds));
  return run("haproxy", ["-db", "-f", config], dir, { http: port, grpc: port }, config, () => "");
}

/** workDir makes the proxy's folder; nginx's workers (nobody, when the test runs as root) must reach it. */
function workDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `opengms-${name}-`));
  chmodSync(dir, 0o755);
  return dir;
}

function readIfThere(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** run starts the proxy's process and waits until its port answers; its output is kept for the log. */
async function run(command: string, args: string[], dir: string, ports: { http: number; grpc: number }, config: string, fileLog: () => string): Promise<RunningProxy> {
  let output = "";
  const child: ChildProcess = spawn(`/usr/sbin/${command}`, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  let exited: number | null | undefined;
  const gone = new Promise<void>((resolve) =>
    child.once("exit", (code) => {
      exited = code;
      resolve();
    }),
  );
  const log = () => output + fileLog();
  try {
    for (const port of new Set([ports.http, ports.grpc])) {
      await waitFor(`${command} on port ${port}`, async () => {
        if (exited !== undefined) throw new Error(`${command} exited (${exited}): ${log()}`);
        return (await connectOutcome(port)) === "connected";
      });
    }
  } catch (e) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url: `http://127.0.0.1:${ports.http}`,
    grpcUrl: `http://127.0.0.1:${ports.grpc}`,
    config,
    log,
    async stop() {
      if (exited === undefined) child.kill("SIGTERM");
      await gone;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
