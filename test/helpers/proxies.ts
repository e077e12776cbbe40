// Real reverse proxies for tests: Debian's nginx and HAProxy, run as this test's own processes on
// loopback, each with a configuration file written into a temporary folder and a free port, never
// the system's service. The configurations are the README's ("Proxies and load balancers"), with
// short timeouts so that a test sees an idle stream cut in seconds.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectOutcome, freePort, waitFor } from "./calls.js";

/** RunningProxy is a proxy process in front of an opengms server. */
export interface RunningProxy {
  /** url is the proxy's base URL (http://127.0.0.1:<port>). */
  readonly url: string;
  readonly port: number;
  /** config is the configuration file the proxy runs. */
  readonly config: string;
  /** log is what the proxy wrote to its error log and its output so far. */
  log(): string;
  stop(): Promise<void>;
}

/** NginxOptions choose what nginx does in front of the server. */
export interface NginxOptions {
  /**
   * idleSeconds is proxy_read_timeout (grpc_read_timeout): a response the server sends nothing on
   * for this long is cut.
   */
  idleSeconds: number;
  /** grpc serves gRPC clients over HTTP/2 (cleartext) with grpc_pass; else HTTP/1.1 with proxy_pass and its buffering on. */
  grpc?: boolean;
}

/**
 * nginxConfig is the configuration of an nginx in front of opengms at `upstream` (host:port). Over
 * HTTP/1.1 (browsers: Connect and gRPC-Web) nginx buffers proxied responses by default; a stream's
 * `X-Accel-Buffering: no` turns that off for it, so the configuration needs nothing for streams
 * but a read timeout above the heartbeat interval.
 */
export function nginxConfig(dir: string, port: number, upstream: string, options: NginxOptions): string {
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${join(dir, t)};`).join("\n");
  const location = options.grpc
    ? `    location / {
      grpc_pass grpc://opengms;
      grpc_read_timeout ${options.idleSeconds}s;
      grpc_send_timeout ${options.idleSeconds}s;
    }`
    : `    location / {
      proxy_pass http://opengms;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
      proxy_read_timeout ${options.idleSeconds}s;
      proxy_send_timeout ${options.idleSeconds}s;
    }`;
  return `# nginx in front of opengms (test/helpers/proxies.ts)
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} info;
events { worker_connections 512; }
http {
  access_log ${join(dir, "access.log")};
  gzip on; gzip_min_length 1; gzip_types application/connect+json application/connect+proto application/grpc-web+proto application/grpc-web-text;
${temp}
  upstream opengms {
    server ${upstream};
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port}${options.grpc ? " http2" : ""};
${location}
  }
}
`;
}

/** startNginx runs nginx in front of the server at `upstreamPort` on 127.0.0.1. */
export async function startNginx(upstreamPort: number, options: NginxOptions): Promise<RunningProxy> {
  const dir = workDir("nginx");
  const port = await freePort();
  const config = join(dir, "nginx.conf");
  writeFileSync(config, nginxConfig(dir, port, `127.0.0.1:${upstreamPort}`, options));
  return run("nginx", ["-p", dir, "-c", config, "-g", "daemon off;"], dir, port, config, () => readIfThere(join(dir, "error.log")));
}

/** HaproxyOptions choose HAProxy's timeouts. */
export interface HaproxyOptions {
  /** idleSeconds is `timeout client` and `timeout server`: a side that sends nothing for this long is cut. */
  idleSeconds: number;
}

/**
 * haproxyConfig is the configuration of an HAProxy in front of opengms at `upstream` (host:port):
 * HTTP/1.1 and HTTP/2 (cleartext, so gRPC) on one port, HTTP/2 to opengms.
 */
export function haproxyConfig(port: number, upstream: string, options: HaproxyOptions): string {
  return `# HAProxy in front of opengms (test/helpers/proxies.ts)
global
  maxconn 512
defaults
  mode http
  timeout connect 5s
  timeout client ${options.idleSeconds}s
  timeout server ${options.idleSeconds}s
frontend gms
  bind 127.0.0.1:${port}
  default_backend opengms
backend opengms
  server opengms ${upstream} proto h2
`;
}

/** startHaproxy runs HAProxy in front of the server at `upstreamPort` on 127.0.0.1. */
export async function startHaproxy(upstreamPort: number, options: HaproxyOptions): Promise<RunningProxy> {
  const dir = workDir("haproxy");
  const port = await freePort();
  const config = join(dir, "haproxy.cfg");
  writeFileSync(config, haproxyConfig(port, `127.0.0.1:${upstreamPort}`, options));
  return run("haproxy", ["-db", "-f", config], dir, port, config, () => "");
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
async function run(command: string, args: string[], dir: string, port: number, config: string, fileLog: () => string): Promise<RunningProxy> {
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
    await waitFor(`${command} on port ${port}`, async () => {
      if (exited !== undefined) throw new Error(`${command} exited (${exited}): ${log()}`);
      return (await connectOutcome(port)) === "connected";
    });
  } catch (e) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    config,
    log,
    async stop() {
      if (exited === undefined) child.kill("SIGTERM");
      await gone;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
