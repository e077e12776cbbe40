// What a reload reports (compareConfigs in src/reload.ts), as plain functions: names and counts,
// the settings that need a restart, never a key.
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { changedPaths, compareConfigs } from "../../src/reload.js";

const KEY_A = "unit-reload-key-aaaaaaaaaaaa";
const KEY_B = "unit-reload-key-bbbbbbbbbbbb";

const raw = {
  auth: { api_keys: [{ name: "crm", key: KEY_A, roles: ["backend"] }] },
  resources: { a: { numbers: ["100", "101"] }, b: { numbers: ["200"] } },
  services: { s1: { service: "request-chat" }, s2: { service: "request-chat", endpoint: "x" } },
};
/** config is the base configuration with some sections replaced. */
const config = (sections: Record<string, unknown> = {}) => parseConfig({ ...raw, ...sections });
const started = config();

describe("compareConfigs", () => {
  it("names the groups, services and settings that changed, and counts the keys by name", () => {
    const after = config({
      auth: { api_keys: [{ name: "crm", key: KEY_B, roles: ["backend"] }, { name: "ops", key: KEY_A, roles: ["admin"] }] },
      resources: { a: { numbers: ["100"] }, c: { numbers: ["300"] } },
      services: { s1: { service: "request-chat", ttl: 60 }, s3: { service: "request-interaction" } },
      rate_limits: { peer: { rate_per_second: 10, burst: 20 } },
    });
    const c = compareConfigs(started, after, started);
    expect(c).toMatchObject({
      groupsAdded: ["c"],
      groupsRemoved: ["b"],
      groupsChanged: ["a"],
      servicesAdded: ["s3"],
      servicesRemoved: ["s2"],
      servicesChanged: ["s1"],
      apiKeysAdded: 1,
      apiKeysRemoved: 0,
      apiKeysChanged: 1,
      restartRequired: [],
    });
    expect(c.sections).toEqual(["auth", "rate_limits", "resources", "services"]);
    expect(c.settings).toEqual(expect.arrayContaining(["auth.api_keys", "rate_limits.peer.burst", "rate_limits.peer.rate_per_second", "resources.a.numbers", "resources.b", "resources.c"]));
    expect(JSON.stringify(c)).not.toContain(KEY_B);
  });

  it("needs a restart for the listener's, the database's and the bus's settings, compared with what the server started with", () => {
    const server = { port: 9999, tls: { cert: "c.pem", key: "k.pem" } };
    const moved = config({ server });
    // A second reload that leaves the port changed still says so: the listener has not moved.
    const again = config({ server, log: { level: "debug" } });
    expect(compareConfigs(moved, again, started).restartRequired).toEqual(["server.port", "server.tls"]);
    expect(compareConfigs(moved, again, started).settings).toEqual(["log.level"]);
    expect(compareConfigs(started, config({ bus: { redis_url: "redis://h:6379" } }), started).restartRequired).toEqual(["bus"]);
  });

  it("needs a restart for a storage or file limit raised above the start's read limit, not for one lowered", () => {
    const raised = config({ storage: { max_data_bytes: 50 * 1024 * 1024 } });
    expect(compareConfigs(started, raised, started).restartRequired).toEqual(["storage.max_data_bytes"]);
    const lowered = config({ storage: { max_data_bytes: 1024 } });
    expect(compareConfigs(started, lowered, started).restartRequired).toEqual([]);
  });
});

describe("changedPaths", () => {
  it("walks sections down to values and compares a list whole", () => {
    expect(changedPaths({ a: { b: 1, c: [1, 2] }, d: 1 }, { a: { b: 2, c: [1, 2, 3] }, e: 1 })).toEqual(["a.b", "a.c", "d", "e"]);
    expect(changedPaths({ a: 1 }, { a: 1 })).toEqual([]);
  });
});
