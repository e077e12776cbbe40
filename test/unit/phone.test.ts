// Phone and access numbers as people and IVRs write them, read for matching (src/domain/phone.ts):
// the formats the docs promise, and E.164 under access.default_country_code. No database.
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { normalizePhone, phoneReader } from "../../src/domain/phone.js";

describe("normalizePhone", () => {
  it.each([
    ["6504669999", "6504669999"],
    ["(650) 466-9999", "6504669999"],
    ["650.466.9999", "6504669999"],
    ["650 466 9999", "6504669999"],
    ["+1 (650) 466-9999", "+16504669999"],
    [" +1-650-466-9999 ", "+16504669999"],
    ["+44 20 7946 0958", "+442079460958"],
  ])("reads %j as %j", (raw, want) => {
    expect(normalizePhone("phone_number", raw)).toBe(want);
  });

  it.each(["", "12", "+", "abc", "650 466 999a", "650+4669999", "++16504669999", "+123456789012345678901", "650/466/9999"])("refuses %j, naming the field", (raw) => {
    expect(() => normalizePhone("phone_number", raw)).toThrow(/phone_number/);
  });
});

describe("phoneReader with a country code (access.default_country_code)", () => {
  const us = phoneReader({ defaultCountryCode: "1" });
  const uk = phoneReader({ defaultCountryCode: "44" });
  it.each(["6504669999", "(650) 466-9999", "1 650 466 9999", "1-650-466-9999", "011 1 650 466 9999", "+1 (650) 466-9999", "+16504669999"])("reads %j as +16504669999 in North America", (raw) => {
    expect(us("phone_number", raw)).toBe("+16504669999");
  });
  it.each(["020 7946 0958", "00 44 20 7946 0958", "+44 20 7946 0958", "2079460958"])("reads %j as +442079460958 in the UK", (raw) => {
    expect(uk("phone_number", raw)).toBe("+442079460958");
  });
  it("keeps another country's international number, and honours configured prefixes", () => {
    expect(us("phone_number", "011 44 20 7946 0958")).toBe("+442079460958");
    // Italy keeps the leading 0 of national numbers: no trunk prefix to drop.
    expect(phoneReader({ defaultCountryCode: "39", trunkPrefix: "" })("phone_number", "06 1234 5678")).toBe("+390612345678");
    expect(phoneReader({ defaultCountryCode: "49" })("phone_number", "030 1234567")).toBe("+49301234567");
  });
  it("refuses what is no phone number whatever the plan", () => {
    expect(() => us("access_number", "call me")).toThrow(/access_number/);
  });
  it("reads configured numbers the same way, and refuses two that are one number in E.164", () => {
    const config = parseConfig({ access: { default_country_code: "1" }, resources: { pool: { numbers: ["8005550100..8005550101", "+18005550102"] } } });
    expect(config.resources["pool"]?.numbers).toEqual(["+18005550100", "+18005550101", "+18005550102"]);
    expect(() => parseConfig({ access: { default_country_code: "1" }, resources: { pool: { numbers: ["8005550100", "+18005550100"] } } })).toThrow(/listed twice/);
    expect(() => parseConfig({ access: { default_country_code: "01" } })).toThrow(/default_country_code/);
  });
});
