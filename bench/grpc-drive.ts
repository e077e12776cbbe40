// bench/grpc-drive.ts runs bench/grpc-drive.c: unary gRPC calls with a body of their own each, sent
// from C on libnghttp2, for calls h2load cannot make (it sends one body over and over). It is
// compiled on first use with the machine's C compiler against Debian's libnghttp2-dev, into a
// folder named after the source's hash; where either is missing, GRPC_DRIVE is undefined and a
// benchmark falls back to the Node generator (bench/grpc-load.ts).
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { frame } from "./grpc-load.js";
import { readCallLog, type Load } from "./lib.js";

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), "grpc-drive.c");

/** build compiles grpc-drive.c once per source version; undefined (with the reason) when it cannot. */
function build(): { path?: string; reason?: string } {
  const source = readFileSync(SOURCE);
  const dir = join(tmpdir(), `opengms-grpc-drive-${createHash("sha256").update(source).digest("hex").slice(0, 16)}`);
  const path = join(dir, "grpc-drive");
  if (existsSync(path)) return { path };
  mkdirSync(dir, { recursive: true });
  const partial = `${path}.${process.pid}`;
  try {
    execFileSync("cc", ["-O2", "-Wall", "-o", partial, SOURCE, "-lnghttp2"], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString("utf8").trim() ?? String(e);
    return { reason: `cc could not build bench/grpc-drive.c (Debian: apt-get install gcc libnghttp2-dev): ${stderr.split("\n")[0]}` };
  }
  // Several benchmark processes may build at once: each writes its own file, the rename is atomic.
  renameSync(partial, path);
  return { path };
}

const built = build();
/** GRPC_DRIVE is the compiled generator's path, undefined when it could not be built (GRPC_DRIVE_MISSING says why). */
export const GRPC_DRIVE: string | undefined = built.path;
export const GRPC_DRIVE_MISSING: string | undefined = built.reason;

/** grpcDriveVersion is what `grpc-drive --version` prints (with libnghttp2's version), for a report's environment. */
export const grpcDriveVersion = (): string => (GRPC_DRIVE === undefined ? "not built" : execFileSync(GRPC_DRIVE, ["--version"], { encoding: "utf8" }).trim());

/** GrpcDriveOptions describe the calls: one gRPC method, a message per call, over a few connections. */
export interface GrpcDriveOptions {
  url: string;
  /** path is the method's HTTP/2 path, e.g. /gms.v1.AccessService/MatchInteraction. */
  path: string;
  /** messages are the requests, serialized (toBinary), one per call in order: every run starts from the first. */
  messages: readonly Uint8Array[];
  /** connections is the number of HTTP/2 connections; the concurrency is spread over them as streams. */
  connections: number;
  /** dir is a folder for the bodies and the per-call logs. */
  dir: string;
  /** headers go on every call, e.g. { authorization: "Bearer …" }. */
  headers?: Record<string, string>;
}

/** loads counts the loads made, for their file names. */
let loads = 0;

/**
 * grpcDriveUnary is a load of unary gRPC calls sent by grpc-drive, each with the next of
 * `messages`; a call answered with a grpc-status other than OK fails the run, and so do messages
 * used up before `durationMs` passed. A durationMs of 0 sends every message once.
 */
export function grpcDriveUnary(o: GrpcDriveOptions): Load {
  if (GRPC_DRIVE === undefined) throw new Error(GRPC_DRIVE_MISSING ?? "grpc-drive is not built");
  const drive = GRPC_DRIVE;
  const url = new URL(o.url);
  const bodies = join(o.dir, `grpc-drive-${++loads}-${o.path.replace(/\W+/g, "-")}.bin`);
  writeFileSync(bodies, Buffer.concat(o.messages.map((m) => frame(m))));
  const headers = Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}`);
  let runs = 0;
  return async (concurrency, durationMs) => {
    if (concurrency % o.connections !== 0) throw new Error(`concurrency ${concurrency} is not a multiple of ${o.connections} connections`);
    const log = `${bodies}.${++runs}.log`;
    const args = [url.hostname, url.port, o.path, String(o.connections), String(concurrency / o.connections), String(Math.round(durationMs)), bodies, log, ...headers];
    await new Promise<void>((resolve, reject) => {
      const child = spawn(drive, args, { stdio: ["ignore", "ignore", "pipe"] });
      let text = "";
      child.stderr.on("data", (b: Buffer) => (text += b.toString("utf8")));
      child.once("error", reject);
      child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`grpc-drive exited with ${code}: ${text.trim()}`))));
    });
    const lines = readFileSync(log, "utf8");
    rmSync(log);
    const driven = readCallLog(lines, "0", (status) => `grpc-drive: a call ended with grpc-status ${status}`);
    if (driven.ops === 0) throw new Error("grpc-drive made no call");
    return driven;
  };
}
