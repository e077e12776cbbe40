// redactUrl: the secrets of a database or Redis URL never reach a log line or an operator's screen.
import { describe, expect, it } from "vitest";
import { redactUrl } from "../../src/redact.js";

describe("redactUrl", () => {
  it.each([
    ["mysql://root:s3cret@127.0.0.1:3306/gms", "mysql://root:***@127.0.0.1:3306/gms"],
    // A password without a user (Redis's usual form), and one holding an unencoded "@".
    ["redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"],
    ["mysql://gms:pa@ss@db:3306/gms", "mysql://gms:***@db:3306/gms"],
    ["rediss://user:p%40ss@redis:6380", "rediss://user:***@redis:6380"],
    // Driver options in the query string.
    ["mysql://gms@db/gms?password=s3cret&charset=utf8mb4", "mysql://gms@db/gms?password=***&charset=utf8mb4"],
    ["redis://redis:6379?authToken=s3cret&pwd=s3cret", "redis://redis:6379?authToken=***&pwd=***"],
    // Nothing secret: unchanged.
    ["mysql://root@127.0.0.1:3306/gms", "mysql://root@127.0.0.1:3306/gms"],
    ["sqlite:data/gms.db", "sqlite:data/gms.db"],
    ["sqlite:/var/lib/my gms/gms.db", "sqlite:/var/lib/my gms/gms.db"],
  ])("%s → %s", (url, shown) => {
    expect(redactUrl(url)).toBe(shown);
    expect(redactUrl(url)).not.toContain("s3cret");
  });

  it("hides everything before the host of a URL it cannot parse", () => {
    expect(redactUrl("mysql://u:s3cret@bad host/gms")).toBe("mysql://***@bad host/gms");
  });
});
