import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";

/** RequestHandler is a Node request handler that serves HTTP/1.1 and HTTP/2 alike. */
export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** ListenOptions say where and how to listen. */
export interface ListenOptions {
  host: string;
  port: number;
  /** tls, when set, serves TLS with ALPN for h2 and http/1.1; cert and key are PEM file paths. */
  tls?: { cert: string; key: string } | undefined;
  /** headersTimeoutMs is how long an HTTP/1.1 client may take to send a request's headers (default 30 s). */
  headersTimeoutMs?: number | undefined;
}

/** Listener is a bound port serving every protocol. */
export interface Listener {
  /** port is the bound port (useful when listening on port 0). */
  readonly port: number;
  /** stopAccepting closes the port to new connections; open ones go on. */
  stopAccepting(): Promise<void>;
  /**
   * closeConnections ends the open connections: HTTP/2 with GOAWAY, HTTP/1.1 once its response in
   * progress is sent, idle ones at once; whatever is still open after graceMs is cut.
   */
  closeConnections(graceMs: number): Promise<void>;
}

/** The client connection preface every HTTP/2 prior-knowledge connection starts with. */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * listen serves `handler` on one port for gRPC (HTTP/2), and Connect and gRPC-Web over HTTP/1.1 and
 * HTTP/2. In cleartext, Node's http2 server does not take HTTP/1.1, so each new connection is routed
 * by its first bytes: the HTTP/2 preface goes to an http2 server, anything else to an http server.
 * With TLS, ALPN does the same job inside one secure http2 server that allows HTTP/1.1.
 */
export async function listen(rpcHandler: RequestHandler, options: ListenOptions): Promise<Listener> {
  const sessions = new Set<http2.ServerHttp2Session>();
  const track = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  };
  // Every accepted connection, and the HTTP/1.1 responses in progress: an http.Server fed through
  // emit("connection") never listens, so its own connection tracking (closeAllConnections,
  // closeIdleConnections) stays off, and a shutdown has to do that bookkeeping itself.
  const sockets = new Set<net.Socket>();
  const responding = new Set<http.ServerResponse>();
  let closing = false;
  const handler: RequestHandler = (req, res) => {
    if (req instanceof http.IncomingMessage && res instanceof http.ServerResponse) {
      responding.add(res);
      res.once("close", () => responding.delete(res));
      const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => http.ServerResponse;
      res.writeHead = ((...args: unknown[]) => {
        // A body the handler stopped reading (refused mid-way, e.g. above the read limit) leaves
        // the connection unread by Node: the client's next request on it would stall, so close it.
        if (closing || (req.destroyed && !req.readableEnded)) res.shouldKeepAlive = false;
        return writeHead(...args);
      }) as typeof res.writeHead;
    }
    rpcHandler(req, res);
  };
  let outer: net.Server;

  if (options.tls !== undefined) {
    const secure = http2.createSecureServer(
      { cert: readFileSync(options.tls.cert), key: readFileSync(options.tls.key), allowHTTP1: true, ALPNProtocols: ["h2", "http/1.1"] },
      handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
    secure.on("session", track);
    outer = secure;
  } else {
    const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
    h2.on("session", track);
    const headersTimeout = options.headersTimeoutMs ?? 30_000;
    const plain = http.createServer(
      { headersTimeout, requestTimeout: 0, connectionsCheckingInterval: Math.max(10, Math.min(1_000, headersTimeout / 2)) },
      handler as http.RequestListener,
    );
    // Fed through emit("connection"), the server never listens, and Node starts the check that
    // enforces headersTimeout (slow-header clients) only on "listening": start it here.
    plain.emit("listening");
    outer = net.createServer((socket) => {
      let seen = Buffer.alloc(0);
      const route = (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        const n = Math.min(seen.length, PREFACE.length);
        const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
        if (isH2 && seen.length < PREFACE.length) return; // not decided yet: wait for more bytes
        socket.off("data", route);
        socket.pause();
        socket.unshift(seen);
        if (isH2) {
          // The http2 session takes over the socket's handle and reads the bytes put back first.
          h2.emit("connection", socket);
        } else {
          plain.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", route);
      socket.on("error", () => socket.destroy());
    });
  }

  outer.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    outer.once("error", reject);
    outer.listen(options.port, options.host, () => {
      outer.off("error", reject);
      resolve();
    });
  });

  let closed: Promise<void> | undefined;
  return {
    port: (outer.address() as AddressInfo).port,
    stopAccepting() {
      // net.Server.close calls back only once every connection is gone; closeConnections awaits that.
      closed ??= new Promise((resolve) => outer.close(() => resolve()));
      return Promise.resolve();
    },
    async closeConnections(graceMs) {
      closing = true;
      closed ??= new Promise((resolve) => outer.close(() => resolve()));
      for (const s of sessions) s.close();
      const deadline = Date.now() + graceMs;
      // A session destroyed on our side has nothing left to finish, even while its peer keeps the socket.
      const busy = () => responding.size > 0 || [...sessions].some((s) => !s.destroyed);
      while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // What is left is idle (HTTP/1.1 keep-alive, or never sent a request) or past the grace: cut it.
      for (const s of sessions) s.destroy();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
