// `opengms chat watch <endpoint>`: an endpoint's queue, followed until Ctrl-C. WatchQueue sends the
// whole queue on every change (and at once on connecting), so a stream the server ends — a node
// shutting down, a proxy cutting a long stream — is simply opened again: nothing is missed but
// the moments between. The first connection failing is the command failing (exit 4 when the server
// cannot be reached), as for every other command.
import { Code, ConnectError } from "@connectrpc/connect";
import { AgentService, QueueUpdateSchema, type QueueUpdate } from "../../gen/gms/v1/agent_pb.js";
import type { Api } from "./client.js";
import { failureOf } from "./failure.js";
import { cell, duration, json, time, write, type Output } from "./output.js";

/** NAMES_SHOWN is how many waiting customers a line names; the rest are counted. */
const NAMES_SHOWN = 5;
/** RETRY_MS are the pauses before opening the stream again, the last repeated. */
const RETRY_MS = [500, 1_000, 2_000, 5_000, 10_000];

/** queueLine is one update as a person reads it: when, how many wait and for how long, who. */
export function queueLine(u: QueueUpdate): string {
  const head = `${time(u.time)}  ${cell(u.endpoint)}: ${u.waiting.length} waiting`;
  if (u.waiting.length === 0) return `${head}\n`;
  const oldest = u.waiting[0];
  const names = u.waiting.slice(0, NAMES_SHOWN).map((w) => `${cell(w.nickname || "(no name)", 40)} (${duration(Number(w.waitSeconds) * 1000)})`);
  const more = u.waiting.length > NAMES_SHOWN ? `, +${u.waiting.length - NAMES_SHOWN} more` : "";
  return `${head}, oldest ${duration(Number(oldest?.waitSeconds ?? 0n) * 1000)}: ${names.join(", ")}${more}\n`;
}

/**
 * resumable tells a stream's end that opening it again may cure: the server went away or ended it
 * (connect-node reports a connection reset as ABORTED, one refused as UNAVAILABLE).
 */
function resumable(e: unknown): boolean {
  const code = ConnectError.from(e).code;
  return code === Code.Unavailable || code === Code.Aborted || code === Code.Unknown || code === Code.Internal || code === Code.DeadlineExceeded;
}

/**
 * watchQueue prints the endpoint's queue on every change — one line, or one JSON line with --json
 * (heartbeats too, marked) — until SIGINT or SIGTERM, then ends with status 0. A refusal ends it
 * at once with its status; a stream lost after it had delivered is opened again, saying so on stderr.
 */
export async function watchQueue(api: Api, endpoint: string): Promise<Output> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const agent = api.client(AgentService);
  let delivered = false;
  let retry = 0;
  try {
    while (!stop.signal.aborted) {
      try {
        for await (const u of agent.watchQueue({ endpoint }, { signal: stop.signal })) {
          delivered = true;
          retry = 0;
          if (api.json) await write(process.stdout, json(QueueUpdateSchema, u));
          else if (!u.heartbeat) await write(process.stdout, queueLine(u));
        }
        if (stop.signal.aborted) break;
        await write(process.stderr, "opengms: the server ended the stream; opening it again\n");
      } catch (e) {
        if (stop.signal.aborted) break;
        if (!delivered || !resumable(e)) throw e;
        await write(process.stderr, `${failureOf(e, api.url).line}; opening the stream again\n`);
      }
      const pause = RETRY_MS[Math.min(retry++, RETRY_MS.length - 1)] ?? 10_000;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pause);
        stop.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
      });
    }
    return { stdout: "" };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
