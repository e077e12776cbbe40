import { describe, expect, it } from "vitest";
import { chooseMatches, guardRefusal, judgeCall, locksNow, type MatchCandidate } from "../../src/domain/matching.js";

// The rules of matching, without a database: the fast tier beside the store and server tests.

const r = (id: string, phoneNumber: string, accessCode?: string) => ({ id, reservation: { phoneNumber, accessCode } }) satisfies MatchCandidate & { id: string };
const ids = (d: ReturnType<typeof chooseMatches<ReturnType<typeof r>>>) => ("matched" in d ? d.matched.map((m) => m.id) : d.reason);

describe("chooseMatches", () => {
  // Newest first, as the store gives them.
  const live = [r("c", "+16505550003", "333333"), r("b", "+16505550002", "222222"), r("a", "+16505550002", "111111")];

  it("no live reservation is no_reservation, whatever the call gives", () => {
    expect(ids(chooseMatches([], { returnMultiple: false }))).toBe("no_reservation");
    expect(ids(chooseMatches([], { code: "1", phone: "2", returnMultiple: true }))).toBe("no_reservation");
  });

  it("the number alone matches the most recent, or all with returnMultiple", () => {
    expect(ids(chooseMatches(live, { returnMultiple: false }))).toEqual(["c"]);
    expect(ids(chooseMatches(live, { returnMultiple: true }))).toEqual(["c", "b", "a"]);
  });

  it("a code given must match; a phone number given must match; both narrow", () => {
    expect(ids(chooseMatches(live, { code: "111111", returnMultiple: false }))).toEqual(["a"]);
    expect(ids(chooseMatches(live, { phone: "+16505550002", returnMultiple: false }))).toEqual(["b"]);
    expect(ids(chooseMatches(live, { phone: "+16505550002", returnMultiple: true }))).toEqual(["b", "a"]);
    expect(ids(chooseMatches(live, { phone: "+16505550002", code: "111111", returnMultiple: true }))).toEqual(["a"]);
  });

  it("says why nothing matched: the code first, then the phone", () => {
    expect(ids(chooseMatches(live, { code: "999999", returnMultiple: false }))).toBe("code_mismatch");
    expect(ids(chooseMatches(live, { code: "999999", phone: "+16505550002", returnMultiple: false }))).toBe("code_mismatch");
    expect(ids(chooseMatches(live, { phone: "+16505550009", returnMultiple: false }))).toBe("phone_mismatch");
    expect(ids(chooseMatches(live, { code: "333333", phone: "+16505550002", returnMultiple: false }))).toBe("phone_mismatch");
  });

  it("a reservation without a code never matches a call that gives one", () => {
    expect(ids(chooseMatches([r("x", "+16505550001")], { code: "123456", returnMultiple: false }))).toBe("code_mismatch");
    expect(ids(chooseMatches([r("x", "+16505550001")], { returnMultiple: false }))).toEqual(["x"]);
  });
});

describe("the code-guessing guard", () => {
  const guard = { maxFailures: 5, windowMs: 60_000 };

  it("lets matching go on below the limit and refuses from it on, until the window of the oldest failure ends", () => {
    expect(guardRefusal({ count: 0, oldest: undefined }, guard, 1_000)).toBeUndefined();
    expect(guardRefusal({ count: 4, oldest: 500 }, guard, 1_000)).toBeUndefined();
    expect(guardRefusal({ count: 5, oldest: 500 }, guard, 1_000)).toEqual({ until: 60_500 });
    expect(guardRefusal({ count: 9, oldest: 700 }, guard, 1_000)).toEqual({ until: 60_700 });
  });

  it("the failure that reaches the limit is the one that locks (and is logged)", () => {
    expect(locksNow(3, guard)).toBe(false);
    expect(locksNow(4, guard)).toBe(true);
    expect(locksNow(5, guard)).toBe(true);
  });
});

describe("judgeCall", () => {
  const guard = { maxFailures: 3, windowMs: 60_000 };
  const live = [r("b", "+16505550002", "222222"), r("a", "+16505550001", "111111")];
  const none = { count: 0, oldest: undefined };

  it("matches what chooseMatches picks, counting nothing", () => {
    expect(judgeCall(live, none, { code: "111111", returnMultiple: false }, guard, 1_000)).toEqual({ matched: [live[1]] });
    expect(judgeCall(live, { count: 2, oldest: 500 }, { returnMultiple: true }, guard, 1_000)).toEqual({ matched: live });
  });

  it("a call that matches nothing counts as a failed code only when it gave a code", () => {
    expect(judgeCall(live, none, { code: "999999", returnMultiple: false }, guard, 1_000)).toEqual({ reason: "code_mismatch", countFailure: true });
    expect(judgeCall(live, none, { code: "111111", phone: "+16505550009", returnMultiple: false }, guard, 1_000)).toEqual({ reason: "phone_mismatch", countFailure: true });
    expect(judgeCall(live, none, { phone: "+16505550009", returnMultiple: false }, guard, 1_000)).toEqual({ reason: "phone_mismatch", countFailure: false });
    expect(judgeCall([], none, { returnMultiple: false }, guard, 1_000)).toEqual({ reason: "no_reservation", countFailure: false });
    expect(judgeCall([], none, { code: "1", returnMultiple: false }, guard, 1_000)).toEqual({ reason: "no_reservation", countFailure: true });
  });

  it("a number locked by the guard refuses every call, the right code too, and counts nothing", () => {
    expect(judgeCall(live, { count: 3, oldest: 500 }, { code: "111111", returnMultiple: false }, guard, 1_000)).toEqual({ locked: { until: 60_500 }, countFailure: false });
    expect(judgeCall(live, { count: 3, oldest: 500 }, { returnMultiple: false }, guard, 1_000)).toEqual({ locked: { until: 60_500 }, countFailure: false });
  });
});
