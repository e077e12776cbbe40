// Live reload: AdminService.ReloadConfig and SIGHUP read the configuration file again. An invalid
// file is refused with its reasons and nothing changes; a valid one has its numbers synchronised
// into the store, then replaces the configuration in effect (ConfigHolder), which every part of the
// server reads when it needs a setting: no connection or stream is dropped. Settings read only at
// start (the listener, the database, the bus: RESTART_SETTINGS) are reported as needing a restart.
// How the configuration flows through the server: docs/configuration.md.
import type { Logger } from "pino";
import { ConfigError, requestReadLimit, type Config, type ConfigSource } from "./config.js";
import { GmsError } from "./domain/errors.js";

/** ReloadOutcome is how a reload of the configuration ended: put in effect, refused (an invalid file), or failed (the store could not take its numbers). */
export type ReloadOutcome = "applied" | "refused" | "failed";

/** ConfigHolder holds the configuration in effect: `current` is what every part reads, `replace` what a reload does. */
export interface ConfigHolder {
  readonly current: ConfigSource;
  replace(next: Config): void;
}

/** holdConfig makes the holder of a server's configuration, starting with `initial`. */
export function holdConfig(initial: Config): ConfigHolder {
  let config = initial;
  return {
    current: () => config,
    replace(next) {
      config = next;
    },
  };
}

/**
 * RESTART_SETTINGS are the settings read once, at start: the listener's (address, TLS, timeouts
 * and caps of connections and streams, how requests are decoded), the metrics registry and its
 * listener, the database and the bus. A reload that changes one applies everything else and names it as
 * needing a restart; the running server keeps what it started with.
 */
export const RESTART_SETTINGS: readonly string[] = [
  "server.host",
  "server.port",
  "server.tls",
  "server.headers_timeout_seconds",
  "server.first_bytes_timeout_seconds",
  "server.request_timeout_seconds",
  "server.keep_alive_timeout_seconds",
  "server.http2_idle_timeout_seconds",
  "server.max_connections",
  "server.max_connections_per_peer",
  "server.max_streams_per_connection",
  "server.max_streams_per_peer",
  "server.unlimited_peers",
  "server.compress_min_bytes",
  "server.ignore_unknown_json_fields",
  "server.metrics.enabled",
  "server.streams",
  "server.metrics.listen",
  "database",
  "bus",
];

/**
 * READ_LIMIT_SETTINGS are the limits the largest request a server reads is sized from
 * (requestReadLimit, fixed at start): raising one above what the server started with takes a
 * restart for requests larger than the start's read limit; lowering one takes effect at once.
 */
const READ_LIMIT_SETTINGS = ["storage.max_data_bytes", "storage.max_entries", "storage.max_key_bytes", "chat.files.max_file_bytes"] as const;

/** ConfigChanges say what a reload changed: names and counts, never a key or a value. */
export interface ConfigChanges {
  /** sections are the top-level sections that changed ("auth", "resources"...). */
  sections: string[];
  /** settings are the settings that changed, as dotted paths ("rate_limits.peer.burst", "resources.DNIS.numbers"); a list counts as one setting. */
  settings: string[];
  groupsAdded: string[];
  groupsRemoved: string[];
  groupsChanged: string[];
  /** numbersAdded and numbersRetired are what the synchronisation of the numbers did in the store. */
  numbersAdded: number;
  numbersRetired: number;
  servicesAdded: string[];
  servicesRemoved: string[];
  servicesChanged: string[];
  /** apiKeys counts the keys by name: added, removed, and changed (another key, roles or flags under the same name). */
  apiKeysAdded: number;
  apiKeysRemoved: number;
  apiKeysChanged: number;
  /** restartRequired are the settings that differ from what the server started with and take effect only at a restart. */
  restartRequired: string[];
  /** loadedAt is when the configuration now in effect was loaded (ms). */
  loadedAt: number;
}

/** isRecord tells a plain object (a section, a group) from a value or a list. */
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** same compares two settings by value. */
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** changedPaths lists the dotted paths where `a` and `b` differ, down to values and lists (a list is compared whole). */
export function changedPaths(a: unknown, b: unknown, path = ""): string[] {
  if (isRecord(a) && isRecord(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedPaths(a[k], b[k], path === "" ? k : `${path}.${k}`));
  }
  return same(a, b) ? [] : [path];
}

/** namesChanged sorts the names of two records into added, removed and changed. */
function namesChanged(before: Record<string, unknown>, after: Record<string, unknown>): { added: string[]; removed: string[]; changed: string[] } {
  const names = (r: Record<string, unknown>) => Object.keys(r).sort();
  return {
    added: names(after).filter((n) => !(n in before)),
    removed: names(before).filter((n) => !(n in after)),
    changed: names(after).filter((n) => n in before && !same(before[n], after[n])),
  };
}

/**
 * compareConfigs says what replacing `before` with `after` changes (ConfigChanges without the
 * store's counts), and which settings of `after` differ from `started` (what the server's listener,
 * database and bus were built with) and so need a restart.
 */
export function compareConfigs(before: Config, after: Config, started: Config): Omit<ConfigChanges, "numbersAdded" | "numbersRetired" | "loadedAt"> {
  const settings = changedPaths(before, after);
  const groups = namesChanged(before.resources, after.resources);
  const services = namesChanged(before.services, after.services);
  const keysBefore = new Map(before.auth.api_keys.map((k) => [k.name, k]));
  const keysAfter = new Map(after.auth.api_keys.map((k) => [k.name, k]));
  const restart = changedPaths(started, after).filter((p) => RESTART_SETTINGS.some((r) => p === r || p.startsWith(`${r}.`)));
  const restartRequired = [...new Set(restart.map((p) => RESTART_SETTINGS.find((r) => p === r || p.startsWith(`${r}.`)) ?? p))];
  if (requestReadLimit(after) > requestReadLimit(started)) {
    for (const name of READ_LIMIT_SETTINGS) if (settingOf(after, name) > settingOf(started, name)) restartRequired.push(name);
  }
  return {
    sections: [...new Set(settings.map((p) => p.split(".")[0] ?? p))],
    settings,
    groupsAdded: groups.added,
    groupsRemoved: groups.removed,
    groupsChanged: groups.changed,
    servicesAdded: services.added,
    servicesRemoved: services.removed,
    servicesChanged: services.changed,
    apiKeysAdded: [...keysAfter.keys()].filter((n) => !keysBefore.has(n)).length,
    apiKeysRemoved: [...keysBefore.keys()].filter((n) => !keysAfter.has(n)).length,
    apiKeysChanged: [...keysAfter].filter(([n, k]) => keysBefore.has(n) && !same(keysBefore.get(n), k)).length,
    restartRequired,
  };
}

/** settingOf reads one numeric setting by its dotted path. */
function settingOf(config: Config, path: string): number {
  let v: unknown = config;
  for (const part of path.split(".")) v = isRecord(v) ? v[part] : undefined;
  return typeof v === "number" ? v : 0;
}

/** ReloadDeps are what a reload reads and changes. */
export interface ReloadDeps {
  holder: ConfigHolder;
  /** started is the configuration the server started with (its listener, database and bus were built from it). */
  started: Config;
  /** load reads and validates the configuration file again (loadConfig); undefined for a server started without one. */
  load: (() => Config) | undefined;
  /** syncNumbers brings the stored numbers in line with the resource groups about to take effect (Access.syncNumbers). */
  syncNumbers: (groups: Config["resources"]) => Promise<{ added: number; retired: number }>;
  log: Logger;
  /** reloaded counts each reload by outcome (the metrics). */
  reloaded?: ((outcome: ReloadOutcome, loadedAt?: number) => void) | undefined;
  /** applied runs once a new configuration is in effect (the log level). */
  applied?: ((config: Config) => void) | undefined;
  now?: () => number;
}

/** Reload reads the configuration file again and puts it in effect; it throws when it refused, having changed nothing. */
export type Reload = () => Promise<ConfigChanges>;

/** NO_FILE is the refusal of a reload on a server started without a configuration file. */
const NO_FILE = "this server was started without a configuration file: there is nothing to reload";

/** noReload is the reload of a server that has no configuration file to read again: always refused. */
export const noReload: Reload = () => Promise.reject(new GmsError("failed_precondition", NO_FILE));

/**
 * reasonsOf are the lines of a ConfigError: each names a setting and what is wrong with it (the
 * messages name settings and rules, never an API key; a YAML error gives its line and column).
 */
export function reasonsOf(e: ConfigError): string[] {
  return e.message
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** oneLine joins reasons into one line: after a heading ("… is not valid:") with a space, between reasons with "; ". */
function oneLine(reasons: readonly string[]): string {
  return reasons.reduce((line, r) => (line === "" ? r : line.endsWith(":") ? `${line} ${r}` : `${line}; ${r}`), "");
}

/**
 * createReload makes the reload of a server (ReloadConfig, SIGHUP). One runs at a time; a second
 * asked for meanwhile runs after it. Refused: the file cannot be read or is not valid
 * (FAILED_PRECONDITION with the reasons; logged at error with them); failed: the store could not
 * synchronise the numbers (the store's error; nothing changed: the synchronisation is one
 * transaction). Applied: logged with what changed and what needs a restart.
 */
export function createReload(deps: ReloadDeps): Reload {
  const { holder, log } = deps;
  const now = deps.now ?? Date.now;
  const reloaded = deps.reloaded ?? (() => undefined);
  let running: Promise<unknown> = Promise.resolve();

  async function reload(): Promise<ConfigChanges> {
    if (deps.load === undefined) {
      reloaded("refused");
      throw new GmsError("failed_precondition", NO_FILE);
    }
    let next: Config;
    try {
      next = deps.load();
    } catch (e) {
      if (!(e instanceof ConfigError)) {
        reloaded("failed");
        log.error({ event: "config", err: e }, "configuration reload failed; the running configuration stays");
        throw e;
      }
      const reasons = reasonsOf(e);
      reloaded("refused");
      log.error({ event: "config", reasons }, "configuration reload refused; the running configuration stays");
      throw new GmsError("failed_precondition", `configuration reload refused; the running configuration stays: ${oneLine(reasons)}`);
    }
    const before = holder.current();
    const compared = compareConfigs(before, next, deps.started);
    let synced: { added: number; retired: number };
    try {
      // The numbers first, in one transaction: until the new configuration is in effect, a retired
      // number is already out of the allocations, and a new one is not yet asked for.
      synced = await deps.syncNumbers(next.resources);
    } catch (e) {
      reloaded("failed");
      log.error({ event: "config", err: e }, "configuration reload failed: the access numbers could not be synchronised; the running configuration stays");
      throw e;
    }
    holder.replace(next);
    const loadedAt = now();
    deps.applied?.(next);
    reloaded("applied", loadedAt);
    const changes: ConfigChanges = { ...compared, numbersAdded: synced.added, numbersRetired: synced.retired, loadedAt };
    log.info(
      {
        event: "config",
        sections: changes.sections,
        groupsAdded: changes.groupsAdded,
        groupsRemoved: changes.groupsRemoved,
        numbersAdded: changes.numbersAdded,
        numbersRetired: changes.numbersRetired,
        apiKeysAdded: changes.apiKeysAdded,
        apiKeysRemoved: changes.apiKeysRemoved,
        apiKeysChanged: changes.apiKeysChanged,
        restartRequired: changes.restartRequired,
      },
      "configuration reloaded",
    );
    if (changes.restartRequired.length > 0) log.warn({ event: "config", restartRequired: changes.restartRequired }, "configuration reloaded; these settings take effect only at the next restart");
    if (next.auth.api_keys.length === 0 && before.auth.api_keys.length > 0) log.warn("auth: no api_keys configured any more; the server is open to every caller with every role");
    return changes;
  }

  return () => {
    const result = running.then(reload, reload);
    running = result.catch(() => undefined);
    return result;
  };
}
