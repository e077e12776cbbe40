import { existsSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { numberingOf, numberReader } from "./numbering.js";
import { BUNDLED_CONFIG } from "./package-info.js";
import { redactUrl } from "./redact.js";

/** ROLES are the caller roles an API key can carry; each RPC declares which of them may call it. */
export const ROLES = ["app", "ivr", "agent", "backend", "admin"] as const;
/** Role is one caller role. */
export type Role = (typeof ROLES)[number];

/** BUILTINS are the GMS builtin services a configured service can be based on. */
export const BUILTINS = [
  "request-interaction",
  "request-access",
  "match-interaction",
  "request-chat",
] as const;
/** Builtin is the name of one GMS builtin service. */
export type Builtin = (typeof BUILTINS)[number];

/** isAddressOrRange accepts an IPv4 or IPv6 address, alone or with a prefix length (CIDR). */
function isAddressOrRange(entry: string): boolean {
  const [address = "", prefix, ...rest] = entry.split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  return prefix === undefined || (/^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
}

/** rateSchema is one token bucket: its refill rate and its size. */
const rateSchema = z.strictObject({ rate_per_second: z.number().positive().max(1_000_000), burst: z.number().int().positive().max(1_000_000) });

/** FRAME_ANCESTOR is one CSP frame-ancestors source: *, 'self', 'none', a scheme, or an origin (its host may start with *.). */
const FRAME_ANCESTOR = /^(\*|'self'|'none'|https?:|https?:\/\/(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:([0-9]{1,5}|\*))?)$/;
const phoneNumber = /^\+?[0-9]{2,20}$/;
const seconds = z.number().int().positive();
/** The largest range of numbers one `a..b` entry may expand to. */
const MAX_RANGE = 100_000;

/**
 * expandNumbers turns a group's `numbers` list into single numbers: an entry is one number or an
 * inclusive range `+18005550100..+18005550199` whose ends share their prefix and length.
 */
export function expandNumbers(entries: readonly string[]): string[] {
  const out: string[] = [];
  for (const entry of entries) {
    const range = /^(\+?)([0-9]+)\.\.(\+?)([0-9]+)$/.exec(entry);
    if (range === null) {
      out.push(entry);
      continue;
    }
    const [, plusA = "", a = "", plusB = "", b = ""] = range;
    if (plusA !== plusB || a.length !== b.length) {
      throw new Error(`range ${entry}: both ends need the same length and the same "+"`);
    }
    const first = BigInt(a);
    const last = BigInt(b);
    if (last < first) throw new Error(`range ${entry}: the end is below the start`);
    if (last - first >= BigInt(MAX_RANGE)) throw new Error(`range ${entry}: more than ${MAX_RANGE} numbers`);
    for (let n = first; n <= last; n++) out.push(plusA + n.toString().padStart(a.length, "0"));
  }
  return out;
}

const resourceGroupSchema = z
  .strictObject({
    numbers: z.array(z.string().min(1)).min(1),
    allocation: z.enum(["random", "round-robin"]).default("random"),
    locking: z.boolean().default(true),
    booking_expiration_timeout: seconds.max(86_400).optional(),
    max_booking_expiration_timeout: seconds.max(86_400).default(3_600),
    access_code_length: z.number().int().min(4).max(12).default(6),
    cooldown_seconds: z.number().int().min(0).max(86_400).default(0),
  })
  .transform((group, ctx) => {
    let numbers: string[];
    try {
      numbers = expandNumbers(group.numbers);
    } catch (e) {
      ctx.addIssue({ code: "custom", path: ["numbers"], message: (e as Error).message });
      return z.NEVER;
    }
    const bad = numbers.find((n) => !phoneNumber.test(n));
    if (bad !== undefined) {
      ctx.addIssue({ code: "custom", path: ["numbers"], message: `"${bad}" is not a phone number (digits, optional leading +)` });
      return z.NEVER;
    }
    if (new Set(numbers).size !== numbers.length) {
      ctx.addIssue({ code: "custom", path: ["numbers"], message: "a number is listed twice" });
      return z.NEVER;
    }
    return { ...group, numbers };
  });

const serviceSchema = z
  .strictObject({
    type: z.enum(["builtin", "built-in"]).default("builtin"),
    service: z.enum(BUILTINS).optional(),
    /** name is the seed's spelling of `service`. */
    name: z.enum(BUILTINS).optional(),
    ttl: seconds.max(31_536_000).optional(),
    resource_group: z.string().min(1).optional(),
    provide_code: z.boolean().optional(),
    access_code_length: z.number().int().min(4).max(12).optional(),
    booking_expiration_timeout: seconds.max(86_400).optional(),
    endpoint: z.string().min(1).optional(),
  })
  .transform((svc, ctx) => {
    const builtin = svc.service ?? svc.name;
    if (builtin === undefined) {
      ctx.addIssue({ code: "custom", path: ["service"], message: `required: one of ${BUILTINS.join(", ")}` });
      return z.NEVER;
    }
    if (svc.service !== undefined && svc.name !== undefined && svc.service !== svc.name) {
      ctx.addIssue({ code: "custom", path: ["name"], message: "differs from service" });
      return z.NEVER;
    }
    const { service: _s, name: _n, type: _t, ...options } = svc;
    return { builtin, ...options };
  });

const apiKeySchema = z
  .strictObject({
    name: z.string().min(1),
    key: z.string().min(16, "an API key needs at least 16 characters").optional(),
    key_sha256: z.string().regex(/^[0-9a-f]{64}$/, "64 lowercase hex digits").optional(),
    roles: z.array(z.enum(ROLES)).min(1),
    /**
     * acts_for_agents marks a trusted backend's key (an agent desktop's server) that acts for the
     * agents it signs in: each call names its agent (`gms-agent-id`), and that agent, not the key, is
     * who accepts, reads and writes chats. Agents are then added without touching this file.
     */
    acts_for_agents: z.boolean().default(false),
    /** agent_supervisors lets such a key mark the agent it acts for as a supervisor (`gms-agent-supervisor: true`). */
    agent_supervisors: z.boolean().default(false),
  })
  .refine((k) => (k.key === undefined) !== (k.key_sha256 === undefined), {
    message: "give exactly one of key and key_sha256",
    path: ["key"],
  })
  .refine((k) => !k.acts_for_agents || k.roles.includes("agent"), { message: "a key that acts for agents needs the agent role", path: ["acts_for_agents"] })
  .refine((k) => !k.agent_supervisors || k.acts_for_agents, { message: "agent_supervisors needs acts_for_agents", path: ["agent_supervisors"] });

/** configSchema validates the whole configuration file; unknown keys are errors. */
export const configSchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().default("0.0.0.0"),
      port: z.number().int().min(0).max(65_535).default(8080),
      /** tls: PEM files of the server's certificate and key; client_ca makes it mutual TLS (clients need a certificate it signed). */
      tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1), client_ca: z.string().min(1).optional() }).optional(),
      cors_origins: z.array(z.string().min(1)).default([]),
      shutdown_grace_seconds: z.number().positive().max(300).default(10),
      headers_timeout_seconds: z.number().positive().max(300).default(30),
      /** first_bytes_timeout_seconds: a new connection must be routable (or finish its TLS handshake) by then. */
      first_bytes_timeout_seconds: z.number().positive().max(300).default(10),
      /** request_timeout_seconds: a request's headers and body must have arrived in full by then. */
      request_timeout_seconds: z.number().positive().max(3_600).default(120),
      keep_alive_timeout_seconds: z.number().positive().max(300).default(5),
      http2_idle_timeout_seconds: z.number().positive().max(86_400).default(120),
      /** max_connections, when not set, is the open-file limit less a reserve (src/listen.ts defaultMaxConnections). */
      max_connections: z.number().int().positive().optional(),
      max_connections_per_peer: z.number().int().positive().default(256),
      max_streams_per_connection: z.number().int().positive().max(2 ** 31 - 1).default(1_000),
      max_streams_per_peer: z.number().int().positive().default(5_000),
      /** unlimited_peers are addresses or CIDR ranges the per-peer caps do not apply to (a reverse proxy, the host itself). */
      unlimited_peers: z.array(z.string().refine(isAddressOrRange, "an IP address or a CIDR range like 10.0.0.0/8")).default(["127.0.0.1", "::1"]),
      /**
       * ignore_unknown_json_fields reads JSON fields (and enum names) the contract does not have as
       * absent, for clients built against a newer contract; by default they are INVALID_ARGUMENT
       * naming the key, so a misspelled field is not silently a default.
       */
      ignore_unknown_json_fields: z.boolean().default(false),
      /** compress_min_bytes, when set, gzips responses at least this large for clients that accept it. */
      compress_min_bytes: z.number().int().min(0).optional(),
      /**
       * metrics: Prometheus metrics at /metrics (enabled by default); a scrape needs a key with the
       * admin role unless `public` (a port only the monitoring network reaches).
       */
      metrics: z
        .strictObject({
          enabled: z.boolean().default(true),
          public: z.boolean().default(false),
          /**
           * listen, when set, serves /metrics also on a plain-HTTP listener of its own, without a key
           * (for a private monitoring network): loopback unless `host` says otherwise, at most
           * `max_connections` connections (src/metrics-listener.ts).
           */
          listen: z
            .strictObject({
              host: z.string().min(1).default("127.0.0.1"),
              port: z.number().int().min(0).max(65_535),
              max_connections: z.number().int().positive().max(10_000).default(64),
            })
            .optional(),
        })
        .prefault({}),
      /**
       * streams: what keeps long-lived server streams (Subscribe, WatchQueue, health Watch) alive
       * through proxies and load balancers (src/rpc/keepalive.ts). heartbeat_seconds: a stream quiet
       * this long gets a heartbeat (0: none). max_age_seconds: a stream open this long (less up to a
       * tenth, at random) ends cleanly, OK, and its client resumes from its last position + 1 (0: never).
       */
      streams: z
        .strictObject({
          heartbeat_seconds: z.number().min(0).max(3_600).default(15),
          max_age_seconds: z.number().min(0).max(604_800).default(3_600),
        })
        .prefault({}),
      /**
       * web: the customer chat widget (/chat/) and the agent console (/agent/), served from `dir`
       * (default: the pages built into the package, dist/web); `frame_ancestors` are the origins
       * whose pages may show the widget in a frame (CSP frame-ancestors; the console never).
       */
      web: z
        .strictObject({
          enabled: z.boolean().default(true),
          dir: z.string().min(1).optional(),
          frame_ancestors: z.array(z.string().regex(FRAME_ANCESTOR, "an origin like https://shop.example.com, a host pattern like https://*.example.com, 'self' or *")).default(["*"]),
        })
        .prefault({}),
    })
    .prefault({}),
  log: z
    .strictObject({ level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info") })
    .prefault({}),
  database: z
    .strictObject({
      url: z
        .string()
        .regex(/^(sqlite:.+|mysql:\/\/.+)$/, 'expected "sqlite:<path>" or "mysql://user@host:port/database"')
        .default("sqlite:data/gms.db"),
      /** query_timeout_seconds ends a MySQL statement the database has not answered by then (its connection is closed). */
      query_timeout_seconds: z.number().positive().max(3_600).default(10),
      /** acquire_timeout_seconds bounds the wait for a pooled connection. */
      acquire_timeout_seconds: z.number().positive().max(3_600).default(5),
      /** connect_timeout_seconds bounds opening a MySQL connection. */
      connect_timeout_seconds: z.number().positive().max(3_600).default(5),
      /** sqlite_busy_timeout_seconds is how long a SQLite statement waits for another connection's lock (it blocks the server meanwhile). */
      sqlite_busy_timeout_seconds: z.number().min(0).max(60).default(5),
      /** pool_max is the largest MySQL connection pool. */
      pool_max: z.number().int().positive().max(1_000).default(20),
    })
    .prefault({}),
  auth: z
    .strictObject({
      api_keys: z.array(apiKeySchema).default([]),
      public_roles: z.array(z.enum(ROLES)).default(["app"]),
    })
    .prefault({}),
  storage: z
    .strictObject({
      default_ttl_seconds: seconds.max(31_536_000).default(30),
      max_entries: z.number().int().positive().max(10_000).default(100),
      // The MySQL key column holds 512 characters (a longer one would not fit InnoDB's index): at most 512 bytes always fit.
      max_key_bytes: z.number().int().positive().max(512).default(256),
      max_value_bytes: z.number().int().positive().max(16 * 1024 * 1024).default(1024 * 1024),
      max_data_bytes: z.number().int().positive().max(64 * 1024 * 1024).default(10 * 1024 * 1024),
      sweep_interval_seconds: z.number().positive().default(30),
      sweep_batch_size: z.number().int().positive().max(10_000).default(500),
    })
    .prefault({}),
  access: z
    .strictObject({
      booking_expiration_timeout: seconds.max(86_400).default(30),
      /**
       * default_country_code (e.g. "1", "44") makes numbers compare in E.164: a national number, as
       * an app or an IVR may send it, is read as this country's; configured numbers are read the same way.
       */
      default_country_code: z.string().regex(/^[1-9][0-9]{0,2}$/, "1 to 3 digits, not starting with 0").optional(),
      /** trunk_prefix is dropped from national numbers ("1" for country code 1, else "0"; "" for none). */
      trunk_prefix: z.string().regex(/^[0-9]{0,3}$/, "0 to 3 digits").optional(),
      /** international_prefix starts numbers dialled abroad ("011" for country code 1, else "00"). */
      international_prefix: z.string().regex(/^[0-9]{1,4}$/, "1 to 4 digits").optional(),
      code_attempts: z
        .strictObject({
          max_failures: z.number().int().positive().default(5),
          window_seconds: seconds.default(60),
        })
        .prefault({}),
    })
    .prefault({}),
  chat: z
    .strictObject({
      default_ttl_seconds: seconds.max(31_536_000).default(3_600),
      default_endpoint: z.string().min(1).max(128).default("default"),
      max_message_length: z.number().int().positive().max(1_048_576).default(16_384),
      max_wait_seconds: z.number().int().positive().max(300).default(60),
      typing_coalesce_seconds: z.number().positive().default(2),
      typing_timeout_seconds: z.number().positive().default(10),
      idle_timeout_seconds: z.number().positive().max(86_400).default(45),
      files: z
        .strictObject({
          max_files: z.number().int().min(0).max(1_000).default(10),
          max_file_bytes: z.number().int().positive().max(64 * 1024 * 1024).default(5 * 1024 * 1024),
          max_total_bytes: z.number().int().positive().max(1024 * 1024 * 1024).default(20 * 1024 * 1024),
          allowed_extensions: z.array(z.string().regex(/^[a-z0-9]{1,16}$/, "lowercase letters and digits, without the dot")).default([]),
          allowed_content_types: z.array(z.string().regex(/^[a-z0-9.+-]+\/[a-z0-9.+*-]+$/i, "a media type like image/png or image/*")).default([]),
          require_agent: z.boolean().default(false),
        })
        .prefault({}),
    })
    .prefault({}),
  /**
   * rate_limits: token buckets per API key (its most generous role's rate), per peer address and
   * per chat's messages; a call over one is RESOURCE_EXHAUSTED with a RateLimited detail. Each
   * bucket holds `burst` tokens and refills `rate_per_second`.
   */
  rate_limits: z
    .strictObject({
      enabled: z.boolean().default(true),
      roles: z
        .strictObject({
          app: rateSchema.default({ rate_per_second: 100, burst: 200 }),
          ivr: rateSchema.default({ rate_per_second: 200, burst: 400 }),
          agent: rateSchema.default({ rate_per_second: 100, burst: 400 }),
          backend: rateSchema.default({ rate_per_second: 1_000, burst: 2_000 }),
          admin: rateSchema.default({ rate_per_second: 100, burst: 200 }),
        })
        .prefault({}),
      peer: rateSchema.default({ rate_per_second: 200, burst: 400 }),
      chat_messages: rateSchema.default({ rate_per_second: 2, burst: 30 }),
      /** exempt_peers are addresses or CIDR ranges no per-peer bucket applies to (the host itself, a trusted proxy). */
      exempt_peers: z.array(z.string().refine(isAddressOrRange, "an IP address or a CIDR range like 10.0.0.0/8")).default(["127.0.0.1", "::1"]),
      /** max_buckets bounds each table (keys, peers, chats); the least recently used bucket makes room. */
      max_buckets: z.number().int().positive().max(10_000_000).default(100_000),
      /** streams_per_chat caps the Subscribe streams open on one chat on a node (customer's and agents' together). */
      streams_per_chat: z.number().int().positive().max(10_000).default(8),
    })
    .prefault({}),
  bus: z
    .strictObject({
      /** redis_url, when set, carries announcements between nodes through Redis pub/sub. */
      redis_url: z.string().regex(/^rediss?:\/\/.+/, "expected redis://host:port").optional(),
    })
    .prefault({}),
  resources: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, "group names: letters, digits, _ . -"), resourceGroupSchema).default({}),
  services: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, "service names: letters, digits, _ . -"), serviceSchema).default({}),
});

/** Config is the validated configuration. */
export type Config = z.output<typeof configSchema>;
/** ResourceGroupConfig is one validated `resources.<group>` section. */
export type ResourceGroupConfig = Config["resources"][string];
/** ServiceConfig is one validated `services.<name>` section. */
export type ServiceConfig = Config["services"][string];

/**
 * ConfigSource is the configuration in effect. The parts of the server call it when they need a
 * setting, and keep no copy: a reload (src/reload.ts) replaces what it returns, and the next call
 * of every part sees the new configuration. It is a function, passed in like any dependency.
 */
export type ConfigSource = () => Config;

/**
 * derived keeps what `make` builds of the configuration in effect (an authorizer of its API keys, a
 * list of ranges), built again only when the configuration has been replaced: what a part reads at
 * every call costs one comparison, not a rebuild.
 */
export function derived<T>(config: ConfigSource, make: (config: Config) => T): () => T {
  let from: Config | undefined;
  let value!: T;
  return () => {
    const now = config();
    if (now !== from) {
      value = make(now);
      from = now;
    }
    return value;
  };
}

/** ConfigError is a configuration that cannot be used; its message names the offending keys. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** WILDCARDS are the hosts that listen on every address of the machine. */
const WILDCARDS = new Set(["0.0.0.0", "::", ""]);

/** sameAddress tells whether two listeners' hosts would take the same address (one of them every address). */
function sameAddress(a: string, b: string): boolean {
  return a === b || WILDCARDS.has(a) || WILDCARDS.has(b);
}

/** parseConfig validates a configuration object (as read from YAML) and applies the defaults. */
export function parseConfig(raw: unknown, source = "configuration"): Config {
  const result = configSchema.safeParse(raw ?? {});
  if (result.success) {
    const config = result.data;
    // With a country code, configured numbers are read as calls' numbers are: in E.164.
    const read = numberReader(numberingOf(config.access));
    for (const [group, g] of Object.entries(config.resources)) {
      g.numbers = g.numbers.map((n) => {
        const number = read(n);
        if (number === undefined) throw new ConfigError(`${source}: resources.${group}.numbers: "${n}" is not a phone number`);
        return number;
      });
    }
    const owner = new Map<string, string>();
    for (const [group, { numbers }] of Object.entries(config.resources)) {
      if (new Set(numbers).size !== numbers.length) throw new ConfigError(`${source}: resources.${group}.numbers: a number is listed twice (in E.164)`);
      for (const n of numbers) {
        const other = owner.get(n);
        // A number dialled identifies its reservations, so it may sit in one group only.
        if (other !== undefined) throw new ConfigError(`${source}: resources.${group}.numbers: ${n} is also in resources.${other}`);
        owner.set(n, group);
      }
    }
    const metrics = config.server.metrics;
    if (metrics.listen !== undefined) {
      if (!metrics.enabled) throw new ConfigError(`${source}: server.metrics.listen: metrics are disabled (server.metrics.enabled is false)`);
      if (metrics.listen.port !== 0 && metrics.listen.port === config.server.port && sameAddress(metrics.listen.host, config.server.host)) {
        throw new ConfigError(`${source}: server.metrics.listen.port: ${metrics.listen.port} is server.port; give the metrics listener a port of its own`);
      }
    }
    for (const [name, svc] of Object.entries(config.services)) {
      if (svc.resource_group !== undefined && !(svc.resource_group in config.resources)) {
        throw new ConfigError(`${source}: services.${name}.resource_group: no resource group "${svc.resource_group}" in resources`);
      }
    }
    return config;
  }
  const lines = result.error.issues.map((issue) => {
    const key = issue.path.map(String).join(".") || "(top level)";
    const message =
      issue.code === "unrecognized_keys"
        ? `unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(", ")}`
        : // A bad name in a record (resources, services): say which rule it breaks, not only "Invalid key".
          issue.code === "invalid_key"
          ? `invalid name: ${issue.issues.map((i) => i.message).join("; ")}`
          : issue.message;
    return `  ${key}: ${message}`;
  });
  throw new ConfigError(`${source} is not valid:\n${lines.join("\n")}`);
}

/** LoadConfigOptions say where the configuration comes from. */
export interface LoadConfigOptions {
  /** path is the YAML file; default: see configPath. */
  path?: string | undefined;
  /** env supplies GMS_CONFIG, GMS_PORT and GMS_DATABASE_URL; default process.env. */
  env?: Record<string, string | undefined>;
  /** cwd is the directory a relative default is looked up in; default process.cwd(). */
  cwd?: string;
}

/**
 * configPath is the configuration file loadConfig reads: `path` when given, else $GMS_CONFIG, else
 * config/gms.yaml in the working directory when there is one, else the example configuration
 * shipped with opengms (BUNDLED_CONFIG), so that it starts wherever the process is started.
 */
export function configPath(options: LoadConfigOptions = {}): string {
  const env = options.env ?? process.env;
  const given = options.path ?? (env["GMS_CONFIG"] === "" ? undefined : env["GMS_CONFIG"]);
  if (given !== undefined) return given;
  const local = resolve(options.cwd ?? process.cwd(), "config", "gms.yaml");
  return existsSync(local) ? local : BUNDLED_CONFIG;
}

/** loadConfig reads the YAML file (configPath), applies GMS_PORT and GMS_DATABASE_URL, and validates the result. */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const path = configPath(options);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read configuration ${path}: ${(e as Error).message}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (e) {
    // The parser's first line says what and where; the lines after it quote the file, which may hold an API key.
    const what = ((e as Error).message.split("\n", 1)[0] ?? "").replace(/:$/, "");
    throw new ConfigError(`${path} is not valid YAML: ${what}`, { cause: e });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${path}: expected a mapping of sections at the top level`);
  }
  const doc = raw as Record<string, Record<string, unknown> | undefined>;
  const port = env["GMS_PORT"];
  if (port !== undefined && port !== "") {
    const n = Number(port);
    if (!Number.isInteger(n)) throw new ConfigError(`GMS_PORT: "${port}" is not a port number`);
    doc["server"] = { ...doc["server"], port: n };
  }
  const url = env["GMS_DATABASE_URL"];
  if (url !== undefined && url !== "") doc["database"] = { ...doc["database"], url };
  return parseConfig(doc, path);
}

/** DatabaseOptions are the store's timeouts and pool size from `database.*`, in openDatabase's terms. */
export interface DatabaseOptions {
  queryTimeoutMs: number;
  acquireTimeoutMs: number;
  connectTimeoutMs: number;
  busyTimeoutMs: number;
  poolMax: number;
}

/** chatEndpoints are the chat endpoints the configuration names: the default one and every service's. */
export function chatEndpoints(config: Config): Set<string> {
  const names = new Set([config.chat.default_endpoint]);
  for (const svc of Object.values(config.services)) if (svc.endpoint !== undefined) names.add(svc.endpoint);
  return names;
}

/**
 * requestReadLimit is the largest request message the server reads, in bytes: a little above the
 * largest legal request, a full data record with its keys and framing, or a chat file.
 */
export function requestReadLimit(config: Config): number {
  const storage = config.storage;
  return Math.max(storage.max_data_bytes + storage.max_entries * (storage.max_key_bytes + 64), config.chat.files.max_file_bytes) + 64 * 1024;
}

/**
 * listenerTimeouts reads the `server.*_timeout_seconds` that bound every port the server listens on
 * (the main one and the metrics port), in the shape listen() takes them.
 */
export function listenerTimeouts(config: Config): { headersTimeoutMs: number; firstBytesTimeoutMs: number; requestTimeoutMs: number; keepAliveTimeoutMs: number; http2IdleTimeoutMs: number } {
  const s = config.server;
  return {
    headersTimeoutMs: s.headers_timeout_seconds * 1000,
    firstBytesTimeoutMs: s.first_bytes_timeout_seconds * 1000,
    requestTimeoutMs: s.request_timeout_seconds * 1000,
    keepAliveTimeoutMs: s.keep_alive_timeout_seconds * 1000,
    http2IdleTimeoutMs: s.http2_idle_timeout_seconds * 1000,
  };
}

/** databaseOptions reads the `database.*` timeouts and pool size for openDatabase. */
export function databaseOptions(config: Config): DatabaseOptions {
  const d = config.database;
  return {
    queryTimeoutMs: Math.round(d.query_timeout_seconds * 1000),
    acquireTimeoutMs: Math.round(d.acquire_timeout_seconds * 1000),
    connectTimeoutMs: Math.round(d.connect_timeout_seconds * 1000),
    busyTimeoutMs: Math.round(d.sqlite_busy_timeout_seconds * 1000),
    poolMax: d.pool_max,
  };
}

/** REDACTED stands for a secret of the configuration wherever it is shown. */
export const REDACTED = "<redacted>";

/**
 * redactedConfig is the configuration as an operator may read it (AdminService.GetConfiguration):
 * plain JSON values, unset options left out, every secret replaced — an API key and its digest by
 * REDACTED, the password in the database and Redis URLs by `***` (redactUrl). A secret added to
 * the schema must be added here; test/admin.test.ts puts one in every such place and looks for it
 * in the output.
 */
export function redactedConfig(config: Config): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(config)) as Record<string, unknown> & {
    auth: { api_keys: Record<string, unknown>[] };
    database: { url: string };
    bus: { redis_url?: string };
  };
  for (const k of copy.auth.api_keys) {
    if ("key" in k) k["key"] = REDACTED;
    if ("key_sha256" in k) k["key_sha256"] = REDACTED;
  }
  copy.database.url = redactUrl(copy.database.url);
  if (copy.bus.redis_url !== undefined) copy.bus.redis_url = redactUrl(copy.bus.redis_url);
  return copy;
}
