import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { GmsError } from "../../src/domain/errors.js";
import { pick, resolveService } from "../../src/domain/services.js";

// Services from configuration and GMS's option precedence, without a database.

const config = parseConfig(
  {
    resources: { desk: { numbers: ["+18005550100..+18005550109"] } },
    services: {
      iPhoneService: { type: "builtin", service: "request-interaction", ttl: 120, provide_code: true, resource_group: "desk" },
      lobby: { service: "request-chat", endpoint: "lobby" },
    },
  },
  "test configuration",
);

const kindOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof GmsError ? e.kind : "other";
  }
  return "none";
};

describe("option precedence (pick)", () => {
  it("the configured option wins over the request, the request over the default", () => {
    expect(pick(true, false, false)).toBe(true);
    expect(pick(120, 30, 30)).toBe(120);
    expect(pick(undefined, 45, 30)).toBe(45);
    expect(pick(undefined, undefined, 30)).toBe(30);
    // A configured false or 0 is a choice, not an absence.
    expect(pick(false, true, true)).toBe(false);
    expect(pick(0, 5, 9)).toBe(0);
  });
});

describe("resolveService", () => {
  it("finds a configured service with the options it fixes", () => {
    const svc = resolveService(config, "iPhoneService", "request-interaction");
    expect(svc).toMatchObject({ name: "iPhoneService", builtin: "request-interaction" });
    expect(svc.options).toMatchObject({ ttl: 120, provide_code: true, resource_group: "desk" });
  });

  it("an empty name is the RPC's own builtin, which fixes nothing; a builtin is found by its name", () => {
    expect(resolveService(config, "", "match-interaction")).toEqual({ name: "match-interaction", builtin: "match-interaction", options: {} });
    expect(resolveService(config, "request-access", "request-access").options).toEqual({});
  });

  it("an unknown service is NOT_FOUND; another builtin's service through the wrong RPC is INVALID_ARGUMENT", () => {
    expect(kindOf(() => resolveService(config, "nope", "request-interaction"))).toBe("not_found");
    expect(kindOf(() => resolveService(config, "lobby", "request-interaction"))).toBe("invalid_argument");
    expect(kindOf(() => resolveService(config, "request-chat", "request-interaction"))).toBe("invalid_argument");
  });
});
