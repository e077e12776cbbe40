import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import type * as tls from "node:tls";

/** RequestHandler is a Node request handler that serves HTTP/1.1 and HTTP/2 alike. */
export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** ListenOptions say where and how to listen. */
/** localUrl is the URL a client on this host reaches a listener at: a wildcard host as 127.0.0.1, an IPv6 address in brackets. */
export function localUrl(scheme: "http" | "https", host: string, port: number): string {
  const reach = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `${scheme}://${reach.includes(":") ? `[${reach}]` : reach}:${port}`;
}

export interface ListenOptions {
  host: string;
  port: number;
  /**
   * tls, when set, serves TLS with ALPN for h2 and http/1.1; cert and key are PEM file paths. With
   * clientCa (a PEM file of CA certificates), it is mutual TLS: a client must present a certificate
   * signed by one of them, or its handshake fails.
   */
  tls?: { cert: string; key: string; clientCa?: string | undefined } | undefined;
  /** headersTimeoutMs is how long an HTTP/1.1 client may take to send a request's headers (default 30 s). */
  headersTimeoutMs?: number | undefined;
  /** limits bound what a connection and a peer may hold, and for how long (defaults: CONNECTION_DEFAULTS). */
  limits?: ConnectionLimits | undefined;
  /** log receives the warnings about peers over a cap (rate-limited). */
  log?: WarnLog | undefined;
  /** capNames are the settings the caps' warnings name (default: the main listener's, server.max_connections...). */
  capNames?: Partial<CapNames> | undefined;
}

/** CapNames name, in a warning, the setting each cap comes from. */
export interface CapNames {
  maxConnections: string;
  maxConnectionsPerPeer: string;
  maxStreamsPerPeer: string;
}

/** SERVER_CAP_NAMES are the main listener's settings (server.*). */
const SERVER_CAP_NAMES: CapNames = {
  maxConnections: "server.max_connections",
  maxConnectionsPerPeer: "server.max_connections_per_peer",
  maxStreamsPerPeer: "server.max_streams_per_peer",
};

/** WarnLog is the part of a logger listen uses. */
export interface WarnLog {
  warn(obj: object, msg: string): void;
}

/** ConnectionLimits bound connections and streams; every field has a default in CONNECTION_DEFAULTS. */
export interface ConnectionLimits {
  /** firstBytesTimeoutMs: a new connection must send enough to be routed (cleartext) or finish its TLS handshake in this time. */
  firstBytesTimeoutMs?: number | undefined;
  /** requestTimeoutMs: a request's headers and body must arrive in full in this time (HTTP/1.1: 408; HTTP/2: RST_STREAM CANCEL). */
  requestTimeoutMs?: number | undefined;
  /** keepAliveTimeoutMs: an HTTP/1.1 connection idle between requests is closed after this. */
  keepAliveTimeoutMs?: number | undefined;
  /** http2IdleTimeoutMs: an HTTP/2 connection without an open stream for this long is sent GOAWAY and closed. */
  http2IdleTimeoutMs?: number | undefined;
  /** maxConnections: open connections in all (default: the open-file limit less a reserve). */
  maxConnections?: number | undefined;
  /** maxConnectionsPerPeer: open connections from one IPv4 address or IPv6 /64. */
  maxConnectionsPerPeer?: number | undefined;
  /** maxStreamsPerConnection: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. */
  maxStreamsPerConnection?: number | undefined;
  /** maxStreamsPerPeer: open HTTP/2 streams from one peer across its connections; more are refused (REFUSED_STREAM). */
  maxStreamsPerPeer?: number | undefined;
  /** unlimitedPeers: addresses or CIDR ranges the per-peer caps do not apply to (a proxy in front, the host itself). */
  unlimitedPeers?: readonly string[] | undefined;
}

/** CONNECTION_DEFAULTS are the limits a listener applies where none is given (maxConnections: see defaultMaxConnections). */
export const CONNECTION_DEFAULTS = {
  firstBytesTimeoutMs: 10_000,
  requestTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
  http2IdleTimeoutMs: 120_000,
  maxConnectionsPerPeer: 256,
  maxStreamsPerConnection: 1_000,
  maxStreamsPerPeer: 5_000,
  unlimitedPeers: ["127.0.0.1", "::1"] as readonly string[],
};

/** DESCRIPTOR_RESERVE is what the default connection cap leaves of the open-file limit for the database, Redis, logs and files. */
const DESCRIPTOR_RESERVE = 64;

/**
 * defaultMaxConnections is the open-file limit of this process less a reserve (a tenth, at least
 * 64), so that connections can never take the descriptors the database and logs need; 10,000
 * where the limit cannot be read.
 */
export function defaultMaxConnections(): number {
  let limit: number | undefined;
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m?.[1] !== undefined) limit = Number(m[1]);
  } catch {
    // not Linux: no /proc
  }
  if (limit === undefined || !Number.isFinite(limit)) return 10_000;
  return Math.max(16, limit - Math.max(DESCRIPTOR_RESERVE, Math.floor(limit / 10)));
}

/**
 * peerOf is the address a peer's connections and streams are counted under: an IPv4 address
 * (IPv4-mapped IPv6 addresses included) as is, an IPv6 address by its /64, where one host's
 * addresses usually come from.
 */
export function peerOf(address: string | undefined): string {
  if (address === undefined || address === "") return "unknown";
  if (address.toLowerCase().startsWith("::ffff:") && net.isIPv4(address.slice(7))) return address.slice(7);
  if (!net.isIPv6(address)) return address;
  const bare = address.split("%")[0] ?? address;
  const [head = "", tail] = bare.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  // An embedded IPv4 tail (::1.2.3.4) lies in the low 64 bits, which the key drops.
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(":")}::/64`;
}

/** blockListOf parses addresses and CIDR ranges into a BlockList; a bad entry throws. */
export function blockListOf(entries: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address = "", prefix] = entry.split("/");
    const family = net.isIPv4(address) ? "ipv4" : net.isIPv6(address) ? "ipv6" : undefined;
    if (family === undefined) throw new Error(`"${entry}" is not an IP address or CIDR range`);
    if (prefix === undefined) {
      list.addAddress(address, family);
      continue;
    }
    const bits = Number(prefix);
    if (!/^[0-9]{1,3}$/.test(prefix) || bits > (family === "ipv4" ? 32 : 128)) throw new Error(`"${entry}": bad prefix length`);
    list.addSubnet(address, bits, family);
  }
  return list;
}

/**
 * capWarner logs a peer over a cap at warn: the first at once, then at most one summary per
 * window (how many were refused, a few of the peers), so a flood does not flood the log.
 */
function capWarner(log: WarnLog | undefined, windowMs = 10_000) {
  const windows = new Map<string, { refused: number; peers: Set<string>; timer: NodeJS.Timeout }>();
  const open = (cap: string, limit: number) => {
    const timer = setTimeout(() => {
      const w = windows.get(cap);
      windows.delete(cap);
      if (w !== undefined && w.refused > 0) {
        log?.warn({ cap, limit, refused: w.refused, peers: [...w.peers] }, "peers over a connection cap were refused");
        open(cap, limit);
      }
    }, windowMs);
    timer.unref();
    windows.set(cap, { refused: 0, peers: new Set(), timer });
  };
  return {
    hit(cap: string, limit: number, peer: string) {
      const w = windows.get(cap);
      if (w === undefined) {
        log?.warn({ cap, limit, peer }, "a peer over a connection cap was refused; more are summarised every 10 s");
        open(cap, limit);
        return;
      }
      w.refused++;
      if (w.peers.size < 5) w.peers.add(peer);
    },
    stop() {
      for (const w of windows.values()) clearTimeout(w.timer);
      windows.clear();
    },
  };
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
 *
 * Every connection is accepted by one net.Server that applies the caps (over-cap connections are
 * reset at once, before a byte is read) and the first-bytes or handshake timeout; nothing a peer
 * holds is unbounded in time: HTTP/1.1 has headers, request and keep-alive timeouts, HTTP/2 a
 * request timeout per stream (until the request's body is complete) and an idle timeout per
 * session (no open stream). An open stream whose request is complete (Subscribe, WatchQueue, a
 * long poll) is not idle; it counts against the stream caps.
 */
export async function listen(rpcHandler: RequestHandler, options: ListenOptions): Promise<Listener> {
  const limits = { ...CONNECTION_DEFAULTS, ...definedOf(options.limits ?? {}) };
  const maxConnections = options.limits?.maxConnections ?? defaultMaxConnections();
  const unlimited = blockListOf(limits.unlimitedPeers);
  const isUnlimited = (address: string | undefined) => {
    if (address === undefined) return false;
    const v4 = address.toLowerCase().startsWith("::ffff:") ? address.slice(7) : address;
    return net.isIPv4(v4) ? unlimited.check(v4, "ipv4") : net.isIPv6(address) && unlimited.check(address, "ipv6");
  };
  const warner = capWarner(options.log);
  const capNames = { ...SERVER_CAP_NAMES, ...definedOf(options.capNames ?? {}) };
  // Node refuses a headers timeout above the request timeout.
  const requestTimeout = limits.requestTimeoutMs;
  const headersTimeout = Math.min(options.headersTimeoutMs ?? 30_000, requestTimeout);
  const checkEvery = Math.max(10, Math.min(1_000, headersTimeout / 2));

  /** The peer of a session and whether the per-peer caps apply to it. */
  const peers = new WeakMap<http2.Http2Session, { peer: string; capped: boolean }>();
  const connectionsOf = new Map<string, number>();
  const streamsOf = new Map<string, number>();
  const release = (counts: Map<string, number>, peer: string) => {
    const n = (counts.get(peer) ?? 1) - 1;
    if (n <= 0) counts.delete(peer);
    else counts.set(peer, n);
  };

  /** The accepted sockets by their peer's address and port: an HTTP/2 session finds its own (with TLS, under the TLS socket). */
  const accepted = new Map<string, net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const idleTimers = new Map<http2.ServerHttp2Session, NodeJS.Timeout>();
  const track = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    const address = session.socket.remoteAddress;
    const raw = accepted.get(`${address}|${session.socket.remotePort}`);
    peers.set(session, { peer: peerOf(address), capped: !isUnlimited(address) });
    // Idle: no open stream. Armed at the start and whenever the last stream closes.
    let open = 0;
    const arm = () => {
      idleTimers.set(
        session,
        setTimeout(() => {
          idleTimers.delete(session);
          if (session.closed || session.destroyed) return;
          // With no stream open, destroy is the graceful close: nghttp2 sends GOAWAY (NO_ERROR) and
          // the socket is ended. A peer that does not read might hold the socket half-closed: the
          // accepted socket is cut a second later whatever happens.
          session.destroy();
          setTimeout(() => raw?.destroy(), 1_000).unref();
        }, limits.http2IdleTimeoutMs).unref(),
      );
    };
    const disarm = () => {
      clearTimeout(idleTimers.get(session));
      idleTimers.delete(session);
    };
    arm();
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      if (open++ === 0) disarm();
      stream.once("close", () => {
        if (--open === 0 && !session.closed && !session.destroyed) arm();
      });
    });
    session.once("close", () => {
      sessions.delete(session);
      disarm();
    });
  };

  // HTTP/2 streams whose request body is not complete yet, with when they started.
  const incomplete = new Map<http2.ServerHttp2Stream, number>();
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const [stream, started] of incomplete) {
        if (stream.destroyed || stream.closed || stream.state.remoteClose) incomplete.delete(stream);
        else if (now - started >= requestTimeout) {
          incomplete.delete(stream);
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }
      }
    },
    Math.max(10, Math.min(1_000, requestTimeout / 4)),
  ).unref();

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
    } else if (req instanceof http2.Http2ServerRequest) {
      const stream = req.stream;
      const who = peers.get(stream.session as http2.Http2Session);
      const capped = who?.capped === true ? who.peer : undefined;
      if (capped !== undefined) {
        const n = streamsOf.get(capped) ?? 0;
        if (n >= limits.maxStreamsPerPeer) {
          warner.hit(capNames.maxStreamsPerPeer, limits.maxStreamsPerPeer, capped);
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return;
        }
        streamsOf.set(capped, n + 1);
      }
      const waiting = !stream.endAfterHeaders;
      if (waiting) incomplete.set(stream, performance.now());
      if (capped !== undefined || waiting) {
        stream.once("close", () => {
          if (capped !== undefined) release(streamsOf, capped);
          if (waiting) incomplete.delete(stream);
        });
      }
    }
    rpcHandler(req, res);
  };

  const h2Settings = { maxConcurrentStreams: limits.maxStreamsPerConnection };
  /** accept hands an admitted connection on. */
  let accept: (socket: net.Socket) => void;

  if (options.tls !== undefined) {
    const secure = http2.createSecureServer(
      {
        cert: readFileSync(options.tls.cert),
        key: readFileSync(options.tls.key),
        ...(options.tls.clientCa === undefined ? {} : { ca: readFileSync(options.tls.clientCa), requestCert: true, rejectUnauthorized: true }),
        allowHTTP1: true,
        ALPNProtocols: ["h2", "http/1.1"],
        handshakeTimeout: limits.firstBytesTimeoutMs,
        settings: h2Settings,
      },
      handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    );
    secure.on("session", track);
    // HTTP/1.1 over TLS (allowHTTP1) reads these as an http.Server would.
    Object.assign(secure, { headersTimeout, requestTimeout, keepAliveTimeout: limits.keepAliveTimeoutMs, connectionsCheckingInterval: checkEvery });
    // A handshake that fails or times out ends its connection; that is no server error.
    secure.on("tlsClientError", (_e: Error, socket: tls.TLSSocket) => socket.destroy());
    // Fed through emit("connection"), the server never listens: start its HTTP/1.1 timeout checks here.
    secure.emit("listening");
    accept = (socket) => secure.emit("connection", socket);
  } else {
    const h2 = http2.createServer({ settings: h2Settings }, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
    h2.on("session", track);
    const plain = http.createServer(
      { headersTimeout, requestTimeout, keepAliveTimeout: limits.keepAliveTimeoutMs, connectionsCheckingInterval: checkEvery },
      handler as http.RequestListener,
    );
    // Fed through emit("connection"), the server never listens, and Node starts the check that
    // enforces headersTimeout (slow-header clients) only on "listening": start it here.
    plain.emit("listening");
    accept = (socket) => {
      // Too little to route within the first-bytes timeout (nothing, or a dribbled preface): cut.
      const timer = setTimeout(() => socket.destroy(), limits.firstBytesTimeoutMs);
      let seen = Buffer.alloc(0);
      const route = (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        const n = Math.min(seen.length, PREFACE.length);
        const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
        if (isH2 && seen.length < PREFACE.length) return; // not decided yet: wait for more bytes
        clearTimeout(timer);
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
      socket.once("close", () => clearTimeout(timer));
    };
  }

  const outer = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    const address = socket.remoteAddress;
    if (!isUnlimited(address)) {
      const peer = peerOf(address);
      const n = connectionsOf.get(peer) ?? 0;
      if (n >= limits.maxConnectionsPerPeer) {
        // At once and cheaply: nothing read, a reset rather than a close handshake.
        socket.resetAndDestroy();
        warner.hit(capNames.maxConnectionsPerPeer, limits.maxConnectionsPerPeer, peer);
        return;
      }
      connectionsOf.set(peer, n + 1);
      socket.once("close", () => release(connectionsOf, peer));
    }
    sockets.add(socket);
    const endpoint = `${address}|${socket.remotePort}`;
    accepted.set(endpoint, socket);
    socket.once("close", () => {
      sockets.delete(socket);
      accepted.delete(endpoint);
    });
    accept(socket);
  });
  // Above the global cap, Node closes a connection before it becomes a socket.
  outer.maxConnections = maxConnections;
  outer.on("drop", (data?: { remoteAddress?: string }) => warner.hit(capNames.maxConnections, maxConnections, peerOf(data?.remoteAddress)));

  await new Promise<void>((resolve, reject) => {
    outer.once("error", reject);
    outer.listen(options.port, options.host, () => {
      outer.off("error", reject);
      resolve();
    });
  });
  // Out of descriptors (EMFILE) an accept fails: the server goes on with the connections it has.
  let acceptFailures = 0;
  let acceptLogged = -Infinity;
  outer.on("error", (e: NodeJS.ErrnoException) => {
    acceptFailures++;
    if (performance.now() - acceptLogged < 10_000) return;
    acceptLogged = performance.now();
    options.log?.warn({ code: e.code, failures: acceptFailures, open: sockets.size }, `accepting a connection failed (out of descriptors? see ${capNames.maxConnections})`);
    acceptFailures = 0;
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
      clearInterval(sweep);
      for (const t of idleTimers.values()) clearTimeout(t);
      warner.stop();
      await closed;
    },
  };
}

/** definedOf drops the fields set to undefined, so that they take their defaults. */
function definedOf<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
