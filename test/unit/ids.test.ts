import { validate, version } from "uuid";
import { describe, expect, it } from "vitest";
import { newId } from "../../src/domain/ids.js";

describe("newId", () => {
  it("is a UUID version 7 whose first 48 bits are the time of its making", () => {
    const before = Date.now();
    const id = newId();
    const after = Date.now();
    expect(validate(id)).toBe(true);
    expect(version(id)).toBe(7);
    const ms = parseInt(id.replaceAll("-", "").slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
  });

  it("sorts by time across milliseconds, and within one millisecond its random part does not count up", async () => {
    const first = newId();
    await new Promise((r) => setTimeout(r, 2));
    expect(newId() > first).toBe(true);
    // Many ids in a row share a millisecond. Their 74 bits after the time and version (rand_a, then
    // rand_b after the variant) are random: a counter (uuid's v7 by default) would make the top 32 count up.
    const ids = Array.from({ length: 1000 }, newId);
    expect(new Set(ids).size).toBe(1000);
    const randomBits = (id: string) => {
      const hex = id.replaceAll("-", "");
      return (BigInt(`0x${hex.slice(13, 16)}`) << 62n) | (BigInt(`0x${hex.slice(16)}`) & ((1n << 62n) - 1n));
    };
    // The random parts are all different too, across the RNG pool's refills (256 ids each): a pool
    // handing out the same bytes again would repeat them under ids of different milliseconds.
    expect(new Set(ids.map(randomBits)).size).toBe(1000);
    const tops = ids.map((id) => randomBits(id) >> 42n);
    expect(tops.slice(1).filter((t, i) => t === tops[i]! + 1n)).toHaveLength(0);
  });
});
