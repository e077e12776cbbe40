// Real SIP software around opengms' IVR endpoint, for test/ivr-sip.test.ts and bench/ivr.ts:
// Debian's Kamailio (kamailio, with http_client from kamailio-utils-modules) run on the very
// kamailio.cfg beside this file, and SIPp (sip-tester) on uac.xml (the caller) and uas.xml (the
// IVR). Everything listens on 127.0.0.1, on free ports.
import { spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));

/** KAMAILIO_CFG, UAC_XML and UAS_XML are the configuration and scenarios the tests run (and the README shows). */
export const KAMAILIO_CFG = join(HERE, "kamailio.cfg");
export const UAC_XML = join(HERE, "uac.xml");
export const UAS_XML = join(HERE, "uas.xml");

/** hasHttpClient tells whether Kamailio's http_client module (Debian: kamailio-utils-modules) is installed. */
function hasHttpClient(): boolean {
  const lib = "/usr/lib";
  const dirs = [join(lib, "kamailio", "modules"), ...readdirSync(lib).map((d) => join(lib, d, "kamailio", "modules"))];
  return dirs.some((d) => existsSync(join(d, "http_client.so")));
}

/** onPath finds a program on PATH (and in the sbin folders, where Debian puts kamailio). */
function onPath(name: string): string | undefined {
  const dirs = [...(process.env["PATH"] ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  return dirs.filter((d) => d.startsWith("/")).map((d) => join(d, name)).find((p) => existsSync(p));
}

/** KAMAILIO and SIPP are the programs, when installed. */
export const KAMAILIO = onPath("kamailio");
export const SIPP = onPath("sipp");

/** sipToolsMissing says what is not installed ("apt-get install ..."), or undefined when everything is. */
export function sipToolsMissing(): string | undefined {
  const missing = [
    ...(KAMAILIO === undefined ? ["kamailio"] : []),
    ...(KAMAILIO !== undefined && !hasHttpClient() ? ["kamailio-utils-modules"] : []),
    ...(SIPP === undefined ? ["sip-tester"] : []),
  ];
  return missing.length === 0 ? undefined : `apt-get install ${missing.join(" ")}`;
}

/** Proc is a program this harness started: its output so far, and a stop that waits for its end. */
export interface Proc {
  output(): string;
  stop(): Promise<void>;
}

/** started spawns a program, keeps its output (stderr and stdout, when not ignored) and stops it with SIGTERM. */
function started(program: string, args: readonly string[], cwd: string, keepStdout: boolean): Proc & { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn(program, args, { cwd, stdio: ["ignore", keepStdout ? "pipe" : "ignore", "pipe"] });
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => chunks.push(c));
  child.stderr?.on("data", (c: Buffer) => chunks.push(c));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    exited,
    output: () => Buffer.concat(chunks).toString("utf8"),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** sipProbe sends an OPTIONS to a SIP port and resolves with the status line of its answer, or undefined after `ms`. */
export function sipProbe(port: number, ms = 500): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => finish(undefined), ms);
    const finish = (line: string | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(line);
    };
    socket.once("message", (m) => finish(m.toString("utf8").split("\r\n")[0]));
    socket.bind(0, "127.0.0.1", () => {
      const local = socket.address().port;
      const callId = `probe-${process.pid}-${Date.now()}`;
      const msg = [
        `OPTIONS sip:probe@127.0.0.1:${port} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.1:${local};branch=z9hG4bK${callId}`,
        "Max-Forwards: 70",
        `From: <sip:probe@127.0.0.1:${local}>;tag=${callId}`,
        `To: <sip:probe@127.0.0.1:${port}>`,
        `Call-ID: ${callId}`,
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
      socket.send(msg, port, "127.0.0.1");
    });
  });
}

/** udpBound tells whether something listens on a UDP port of 127.0.0.1 (binding it fails). */
export function udpBound(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    socket.once("error", () => resolve(true));
    socket.bind(port, "127.0.0.1", () => socket.close(() => resolve(false)));
  });
}

/** until polls `probe` every 50 ms until it holds, failing with `what` and the process's output after `ms`. */
async function until(what: string, probe: () => Promise<boolean>, proc: Proc, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what} did not start in ${ms} ms:\n${proc.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** KamailioOptions are the values kamailio.cfg takes as -A defines. */
export interface KamailioOptions {
  port: number;
  /** gmsMatchUrl is opengms' IVR endpoint. */
  gmsMatchUrl: string;
  /** authHeader is the header that carries the IVR's key. */
  authHeader: string;
  /** ivrUri is where matched calls are forwarded (the SIPp UAS). */
  ivrUri: string;
  /** dir is a folder of the test's own for Kamailio's runtime files. */
  dir: string;
}

/** startKamailio runs kamailio.cfg in the foreground, logging to stderr, and waits until it answers SIP. */
export async function startKamailio(o: KamailioOptions): Promise<Proc> {
  if (KAMAILIO === undefined) throw new Error("kamailio is not installed");
  const args = [
    "-f", KAMAILIO_CFG,
    "-DD", "-E",
    "-l", `udp:127.0.0.1:${o.port}`,
    "-Y", o.dir,
    "-w", o.dir,
    "-m", "64", "-M", "8",
    "-A", `GMS_MATCH_URL="${o.gmsMatchUrl}"`,
    "-A", `GMS_AUTH_HEADER="${o.authHeader}"`,
    "-A", `IVR_URI="${o.ivrUri}"`,
  ];
  const proc = started(KAMAILIO, args, o.dir, true);
  // Anything but a method it serves is refused with 405: an answer means its workers are up.
  await until("kamailio", async () => (await sipProbe(o.port)) !== undefined, proc);
  return proc;
}

/** startUas runs SIPp as the IVR (uas.xml) on a port, logging each call it takes to `logFile`. */
export async function startUas(port: number, dir: string, logFile: string): Promise<Proc> {
  if (SIPP === undefined) throw new Error("sipp is not installed");
  const proc = started(SIPP, ["-sf", UAS_XML, "-i", "127.0.0.1", "-p", String(port), "-nostdin", "-trace_logs", "-log_file", logFile, "-trace_err", "-error_file", join(dir, "uas-errors.log")], dir, false);
  await until("sipp (UAS)", () => udpBound(port), proc);
  return proc;
}

/** Call is one call SIPp places (uac.xml) through Kamailio. */
export interface Call {
  /** accessNumber is the number dialled. */
  accessNumber: string;
  /** caller is the caller's number. */
  caller: string;
  /** code is the access code typed; empty or absent for none. */
  code?: string;
}

/** CallOptions describe a run of SIPp as the caller: its calls, in order, at `rate` per second (default 10). */
export interface CallOptions {
  kamailioPort: number;
  calls: readonly Call[];
  rate?: number;
  dir: string;
}

/** CallOutcome is one call as the caller logged it: its Call-ID, the final status, and the reason or Retry-After given. */
export interface CallOutcome {
  callId: string;
  status: number;
  reason?: string;
  retry?: number;
}

let runs = 0;

/** placeCalls runs SIPp as the caller and gives each call's outcome, and SIPp's exit code (0: every call went as the scenario says). */
export async function placeCalls(o: CallOptions): Promise<{ outcomes: CallOutcome[]; exitCode: number | null; output: string }> {
  if (SIPP === undefined) throw new Error("sipp is not installed");
  const run = `uac-${process.pid}-${++runs}`;
  const logFile = join(o.dir, `${run}.log`);
  const injection = join(o.dir, `${run}.csv`);
  // SIPp's injection file: one line a call, fields separated by ";".
  writeFileSync(injection, ["SEQUENTIAL", ...o.calls.map((c) => `${c.accessNumber};${c.caller};${c.code ?? ""};`)].join("\n") + "\n");
  const args = [
    `127.0.0.1:${o.kamailioPort}`,
    "-sf", UAC_XML,
    "-inf", injection,
    "-m", String(o.calls.length),
    "-r", String(o.rate ?? 10),
    "-l", "50",
    "-i", "127.0.0.1",
    "-p", "0",
    "-nostdin",
    "-trace_logs", "-log_file", logFile,
    "-timeout", `${Math.max(30, Math.ceil(o.calls.length / 10))}s`, "-timeout_error",
  ];
  const proc = started(SIPP, args, o.dir, true);
  const exitCode = await proc.exited;
  const text = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
  const outcomes = [...text.matchAll(/call=(\S+) status=(\d+)(?: reason=(\S*))?(?: retry=(\S*))?/g)].map((m) => ({
    callId: m[1] ?? "",
    status: Number(m[2]),
    ...(m[3] === undefined ? {} : { reason: m[3] }),
    ...(m[4] === undefined ? {} : { retry: Number(m[4]) }),
  }));
  return { outcomes, exitCode, output: proc.output() };
}

/** forwarded reads the UAS's log: each call it took, with the session and data ids Kamailio put in its headers. */
export function forwarded(logFile: string): { callId: string; sessionId: string; dataId: string }[] {
  const text = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
  return [...text.matchAll(/call=(\S+) session=(\S+) data=(\S+)/g)].map((m) => ({ callId: m[1] ?? "", sessionId: m[2] ?? "", dataId: m[3] ?? "" }));
}

/** matchTimes reads Kamailio's log: the time (µs) each http_client_query to opengms took, as Kamailio measured it. */
export function matchTimes(kamailioOutput: string): { callId: string; status: number; us: number; answer: string }[] {
  return [...kamailioOutput.matchAll(/gms-match call=(\S+) status=(-?\d+) us=(\d+) answer=([^\n]*)/g)].map((m) => ({
    callId: m[1] ?? "",
    status: Number(m[2]),
    us: Number(m[3]),
    answer: m[4] ?? "",
  }));
}
