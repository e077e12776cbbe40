// bench/h2load.ts drives unary gRPC calls with h2load (nghttp2's HTTP/2 load generator, written in
// C; Debian's nghttp2-client). Where it is installed, it sends the allocation benchmark's calls:
// about 22 µs of CPU per call with its start and its log, where the Node generator
// (bench/grpc-load.ts) spends 150-200 µs that the server and the database would otherwise have on
// this machine's two shared cores. h2load sends one body over and over and cannot read a gRPC
// status, so a load built here takes a `succeeded` count of its own (e.g. the rows the calls
// created) and fails the run when a call did not succeed. Its throughput is over the calls' own
// span in its log, not the time around the h2load process.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { frame } from "./grpc-load.js";
import { readCallLog, type Load } from "./lib.js";

/** H2LOAD is h2load's path, undefined when it is not installed. */
export const H2LOAD: string | undefined = (() => {
  try {
    return execFileSync("sh", ["-c", "command -v h2load"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
})();

/** h2loadVersion is what `h2load --version` prints, for a report's environment. */
export const h2loadVersion = (): string => (H2LOAD === undefined ? "not installed" : execFileSync(H2LOAD, ["--version"], { encoding: "utf8" }).trim());

/** H2loadOptions describe the calls: one gRPC method, one message, over a few connections. */
export interface H2loadOptions {
  url: string;
  /** path is the method's HTTP/2 path, e.g. /gms.v1.AccessService/RequestInteraction. */
  path: string;
  /** message is the request, serialized (toBinary). */
  message: Uint8Array;
  /** connections is the number of HTTP/2 connections; the concurrency is spread over them as streams. */
  connections: number;
  /** dir is a folder for the request body and the per-call log. */
  dir: string;
  /** succeeded, when given, counts the calls that succeeded since the last time it was asked. */
  succeeded?: () => Promise<number>;
}

/** loads counts the loads made, for their file names. */
let loads = 0;

/** h2loadUnary is a load of unary gRPC calls sent by h2load, each answered with HTTP 200 and counted by `succeeded`. */
export function h2loadUnary(o: H2loadOptions): Load {
  if (H2LOAD === undefined) throw new Error("h2load is not installed (Debian: apt-get install nghttp2-client)");
  const h2load = H2LOAD;
  // A body (and logs) of its own per load: several loads may call the same method.
  const body = join(o.dir, `h2load-${++loads}-${o.path.replace(/\W+/g, "-")}.bin`);
  let runs = 0;
  writeFileSync(body, frame(o.message));
  return async (concurrency, durationMs) => {
    if (concurrency % o.connections !== 0) throw new Error(`concurrency ${concurrency} is not a multiple of ${o.connections} connections`);
    await o.succeeded?.();
    // A log of its own per run: h2load appends to an existing one.
    const log = `${body}.${++runs}.log`;
    const args = ["-c", String(o.connections), "-m", String(concurrency / o.connections), "-D", `${Math.round(durationMs)}ms`];
    args.push("-d", body, "-H", "content-type: application/grpc+proto", "-H", "te: trailers", `--log-file=${log}`, `${o.url}${o.path}`);
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(h2load, args, { stdio: ["ignore", "pipe", "pipe"] });
      let text = "";
      child.stdout.on("data", (b: Buffer) => (text += b.toString("utf8")));
      child.stderr.on("data", (b: Buffer) => (text += b.toString("utf8")));
      child.once("error", reject);
      child.once("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`h2load exited with ${code}: ${text}`))));
    });
    // The log: start time (µs since the epoch), HTTP status, µs until the end of the response.
    const lines = readFileSync(log, "utf8");
    rmSync(log);
    const { ops, latency, seconds } = readCallLog(lines, "200", (status) => `h2load: a call was answered with HTTP ${status}`);
    if (ops === 0) throw new Error(`h2load made no call: ${out}`);
    if (o.succeeded !== undefined) {
      // Calls still in flight when h2load stops may succeed unlogged: at most one per stream.
      const ok = await o.succeeded();
      if (ok < ops) throw new Error(`${ops - ok} of ${ops} calls through h2load did not succeed`);
      if (ok > ops + concurrency) throw new Error(`h2load logged ${ops} calls, but ${ok} succeeded`);
    }
    return { ops, latency, seconds };
  };
}
