// bench/node-process.ts is an opengms server process for bench/nodes.ts: what `src/main.ts serve`
// does (configuration file, database, startServer), plus answers to its parent over IPC, so the
// parent can measure a server that does not share its process. Run with --expose-gc.
// With "bare" after the configuration path it serves instead, through connect-node on the same
// listen(), a do-nothing ChatService.Subscribe (one event, then open until cancelled) and canned
// AccessService answers: what an open stream or a unary call costs before opengms adds anything.
// With "floor", listen() alone answers every request with gRPC headers and that one event and holds
// it open: the HTTP/2 stream and Node's request/response objects, the least a handler can cost (and
// answers AccessService calls with a canned reply, for bench/access.ts).
import { randomUUID } from "node:crypto";
import type { Http2ServerResponse } from "node:http2";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pino } from "pino";
import { AccessService, RequestInteractionResponseSchema } from "../gen/gms/v1/access_pb.js";
import { ChatEventSchema, ChatEventType } from "../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { loadConfig } from "../src/config.js";
import { listen, type Listener, type RequestHandler } from "../src/listen.js";
import { startServer } from "../src/server.js";
import { openDatabase } from "../src/store/database.js";
import { clockFromEnv } from "./clock.js";

/** NodeRequest is what the parent asks, by id. */
export type NodeRequest = { id: number; type: "stats"; gc: boolean } | { id: number; type: "stop" };

/** NodeStats is the answer to "stats": this process's memory (after a full GC when asked) and its bus. */
export interface NodeStats {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** listeners is the bus's live subscriptions (every open stream and waiting call holds one); the bare server's open streams. */
  listeners: number;
}

/** NodeMessage is what this process tells its parent. */
export type NodeMessage = { type: "ready"; url: string } | { type: "reply"; id: number; stats?: NodeStats };

/** Served is the running server, whichever kind. */
interface Served {
  url: string;
  listeners(): number;
  shutdown(): Promise<void>;
}

const send = (m: NodeMessage) => process.send?.(m);

async function serveOpengms(path: string): Promise<Served> {
  const config = loadConfig({ path });
  const log = pino({ level: config.log.level, base: { service: "opengms-bench-node" } });
  // The parent migrated the database before starting its nodes.
  const db = await openDatabase(config.database.url, { migrate: false });
  // GMS_BENCH_CLOCK lets a benchmark run this server on the fast clock it runs itself.
  const server = await startServer({ config, db, log, clock: clockFromEnv() });
  return { url: server.url, listeners: () => server.app.bus.listenerCount(), shutdown: () => server.shutdown() };
}

/** grantReply is a canned RequestInteraction reply, shaped like a real one, for the bare and floor servers. */
function grantReply(): MessageInitShape<typeof RequestInteractionResponseSchema> {
  return {
    session: { id: randomUUID(), service: "request-interaction", dataId: randomUUID(), expiresAt: timestampNow() },
    access: { accessNumber: "+18009000000", resourceGroup: "alloc", expiresAt: timestampNow(), expirationSeconds: 1n },
    ttlSeconds: 60n,
  };
}

async function serveBare(): Promise<Served> {
  let open = 0;
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(ChatService, {
        async *subscribe(_req, ctx) {
          open++;
          try {
            yield { position: 1n, type: ChatEventType.PARTICIPANT_JOINED };
            await new Promise<void>((resolve) => {
              if (ctx.signal.aborted) resolve();
              else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
            });
          } finally {
            open--;
          }
        },
      });
      // Canned answers shaped like real ones: what a unary call costs before opengms does anything.
      router.service(AccessService, {
        requestInteraction: grantReply,
        matchInteraction: (req) => ({ matches: [{ sessionId: randomUUID(), dataId: randomUUID(), service: "request-interaction", phoneNumber: req.accessNumber }] }),
      });
    },
  }) as RequestHandler;
  const listener = await listen(handler, { host: "127.0.0.1", port: Number(process.env["GMS_PORT"] ?? 0) });
  return servedBy(listener, () => open);
}

/** servedBy is a bare server on its listener; `open` counts its open streams. */
function servedBy(listener: Listener, open: () => number): Served {
  return {
    url: `http://127.0.0.1:${listener.port}`,
    listeners: open,
    async shutdown() {
      await listener.stopAccepting();
      await listener.closeConnections(1000);
    },
  };
}

/**
 * serveFloor holds every request open after gRPC headers and one event, with nothing but listen().
 * An AccessService call is answered at once instead, with a canned reply read from no request and
 * OK trailers: the least a unary gRPC call costs on Node's HTTP/2.
 */
async function serveFloor(): Promise<Served> {
  let open = 0;
  const event = encodeEnvelope(0, toBinary(ChatEventSchema, create(ChatEventSchema, { position: 1n, type: ChatEventType.PARTICIPANT_JOINED })));
  const granted = () => encodeEnvelope(0, toBinary(RequestInteractionResponseSchema, create(RequestInteractionResponseSchema, grantReply())));
  const listener = await listen(
    (req, res) => {
      // Only gRPC clients call it: HTTP/2.
      const stream = res as Http2ServerResponse;
      if (req.url?.startsWith("/gms.v1.AccessService/") === true) {
        req.resume();
        req.once("end", () => {
          stream.writeHead(200, { "content-type": "application/grpc+proto" });
          stream.write(granted());
          stream.addTrailers({ "grpc-status": "0" });
          stream.end();
        });
        return;
      }
      open++;
      stream.once("close", () => open--);
      req.resume();
      stream.writeHead(200, { "content-type": "application/grpc+proto" });
      stream.write(event);
    },
    { host: "127.0.0.1", port: Number(process.env["GMS_PORT"] ?? 0) },
  );
  return servedBy(listener, () => open);
}

const served = process.argv[3] === "bare" ? await serveBare() : process.argv[3] === "floor" ? await serveFloor() : await serveOpengms(process.argv[2]);
const gc = (globalThis as { gc?: () => void }).gc;

process.on("message", (m: NodeRequest) => {
  if (m.type === "stop") {
    void served.shutdown().finally(() => {
      send({ type: "reply", id: m.id });
      process.exit(0);
    });
    return;
  }
  if (m.gc) {
    if (gc === undefined) throw new Error("run this process with --expose-gc");
    // Twice: the first full collection's finalizers free more for the second.
    gc();
    gc();
  }
  const mem = process.memoryUsage();
  send({ type: "reply", id: m.id, stats: { rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, listeners: served.listeners() } });
});
// The parent gone (even killed), this process goes too.
process.on("disconnect", () => process.exit(0));
send({ type: "ready", url: served.url });
