import { setMaxListeners } from "node:events";
import type { DescService } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { cors as connectCors, type ConnectRouter, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { AdminService } from "../gen/gms/v1/admin_pb.js";
import { AgentService } from "../gen/gms/v1/agent_pb.js";
import { ChatService } from "../gen/gms/v1/chat_pb.js";
import { SessionService } from "../gen/gms/v1/session_pb.js";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { systemClock, type Clock } from "./clock.js";
import { derived, listenerTimeouts, requestReadLimit, type Config, type ConfigSource, type Role } from "./config.js";
import { createLocalBus, type Bus } from "./bus.js";
import { createRedisBus } from "./redis-bus.js";
import { createAccess, type Access as AccessRules } from "./domain/access.js";
import { createAdmin, type Admin } from "./domain/admin.js";
import { createChats, type ChatEvents, type Chats } from "./domain/chat/index.js";
import type { PollViewOptions } from "./domain/chat/poll.js";
import { runOnce } from "./domain/idempotency.js";
import { createSessions, type Sessions } from "./domain/sessions.js";
import { createStorage, type Storage } from "./domain/storage.js";
import { createSweeper, type SweepCounts } from "./domain/sweeper.js";
import { createHealthMonitor, type HealthMonitor } from "./health.js";
import { httpRoutes, HTTP_ROUTES } from "./http/index.js";
import { COMETD_PATH } from "./http/cometd.js";
import type { HttpRouteFactory } from "./http/routes.js";
import { listen, localUrl, type Listener, type RequestHandler } from "./listen.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { listenForMetrics, type MetricsListener } from "./metrics-listener.js";
import { createReload, holdConfig, noReload, type ConfigHolder, type Reload } from "./reload.js";
import { accessAccess, accessService } from "./rpc/access-service.js";
import { adminAccess, adminService } from "./rpc/admin-service.js";
import { agentAccess, agentService } from "./rpc/agent-service.js";
import { chatAccess, chatService } from "./rpc/chat-service.js";
import { createAuthorizer, createRoleCheck, PUBLIC, type Access, type Authorizer } from "./rpc/auth.js";
import { healthService } from "./rpc/health-service.js";
import { connectAdapter } from "./rpc/decode.js";
import { createStreamKeepalive, type StreamKeepalive } from "./rpc/keepalive.js";
import { createCallTracker, type CallTracker } from "./rpc/observe.js";
import { createLocalTransport } from "./rpc/peer.js";
import { servingPolicy } from "./rpc/policy.js";
import { createRateLimitInterceptor } from "./rpc/rate-limit.js";
import { reflectionServices } from "./rpc/reflection-service.js";
import { sessionAccess, sessionService } from "./rpc/session-service.js";
import { createLeanPath } from "./rpc/lean-path.js";
import { leanRpcsOf } from "./rpc/lean-rpc.js";
import { storageAccess, storageService } from "./rpc/storage-service.js";
import type { Database } from "./store/database.js";
import { describeError } from "./store/errors.js";
import { createStores, type Stores } from "./store/stores.js";

/** App is the domain, wired to its dependencies: what the RPC handlers call. */
export interface App {
  /** config is the configuration in effect: read it when a setting is needed, keep no copy (a reload replaces it). */
  config: ConfigSource;
  /** configHolder holds it: a reload replaces what config returns (src/reload.ts). */
  configHolder: ConfigHolder;
  db: Database;
  /** stores are the aggregates' stores on db, which the domain modules were given. */
  stores: Stores;
  clock: Clock;
  log: Logger;
  storage: Storage;
  access: AccessRules;
  sessions: Sessions;
  bus: Bus;
  chats: Chats;
  /** admin are the operator's views and actions (AdminService). */
  admin: Admin;
  /** metrics are the app's Prometheus metrics, served at /metrics; undefined when disabled. */
  metrics: Metrics | undefined;
}

/** AppDeps are what the domain is built from. */
export interface AppDeps {
  /** config is the configuration the app starts with. */
  config: Config;
  db: Database;
  log: Logger;
  clock?: Clock | undefined;
  /** bus announces committed events between streams (default: in-process). */
  bus?: Bus | undefined;
  /** metrics count what the domain does and read the stores at scrape time (default: none; startServer makes them unless disabled). */
  metrics?: Metrics | undefined;
}

/** createApp builds the stores on the database and the domain modules on them. */
export function createApp({ config: initial, db, log, clock = systemClock, bus = defaultBus(initial, log), metrics }: AppDeps): App {
  // The one holder of the configuration in effect; every part below reads it at call time.
  const configHolder = holdConfig(initial);
  const config = configHolder.current;
  const stores = createStores(db);
  const storage = createStorage({
    store: stores.storage,
    transactions: stores.transactions,
    requestIds: stores.requestIds,
    clock,
    limits: derived(config, ({ storage: s }) => ({
      defaultTtlSeconds: s.default_ttl_seconds,
      maxEntries: s.max_entries,
      maxKeyBytes: s.max_key_bytes,
      maxValueBytes: s.max_value_bytes,
      maxDataBytes: s.max_data_bytes,
    })),
  });
  const access = createAccess({ store: stores.access, clock, config, storage, log, events: metrics?.access });
  // A session's chats are extended with it (the chat store's extendChatsOfSession, in the session's unit of work).
  const sessions = createSessions({ store: stores.sessions, transactions: stores.transactions, clock, storage, access, chats: stores.chats });
  const chats = createChatsOn(stores, { clock, config, storage, bus, events: metrics?.chat, streamsPerChat: () => streamsPerChat(config()) });
  metrics?.observe({ config, clock, db, bus, access: stores.access, chats: stores.chats });
  const admin = createAdmin({ config, clock, transactions: stores.transactions, access, sessions, accessStore: stores.access, sessionStore: stores.sessions, chatStore: stores.chats });
  return { config, configHolder, db, stores, clock, log, storage, access, sessions, bus, chats, admin, metrics };
}

/** streamsPerChat is the cap on a chat's open streams on a node: rate_limits.streams_per_chat, none with the rate limits off. */
function streamsPerChat(config: Config): number {
  return config.rate_limits.enabled ? config.rate_limits.streams_per_chat : Number.POSITIVE_INFINITY;
}

/** ChatsOnDeps are what the chat rules need besides the stores. */
export interface ChatsOnDeps {
  clock: Clock;
  /** config is the configuration in effect. */
  config: ConfigSource;
  storage: Storage;
  bus: Bus;
  /** pollViews bounds this node's poll views (default POLL_VIEW_DEFAULTS). */
  pollViews?: PollViewOptions | undefined;
  /** events hears the messages added (the metrics). */
  events?: ChatEvents | undefined;
  /** streamsPerChat is the cap in effect on a chat's open streams on this node (default: none). */
  streamsPerChat?: (() => number) | undefined;
}

/**
 * createChatsOn builds the chat rules on the stores: the chat store, units of work, and the
 * session, storage and idempotency modules adapted to what a chat needs of them (ChatSessions,
 * ChatData, RunOnce in src/domain/chat/store.ts).
 */
export function createChatsOn(stores: Stores, { clock, config, storage, bus, pollViews, events, streamsPerChat }: ChatsOnDeps): Chats {
  return createChats({
    store: stores.chats,
    transactions: stores.transactions,
    once: (key, now, create, keepUntil) => runOnce(stores, key, now, create, keepUntil),
    sessions: {
      insert: (uow, s) => stores.sessions.insert(uow, { ...s, state: "active", phoneNumber: "" }),
      dataIdOf: async (sessionId, now) => (await stores.sessions.read(sessionId, now))?.dataId,
    },
    data: {
      createIn: (uow, entries, expiresAt, own) => storage.createIn(uow, entries, expiresAt, own),
      get: (dataId) => storage.get(dataId),
      deleteIn: async (uow, dataId, now) => {
        await stores.storage.delete(uow, dataId, now);
      },
    },
    clock,
    config,
    bus,
    pollViews,
    events,
    streamsPerChat,
  });
}

/** defaultBus is Redis pub/sub when `bus.redis_url` is configured, else the in-process bus. */
function defaultBus(config: Config, log: Logger): Bus {
  return config.bus.redis_url === undefined ? createLocalBus() : createRedisBus(config.bus.redis_url, log);
}

/** ServeDeps are what the served services' implementations are built from. */
interface ServeDeps {
  app: App;
  health: HealthMonitor;
  /** shutdown ends waits (long-polls, streams) when the server shuts down. */
  shutdown: AbortSignal;
  /** services are the descriptors of every served service, for reflection. */
  services: readonly DescService[];
  /** reload reads the configuration file again and puts it in effect (AdminService.ReloadConfig). */
  reload: Reload;
  /** keepalive sends the long-lived streams' heartbeats and ends them at their maximum age (`server.streams`). */
  keepalive: StreamKeepalive;
}

/**
 * Served is one service this server serves: its descriptor, who may call each of its RPCs (a role
 * list per method, admin always added, or PUBLIC), and how its implementation is built.
 */
interface Served<S extends DescService = DescService> {
  readonly service: S;
  readonly access: { readonly [M in keyof ServiceImpl<S>]: readonly Role[] } | typeof PUBLIC;
  readonly implement: (deps: ServeDeps) => ServiceImpl<S>;
}

/** served types one entry of SERVED (a helper: an array of Served cannot infer each entry's service). */
function served<S extends DescService>(service: S, access: Served<S>["access"], implement: Served<S>["implement"]): Served {
  return { service, access, implement } as unknown as Served;
}

/**
 * SERVED lists every service this server serves, once. connect's routes, the lean path's methods
 * (the RPCs an implementation writes as a UnaryRpc or a ServerStream: leanRpcsOf), who may call each
 * RPC, the services health knows and the ones reflection describes all derive from it.
 */
const SERVED: readonly Served[] = [
  served(StorageService, storageAccess, ({ app }) => storageService(app.storage)),
  served(AccessService, accessAccess, ({ app }) => accessService(app.access)),
  served(SessionService, sessionAccess, ({ app }) => sessionService(app.sessions)),
  served(ChatService, chatAccess, ({ app, shutdown, keepalive }) => chatService(app.chats, shutdown, keepalive)),
  served(AgentService, agentAccess, ({ app, shutdown, keepalive }) => agentService(app.chats, shutdown, keepalive)),
  served(AdminService, adminAccess, ({ app, reload }) => adminService(app.admin, reload)),
  served(Health, PUBLIC, ({ health, keepalive }) => healthService(health, GMS_SERVICES.map((s) => s.typeName), keepalive)),
  served(ReflectionV1, PUBLIC, ({ services }) => reflectionServices(services).v1),
  served(ReflectionV1alpha, PUBLIC, ({ services }) => reflectionServices(services).v1alpha),
];

/** SERVED_SERVICES are the descriptors of every service this server serves, health and reflection too. */
export const SERVED_SERVICES: readonly DescService[] = SERVED.map((s) => s.service);

/** GMS_SERVICES are the opengms services this server serves (package gms.v1), for health and reflection. */
export const GMS_SERVICES: readonly DescService[] = SERVED_SERVICES.filter((s) => s.typeName.startsWith("gms."));

/**
 * accessPolicy says who may call every RPC of the served services. An RPC missing here is refused,
 * so a new RPC must be declared (its service's access table does not compile without it, either).
 */
function accessPolicy(): Map<string, Access> {
  const policy = new Map<string, Access>();
  for (const { service, access } of SERVED) {
    for (const m of service.methods) {
      const roles = access === PUBLIC ? PUBLIC : (access as Record<string, readonly Role[] | undefined>)[m.localName];
      if (roles === undefined) throw new Error(`no access declared for ${service.typeName}/${m.name}`);
      policy.set(`/${service.typeName}/${m.name}`, roles);
    }
  }
  return policy;
}

/** implementations builds every served service's implementation, once for both paths. */
function implementations(deps: Omit<ServeDeps, "services">): { service: DescService; impl: ServiceImpl<DescService> }[] {
  return SERVED.map((s) => ({ service: s.service, impl: s.implement({ ...deps, services: SERVED_SERVICES }) }));
}

/** CORS_LOG_EVERY_MS is how often a refused origin is logged again (a page retrying must not flood the log). */
const CORS_LOG_EVERY_MS = 60_000;

/**
 * sameOrigin tells whether a browser's Origin is this server's own (a page opengms serves): such a
 * request needs no CORS headers.
 */
function sameOrigin(origin: string, req: { readonly headers: Record<string, string | string[] | undefined> }): boolean {
  const host = req.headers["host"] ?? req.headers[":authority"];
  if (typeof host !== "string") return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

/**
 * withCredentials tells the paths a browser calls with credentials (cookies, XMLHttpRequest's
 * withCredentials): CometD, whose JavaScript client always sets withCredentials, so its requests
 * fail in the browser unless the answer allows credentials. No other path is answered so: the RPC
 * and GMS HTTP paths take their credentials in the Authorization header, which needs no such allowance.
 */
function withCredentials(url: string | undefined): boolean {
  const path = (url ?? "").split("?", 1)[0] ?? "";
  return path === COMETD_PATH || path.startsWith(`${COMETD_PATH}/`);
}

/**
 * withCors answers CORS preflights and decorates responses for the configured browser origins
 * (`server.cors_origins`, `*` for any). A cross-origin request from any other origin is logged at
 * warn with its origin (once a minute per origin), and its preflight answered 403 without CORS
 * headers, so that "Failed to fetch" in a browser has a line on the server that says why.
 * Requests without an Origin (backends, IVRs) and from the server's own origin pass untouched.
 * CometD's path also allows credentials (withCredentials).
 */
function withCors(handler: RequestHandler, config: ConfigSource, log: Logger): RequestHandler {
  // The origins in effect, as a set, made again after a reload.
  const origins = derived(config, (c) => ({ list: c.server.cors_origins, any: c.server.cors_origins.includes("*"), allowed: new Set(c.server.cors_origins) }));
  // GMS's HTTP API adds its end-user header and DELETE (src/http) to what Connect's browsers send.
  const allowHeaders = [...connectCors.allowedHeaders, "Authorization", "gms_user"].join(", ");
  const allowMethods = [...connectCors.allowedMethods, "DELETE"].join(", ");
  const exposeHeaders = connectCors.exposedHeaders.join(", ");
  const loggedAt = new Map<string, number>();
  const refused = (origin: string, method: string | undefined, url: string | undefined, none: boolean) => {
    const now = Date.now();
    const last = loggedAt.get(origin);
    if (last !== undefined && now - last < CORS_LOG_EVERY_MS) return;
    if (loggedAt.size >= 1_000) loggedAt.clear();
    loggedAt.set(origin, now);
    log.warn(
      { event: "cors", origin, method, path: (url ?? "").split("?", 1)[0] },
      none ? "cross-origin request refused: no browser origin is allowed (server.cors_origins is empty)" : "cross-origin request refused: its origin is not in server.cors_origins",
    );
  };
  return (req, res) => {
    const origin = req.headers["origin"];
    if (typeof origin !== "string" || sameOrigin(origin, req)) {
      handler(req, res);
      return;
    }
    const { list, any, allowed } = origins();
    if (any || allowed.has(origin)) {
      // The origin is echoed, never `*`, even when any is allowed: a credentialed request (below)
      // may not be answered with a wildcard.
      res.setHeader("Access-Control-Allow-Origin", origin);
      res.setHeader("Vary", "Origin");
      if (withCredentials(req.url)) res.setHeader("Access-Control-Allow-Credentials", "true");
      res.setHeader("Access-Control-Expose-Headers", exposeHeaders);
      if (req.method === "OPTIONS") {
        res.setHeader("Access-Control-Allow-Methods", allowMethods);
        res.setHeader("Access-Control-Allow-Headers", allowHeaders);
        res.setHeader("Access-Control-Max-Age", "7200");
        res.statusCode = 204;
        res.end();
        return;
      }
      handler(req, res);
      return;
    }
    refused(origin, req.method, req.url, list.length === 0);
    if (req.method === "OPTIONS") {
      res.statusCode = 403;
      res.end();
      return;
    }
    // A simple request is served (the browser will not let the page read it): what a non-browser
    // client sending an Origin expects.
    handler(req, res);
  };
}

/** rateLimit is the rate limit policy: the limits in effect (`rate_limits`, read at every call), its refusals counted in the metrics. */
function rateLimit(app: App): Interceptor {
  return createRateLimitInterceptor({ clock: app.clock, limits: () => app.config().rate_limits, refused: app.metrics?.rateLimited });
}

/** HandlerParts are what createHandler needs beside the app. */
export interface HandlerParts {
  health: HealthMonitor;
  tracker: CallTracker;
  shutdown: AbortSignal;
  /**
   * leanPath serves the gRPC calls of the chat streams and the hot unary calls on the lean path
   * (default true); false leaves every call to connect (to compare the two).
   */
  leanPath?: boolean;
  /**
   * policies are added to the serving policy (metrics, a rate limit, tracing...): every call runs
   * them, on either path, after auth (servingPolicy in src/rpc/policy.ts).
   */
  policies?: readonly Interceptor[];
  /** httpRoutes are the plain HTTP routes served beside the RPCs (default HTTP_ROUTES: src/http/index.ts). */
  httpRoutes?: readonly HttpRouteFactory[];
  /** reload reads the configuration file again (AdminService.ReloadConfig; default: refused, no file). */
  reload?: Reload | undefined;
}

/**
 * createHandler builds the Node request handler serving every protocol. Every call goes through the
 * serving policy (src/rpc/policy.ts: log, deadline, auth, the added policies, shutdown,
 * availability, validation, error mapping), whichever path serves it: connect, or for the gRPC
 * calls of the long-lived chat streams and the hot unary calls (polls, allocation, matching) the
 * lean path (src/rpc/lean-path.ts), at a fraction of connect's memory per open stream and CPU per
 * call.
 */
export function createHandler(app: App, parts: HandlerParts): RequestHandler {
  const policyOfRpcs = accessPolicy();
  // The API keys in effect: the authorizer is made again after a reload, at the next call.
  const authorizer = derived(app.config, ({ auth }) => createAuthorizer({ apiKeys: auth.api_keys, publicRoles: auth.public_roles, policy: policyOfRpcs }));
  const authorize: Authorizer = (method, header) => authorizer()(method, header);
  // The metrics policy comes first of the added ones: it counts what the rate limit after it refuses.
  const added = [...(app.metrics === undefined ? [] : [app.metrics.policy]), rateLimit(app), ...(parts.policies ?? [])];
  const policy = servingPolicy(
    { log: app.log, clock: app.clock, tracker: parts.tracker, authorize, shutdown: parts.shutdown, health: parts.health, validator: createValidator() },
    added,
  );
  app.metrics?.observeHealth(parts.health);
  // /metrics: the registry, and who may scrape it (server.metrics.public, else the admin role), as configured now.
  const roleCheck = derived(app.config, ({ auth }) => createRoleCheck(auth.api_keys, auth.public_roles));
  const scrape =
    app.metrics === undefined
      ? undefined
      : { registry: app.metrics.registry, admits: (authorization: string | null) => app.config().server.metrics.public || roleCheck()(authorization, "admin") };
  // What connect's adapter and the lean path are built with is read once: a reload that changes it
  // reports a restart as needed (RESTART_SETTINGS, requestReadLimit in src/reload.ts).
  const started = app.config();
  // Response compression costs more CPU than it saves on the networks contact centers run on
  // (gzipping a 256 KiB file takes ~10 ms); it is opt-in.
  const compressMinBytes = started.server.compress_min_bytes ?? Number.POSITIVE_INFINITY;
  const readMaxBytes = requestReadLimit(started);
  const reload = parts.reload ?? noReload;
  // Read once: a stream's heartbeat interval and age are fixed when the handler is built (a restart setting).
  const { heartbeat_seconds, max_age_seconds } = started.server.streams;
  const keepalive = createStreamKeepalive(app.clock, { heartbeatMs: heartbeat_seconds * 1000, maxAgeMs: max_age_seconds * 1000 });
  const services = implementations({ app, health: parts.health, shutdown: parts.shutdown, reload, keepalive });
  const routes = (router: ConnectRouter) => {
    for (const { service, impl } of services) router.service(service, impl);
  };
  // connectAdapter is connect-node's adapter with undecodable requests answered as the caller's
  // mistake (INVALID_ARGUMENT, never INTERNAL) and logged at warn: src/rpc/decode.ts.
  const ignoreUnknownJsonFields = started.server.ignore_unknown_json_fields;
  const adapter = connectAdapter({ routes, interceptors: policy, compressMinBytes, readMaxBytes, ignoreUnknownJsonFields, log: app.log });
  // The plain HTTP routes call the same services through the same policy, in process.
  const local = createLocalTransport(routes, { interceptors: policy, readMaxBytes });
  const http = httpRoutes({ local, config: app.config, requestTimeoutMs: started.server.request_timeout_seconds * 1000, log: app.log, clock: app.clock, shutdown: parts.shutdown, metrics: scrape }, parts.httpRoutes ?? HTTP_ROUTES);
  if (parts.leanPath === false) {
    return withCors((req, res) => {
      if (!http(req, res)) adapter(req, res);
    }, app.config, app.log);
  }
  const lean = createLeanPath({
    rpcs: services.flatMap(({ impl }) => leanRpcsOf(impl)),
    policy,
    log: app.log,
    clock: app.clock,
    tracker: parts.tracker,
    readMaxBytes,
    compressMinBytes,
    ignoreUnknownJsonFields,
  });
  return withCors((req, res) => {
    if (!http(req, res) && !lean(req, res)) adapter(req, res);
  }, app.config, app.log);
}

/** RunningServer is a listening opengms server. */
export interface RunningServer {
  readonly app: App;
  /**
   * reload reads the configuration file again and puts it in effect (AdminService.ReloadConfig,
   * SIGHUP): what changed, or a refusal (the file not valid, the store unavailable) having changed nothing.
   */
  reload: Reload;
  readonly port: number;
  /** url is the base URL clients use, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  /** metricsUrl is where the metrics listener (server.metrics.listen) serves /metrics without a key; undefined without one. */
  readonly metricsUrl: string | undefined;
  readonly health: HealthMonitor;
  /**
   * shutdown stops accepting, lets unary calls finish, ends streams with UNAVAILABLE, closes the
   * connections and the database.
   */
  shutdown(): Promise<void>;
}

/** StartOptions start a server on a database; the database is closed by shutdown. */
export interface StartOptions extends AppDeps {
  /** sweep runs the background sweepers (default true). */
  sweep?: boolean;
  /** load reads and validates the configuration file again, for a reload (loadConfig); without it a reload is refused. */
  load?: (() => Config) | undefined;
}

/** startServer builds the app and listens on the configured host and port (0 picks a free port). */
export async function startServer(options: StartOptions): Promise<RunningServer> {
  const app = createApp({ ...options, metrics: options.metrics ?? (options.config.server.metrics.enabled ? createMetrics() : undefined) });
  const { log, db } = app;
  // What the listener is built with is read once; the rest of the server reads app.config() as it goes.
  const config = app.config();
  const synced = await app.access.syncNumbers();
  if (synced.added + synced.retired > 0) log.info(synced, "access numbers synchronised with resources");
  const health = createHealthMonitor(db, log);
  const tracker = createCallTracker();
  const shutdown = new AbortController();
  // Every open stream listens to this one signal.
  setMaxListeners(0, shutdown.signal);
  const reload = createReload({
    holder: app.configHolder,
    started: config,
    load: options.load,
    syncNumbers: (groups) => app.access.syncNumbers(groups),
    log,
    reloaded: app.metrics?.reloaded,
    applied: (next) => {
      log.level = next.log.level;
    },
  });
  const handler = createHandler(app, { health, tracker, shutdown: shutdown.signal, reload });
  const { headersTimeoutMs, ...timeouts } = listenerTimeouts(config);
  let listener: Listener;
  try {
    listener = await listen(handler, {
      host: config.server.host,
      port: config.server.port,
      tls: config.server.tls === undefined ? undefined : { cert: config.server.tls.cert, key: config.server.tls.key, clientCa: config.server.tls.client_ca },
      headersTimeoutMs,
      limits: {
        ...timeouts,
        maxConnections: config.server.max_connections,
        maxConnectionsPerPeer: config.server.max_connections_per_peer,
        maxStreamsPerConnection: config.server.max_streams_per_connection,
        maxStreamsPerPeer: config.server.max_streams_per_peer,
        unlimitedPeers: config.server.unlimited_peers,
      },
      log: log.child({ component: "listen" }),
    });
  } catch (e) {
    health.stop();
    throw e;
  }
  let metricsListener: MetricsListener | undefined;
  try {
    metricsListener = app.metrics === undefined ? undefined : await listenForMetrics(config, app.metrics.registry, log);
  } catch (e) {
    // The main port is open already: a server without its metrics port does not start.
    await listener.closeConnections(0);
    health.stop();
    throw e;
  }
  const stopSweeper = options.sweep === false ? () => {} : startSweeper(app);
  const stopIdleWatch = options.sweep === false ? () => {} : app.chats.startIdleWatch();
  if (config.auth.api_keys.length === 0) log.warn("auth: no api_keys configured; the server is open to every caller with every role");
  const url = localUrl(config.server.tls === undefined ? "http" : "https", config.server.host, listener.port);
  log.info({ port: listener.port, tls: config.server.tls !== undefined, database: db.dialect }, "opengms listening");
  if (metricsListener !== undefined) log.info({ host: config.server.metrics.listen?.host, port: metricsListener.port }, "metrics listening (GET /metrics, no key)");

  let stopping: Promise<void> | undefined;
  return {
    app,
    reload,
    port: listener.port,
    url,
    metricsUrl: metricsListener?.url,
    health,
    shutdown() {
      stopping ??= (async () => {
        const graceMs = app.config().server.shutdown_grace_seconds * 1000;
        log.info("shutting down");
        await listener.stopAccepting();
        health.stop();
        stopSweeper();
        stopIdleWatch();
        shutdown.abort();
        await Promise.race([tracker.idle(), new Promise((r) => setTimeout(r, graceMs).unref())]);
        // The metrics port answers until the main one has drained, then closes with it.
        await Promise.all([listener.closeConnections(1000), metricsListener?.closeConnections(1000)]);
        await app.bus.close();
        await db.close();
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

/** createAppSweeper is the sweeper of an app's stores, in batches of `batchSize`. */
export function createAppSweeper(app: App, batchSize: number): { sweep(): Promise<SweepCounts> } {
  const { stores } = app;
  return createSweeper({
    clock: app.clock,
    storage: app.storage,
    sessions: stores.sessions,
    chats: stores.chats,
    access: stores.access,
    requestIds: stores.requestIds,
    batchSize,
  });
}

/**
 * startSweeper deletes expired rows in the background, in bounded batches, every
 * storage.sweep_interval_seconds (both read at each sweep, so a reload reaches them); it returns
 * the function that stops it.
 */
function startSweeper(app: App): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = () => {
    timer = setTimeout(() => {
      createAppSweeper(app, app.config().storage.sweep_batch_size)
        .sweep()
        .then((counts) => {
          app.metrics?.swept(counts);
          if (Object.values(counts).some((n) => n > 0)) app.log.debug(counts, "swept expired rows");
        })
        .catch((e: unknown) => {
          app.metrics?.swept(undefined);
          app.log.warn({ err: describeError(e) }, "sweep failed");
        })
        .finally(() => {
          if (!stopped) schedule();
        });
    }, app.config().storage.sweep_interval_seconds * 1000);
    timer.unref();
  };
  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
