import { describe, expect, it } from "vitest";
import { bookedUntil, bookingSecondsOf, codeChooser, extendedUntil, freeAfterRelease, freeCode, grantOf, randomCode } from "../../src/domain/access.js";
import { GmsError } from "../../src/domain/errors.js";

// The access rules the store runs or is given, without a database: the fast tier beside the store
// and server tests.

describe("codes", () => {
  it("randomCode draws the length asked, in decimal digits", () => {
    for (const length of [4, 6, 7, 12]) expect(randomCode(length)).toMatch(new RegExp(`^[0-9]{${length}}$`));
    expect(new Set(Array.from({ length: 50 }, () => randomCode(12))).size).toBe(50);
  });

  it("freeCode draws a code the number's live reservations do not hold", () => {
    // Of the ten 1-digit codes nine are taken: the draws find the one left (20 draws miss it with chance 0.9^20 ≈ 12%; 30 tries).
    const taken = new Set(["0", "1", "2", "3", "4", "6", "7", "8", "9"]);
    const found = Array.from({ length: 30 }, () => {
      try {
        return freeCode(taken, 1, "+18005550100");
      } catch {
        return undefined;
      }
    });
    expect(found.filter((c) => c !== undefined).every((c) => c === "5")).toBe(true);
    expect(found).toContain("5");
  });

  it("a number crowded with codes asks for longer ones (RESOURCE_EXHAUSTED, naming the number)", () => {
    const all = new Set(Array.from({ length: 10 }, (_, i) => String(i)));
    let e: unknown;
    try {
      freeCode(all, 1, "+18005550100");
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(GmsError);
    expect((e as GmsError).kind).toBe("resource_exhausted");
    expect((e as GmsError).message).toBe("no free 1-digit access code on +18005550100; use longer codes");
  });

  it("codeChooser draws codes of its length, avoiding those taken", () => {
    const choose = codeChooser(4);
    expect(choose(new Set(), undefined)).toMatch(/^[0-9]{4}$/);
    // The even codes taken: every draw is an odd one (20 draws each give one with chance 1 - 2^-20).
    const taken = new Set(Array.from({ length: 5_000 }, (_, i) => String(2 * i).padStart(4, "0")));
    const drawn = Array.from({ length: 200 }, () => choose(taken, "+18005550100"));
    expect(drawn.every((c) => /^[0-9]{4}$/.test(c) && Number(c) % 2 === 1)).toBe(true);
    const all = new Set(Array.from({ length: 10_000 }, (_, i) => String(i).padStart(4, "0")));
    expect(() => choose(all, "+18005550100")).toThrow("no free 4-digit access code on +18005550100");
  });
});

describe("booking", () => {
  it("its length: the service's option, else the request's, else the group's, else the global default; a configured 0 wins too", () => {
    expect(bookingSecondsOf(20, 90, 60, 30)).toBe(20);
    expect(bookingSecondsOf(undefined, 90, 60, 30)).toBe(90);
    expect(bookingSecondsOf(undefined, undefined, 60, 30)).toBe(60);
    expect(bookingSecondsOf(undefined, undefined, undefined, 30)).toBe(30);
    expect(bookingSecondsOf(0, 90, 60, 30)).toBe(0);
    expect(bookingSecondsOf(undefined, 0, 60, 30)).toBe(0);
  });

  it("a reservation never outlives its session", () => {
    expect(bookedUntil(1_000, 30, 100_000)).toBe(31_000);
    expect(bookedUntil(1_000, 300, 100_000)).toBe(100_000);
  });

  it("a released number is free again after its group's cool-down", () => {
    expect(freeAfterRelease(1_000, 0)).toBe(1_000);
    expect(freeAfterRelease(1_000, 5)).toBe(6_000);
  });

  it("extending a session extends each reservation as far as its group allows, never past the session, never shorter", () => {
    const now = 100_000;
    // Allowed 600 s from now, the session lives 3600 s: 600 s.
    expect(extendedUntil(now + 60_000, now, now + 3_600_000, 600)).toBe(now + 600_000);
    // The session lives less than the group allows: the session's end.
    expect(extendedUntil(now + 60_000, now, now + 120_000, 600)).toBe(now + 120_000);
    // A group that allows no extension (0 s): as it was.
    expect(extendedUntil(now + 60_000, now, now + 3_600_000, 0)).toBe(now + 60_000);
    // Already booked past what the group allows from now: as it was.
    expect(extendedUntil(now + 900_000, now, now + 3_600_000, 600)).toBe(now + 900_000);
  });

  it("a grant is what callers see of a reservation: its length in whole seconds", () => {
    expect(grantOf({ accessNumber: "+18005550100", accessCode: undefined, resourceGroup: "g", createdAt: 1_000, expiresAt: 61_400 })).toEqual({
      accessNumber: "+18005550100",
      accessCode: undefined,
      resourceGroup: "g",
      expiresAt: 61_400,
      expirationSeconds: 60,
    });
  });
});
