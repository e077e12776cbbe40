import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { ConfigError, configPath, expandNumbers, loadConfig, parseConfig } from "../src/config.js";
import { BUNDLED_CONFIG } from "../src/package-info.js";

/** configError parses `raw` and returns the ConfigError it must raise. */
function configError(raw: unknown): ConfigError {
  try {
    parseConfig(raw, "test.yaml");
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("the configuration was accepted");
}

const group = (numbers: string[], more: Record<string, unknown> = {}) => ({ resources: { G: { numbers, ...more } } });

describe("the example configuration config/gms.yaml", () => {
  const config = loadConfig({ path: "config/gms.yaml", env: {} });

  it("carries the seed's iPhoneService: a builtin request-interaction", () => {
    expect(config.services["iPhoneService"]).toMatchObject({ builtin: "request-interaction", ttl: 7200, provide_code: false, resource_group: "iPhoneService" });
  });

  it("expands the DNIS group's ranges into single numbers", () => {
    const dnis = config.resources["DNIS"];
    expect(dnis?.numbers).toEqual(Array.from({ length: 10 }, (_, i) => `+1800555010${i}`));
    expect(dnis).toMatchObject({ allocation: "round-robin", locking: true, booking_expiration_timeout: 60, access_code_length: 6, cooldown_seconds: 5 });
    expect(config.resources["iPhoneService"]?.numbers).toHaveLength(20);
  });

  it("gives the documented defaults", () => {
    expect(config.server).toMatchObject({ host: "0.0.0.0", port: 8080 });
    expect(config.database.url).toBe("sqlite:data/gms.db");
    expect(config.auth).toEqual({ api_keys: [], public_roles: ["app"] });
    expect(config.storage).toMatchObject({ default_ttl_seconds: 30, max_entries: 100, max_key_bytes: 256, max_value_bytes: 1048576, max_data_bytes: 10485760 });
  });
});

describe("validation names the offending key", () => {
  it.each([
    [{ server: { prot: 80 } }, "server", '"prot"'],
    [{ sever: { port: 80 } }, "(top level)", '"sever"'],
    [{ resources: { DNIS: { numbers: ["+18005550100"], colour: "red" } } }, "resources.DNIS", '"colour"'],
    [{ services: { s: { service: "request-interaction", tll: 60 } } }, "services.s", '"tll"'],
    [{ auth: { api_keys: [{ name: "k", key: "0123456789abcdef", roles: ["app"], scope: "x" }] } }, "auth.api_keys.0", '"scope"'],
  ])("an unknown key: %j", (raw, path, key) => {
    const e = configError(raw);
    expect(e.message).toContain(`${path}: unknown key(s) ${key}`);
  });

  it.each([
    [group(["+18005550100"], { allocation: "sometimes" }), "resources.G.allocation"],
    [{ server: { port: "eighty" } }, "server.port"],
    [{ server: { port: 70000 } }, "server.port"],
    [{ database: { url: "postgres://localhost/gms" } }, "database.url"],
    [{ storage: { default_ttl_seconds: 0 } }, "storage.default_ttl_seconds"],
    [{ auth: { public_roles: ["everyone"] } }, "auth.public_roles.0"],
    [{ auth: { api_keys: [{ name: "k", key: "short", roles: ["app"] }] } }, "auth.api_keys.0.key"],
    [{ auth: { api_keys: [{ name: "k", key: "0123456789abcdef", key_sha256: "0".repeat(64), roles: ["app"] }] } }, "auth.api_keys.0.key"],
    [{ auth: { api_keys: [{ name: "k", key_sha256: "XYZ", roles: ["app"] }] } }, "auth.api_keys.0.key_sha256"],
    [{ auth: { api_keys: [{ name: "k", key: "0123456789abcdef", roles: ["root"] }] } }, "auth.api_keys.0.roles.0"],
    [{ services: { s: { service: "request-teleport" } } }, "services.s.service"],
    [{ services: { s: { ttl: 60 } } }, "services.s.service"],
    [{ services: { s: { service: "request-interaction", name: "request-access" } } }, "services.s.name"],
    [group(["+18005550100", "not-a-number"]), "resources.G.numbers"],
    [group(["+18005550100", "+18005550100"]), "resources.G.numbers"],
    [group(["+18005550105..+18005550100"]), "resources.G.numbers"],
  ])("a bad value: %j", (raw, path) => {
    expect(configError(raw).message).toContain(`  ${path}: `);
  });

  it("a bad group or service name, saying what a name may hold", () => {
    expect(configError({ resources: { "bad name!": { numbers: ["+18005550100"] } } }).message).toContain("resources.bad name!: invalid name: group names: letters, digits");
    expect(configError({ services: { "a/b": { service: "request-access" } } }).message).toContain("services.a/b: invalid name: service names");
  });

  it("a service naming a resource group that does not exist", () => {
    expect(configError({ services: { s: { service: "request-interaction", resource_group: "nope" } } }).message).toContain("services.s.resource_group");
  });

  it("a key limit above what the key column holds (512)", () => {
    expect(parseConfig({ storage: { max_key_bytes: 512 } }).storage.max_key_bytes).toBe(512);
    expect(configError({ storage: { max_key_bytes: 513 } }).message).toContain("storage.max_key_bytes");
  });

  it("the metrics listener: off by default; loopback and 64 connections when set; a port of its own, only with metrics enabled", () => {
    expect(parseConfig({}).server.metrics.listen).toBeUndefined();
    expect(parseConfig({ server: { metrics: { listen: { port: 9464 } } } }).server.metrics.listen).toEqual({ host: "127.0.0.1", port: 9464, max_connections: 64 });
    expect(configError({ server: { metrics: { listen: {} } } }).message).toContain("server.metrics.listen.port: ");
    expect(configError({ server: { metrics: { listen: { port: 9464, tls: true } } } }).message).toContain('server.metrics.listen: unknown key(s) "tls"');
    expect(configError({ server: { metrics: { enabled: false, listen: { port: 9464 } } } }).message).toContain("server.metrics.listen: metrics are disabled");
    // The main port on every address takes the metrics port's too; on another address the same number is free.
    expect(configError({ server: { port: 9464, metrics: { listen: { port: 9464 } } } }).message).toContain("server.metrics.listen.port: 9464 is server.port");
    expect(configError({ server: { host: "10.0.0.5", port: 9464, metrics: { listen: { host: "10.0.0.5", port: 9464 } } } }).message).toContain("server.metrics.listen.port");
    expect(parseConfig({ server: { host: "10.0.0.5", port: 9464, metrics: { listen: { port: 9464 } } } }).server.metrics.listen?.port).toBe(9464);
  });

  it("lists every problem at once", () => {
    const e = configError({ server: { port: -1 }, storage: { max_entries: "many" } });
    expect(e.message).toContain("server.port");
    expect(e.message).toContain("storage.max_entries");
  });

  it("accepts an empty document: every default applies", () => {
    expect(parseConfig(null).server.port).toBe(8080);
  });
});

describe("services", () => {
  it("take `name` as the seed's spelling of `service`, and `built-in` as the seed's spelling of builtin", () => {
    const config = parseConfig({
      services: {
        a: { type: "built-in", name: "request-access" },
        b: { service: "match-interaction" },
        c: { service: "request-interaction", name: "request-interaction" },
      },
    });
    expect(config.services["a"]?.builtin).toBe("request-access");
    expect(config.services["b"]?.builtin).toBe("match-interaction");
    expect(config.services["c"]?.builtin).toBe("request-interaction");
  });
});

describe("expandNumbers", () => {
  it("passes single numbers through and expands inclusive ranges", () => {
    expect(expandNumbers(["+18005550100", "+18005550200..+18005550202"])).toEqual(["+18005550100", "+18005550200", "+18005550201", "+18005550202"]);
  });

  it("a range of one number", () => {
    expect(expandNumbers(["+18005550100..+18005550100"])).toEqual(["+18005550100"]);
  });

  it("keeps leading zeros and carries across digits", () => {
    expect(expandNumbers(["0099..0101"])).toEqual(["0099", "0100", "0101"]);
    expect(expandNumbers(["+1999..+2001"])).toEqual(["+1999", "+2000", "+2001"]);
  });

  it("counts exactly beyond 2^53", () => {
    expect(expandNumbers(["123456789012345678..123456789012345680"])).toEqual(["123456789012345678", "123456789012345679", "123456789012345680"]);
  });

  it("refuses ends of different lengths, different '+', a reversed range and a huge one", () => {
    expect(() => expandNumbers(["+1800..+18001"])).toThrow(/same length/);
    expect(() => expandNumbers(["+1800..1801"])).toThrow(/same "\+"/);
    expect(() => expandNumbers(["+1802..+1800"])).toThrow(/below the start/);
    expect(() => expandNumbers(["+10000000..+10100000"])).toThrow(/more than 100000/);
  });

  it("takes exactly 100000 numbers", () => {
    expect(expandNumbers(["+10000000..+10099999"])).toHaveLength(100_000);
  });
});

describe("loadConfig and the command line", () => {
  let dir: string;
  let good: string;
  let bad: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "opengms-config-"));
    good = join(dir, "good.yaml");
    bad = join(dir, "bad.yaml");
    writeFileSync(good, toYaml({ server: { port: 9000 }, database: { url: "sqlite:/tmp/x.db" } }));
    writeFileSync(bad, toYaml({ server: { port: 9000 }, resources: { DNIS: { numbers: ["+18005550100"], allocation: "sometimes" } } }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("GMS_PORT and GMS_DATABASE_URL override the file", () => {
    const config = loadConfig({ path: good, env: { GMS_PORT: "7001", GMS_DATABASE_URL: "mysql://root@127.0.0.1:3306/gms" } });
    expect(config.server.port).toBe(7001);
    expect(config.database.url).toBe("mysql://root@127.0.0.1:3306/gms");
    const plain = loadConfig({ path: good, env: { GMS_PORT: "", GMS_DATABASE_URL: "" } });
    expect(plain.server.port).toBe(9000);
    expect(plain.database.url).toBe("sqlite:/tmp/x.db");
  });

  it("a bad override names the variable or the key", () => {
    expect(() => loadConfig({ path: good, env: { GMS_PORT: "http" } })).toThrow(/GMS_PORT/);
    expect(() => loadConfig({ path: good, env: { GMS_DATABASE_URL: "postgres://x/y" } })).toThrow(/database\.url/);
  });

  it("GMS_CONFIG names the file when no path is given", () => {
    expect(loadConfig({ env: { GMS_CONFIG: good } }).server.port).toBe(9000);
  });

  it("an unreadable file or bad YAML is a ConfigError", () => {
    expect(() => loadConfig({ path: join(dir, "missing.yaml"), env: {} })).toThrow(ConfigError);
    const broken = join(dir, "broken.yaml");
    writeFileSync(broken, "server: [port: 1\n");
    expect(() => loadConfig({ path: broken, env: {} })).toThrow(/not valid YAML/);
    const list = join(dir, "list.yaml");
    writeFileSync(list, "- a\n- b\n");
    expect(() => loadConfig({ path: list, env: {} })).toThrow(/mapping/);
  });

  const checkConfig = (path: string) =>
    promisify(execFile)(process.execPath, ["--import", "tsx", "src/main.ts", "check-config", "--config", path], { env: { ...process.env, GMS_PORT: "", GMS_DATABASE_URL: "" } }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );

  it("`check-config` exits non-zero on a bad file, naming the key", async () => {
    const { code, stderr } = await checkConfig(bad);
    expect(code).not.toBe(0);
    expect(stderr).toContain("resources.DNIS.allocation");
  });

  it("`check-config` accepts a good file", async () => {
    const { code, stdout } = await checkConfig(good);
    expect(code).toBe(0);
    expect(stdout).toContain("configuration is valid");
  });
});

describe("which configuration file is read (configPath)", () => {
  const dir = mkdtempSync(join(tmpdir(), "gms-config-path-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is --config first, then GMS_CONFIG", () => {
    expect(configPath({ path: "/etc/a.yaml", env: { GMS_CONFIG: "/etc/b.yaml" }, cwd: dir })).toBe("/etc/a.yaml");
    expect(configPath({ env: { GMS_CONFIG: "/etc/b.yaml" }, cwd: dir })).toBe("/etc/b.yaml");
  });

  it("is the example shipped with opengms where the working directory has no config/gms.yaml (or GMS_CONFIG is empty)", () => {
    expect(configPath({ env: {}, cwd: dir })).toBe(BUNDLED_CONFIG);
    expect(configPath({ env: { GMS_CONFIG: "" }, cwd: dir })).toBe(BUNDLED_CONFIG);
    expect(loadConfig({ env: {}, cwd: dir }).server.port).toBe(8080);
  });

  it("is config/gms.yaml of the working directory where there is one", () => {
    mkdirSync(join(dir, "config"), { recursive: true });
    writeFileSync(join(dir, "config", "gms.yaml"), toYaml({ server: { port: 9191 } }));
    expect(configPath({ env: {}, cwd: dir })).toBe(join(dir, "config", "gms.yaml"));
    expect(loadConfig({ env: {}, cwd: dir }).server.port).toBe(9191);
  });
});
