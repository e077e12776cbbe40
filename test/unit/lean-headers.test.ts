// ResponseHeaders (src/rpc/lean-headers.ts) stand in for the Fetch API's Headers in the lean path's
// responses: whatever a policy does with them reads back as it would from a Headers.
import { describe, expect, it } from "vitest";
import { NodeHeaders, ResponseHeaders } from "../../src/rpc/lean-headers.js";

type Op = (h: Headers) => void;

const OPS: Op[] = [
  (h) => h.set("X-Request-Id", "abc"),
  (h) => h.append("vary", "Origin"),
  (h) => h.append("Vary", "Accept"),
  (h) => h.set("content-type", "application/json"),
  (h) => h.append("b-second", "2"),
  (h) => h.append("a-first", "1"),
  (h) => h.delete("X-REQUEST-ID"),
  (h) => h.set("grpc-status", "0"),
];

/** snapshot is everything a reader can see of headers. */
function snapshot(h: Headers) {
  const each: [string, string][] = [];
  h.forEach((v, k) => each.push([k, v]));
  return {
    entries: [...h.entries()],
    iterated: [...h],
    keys: [...h.keys()],
    values: [...h.values()],
    each,
    fromEntries: Object.fromEntries(h),
    copied: [...new Headers(h)],
    get: ["vary", "VARY", "x-request-id", "missing", "content-type"].map((n) => h.get(n)),
    has: ["vary", "x-request-id", "Grpc-Status"].map((n) => h.has(n)),
  };
}

describe("ResponseHeaders", () => {
  it("reads back as a Headers after every step of a policy's writes", () => {
    const real = new Headers();
    const lean = new ResponseHeaders() as unknown as Headers;
    expect(snapshot(lean)).toEqual(snapshot(real));
    for (const op of OPS) {
      op(real);
      op(lean);
      expect(snapshot(lean)).toEqual(snapshot(real));
    }
  });

  it("is empty until written, and again once emptied", () => {
    const h = new ResponseHeaders();
    expect(h.empty).toBe(true);
    h.set("a", "1");
    expect(h.empty).toBe(false);
    h.delete("A");
    expect(h.empty).toBe(true);
  });
});

describe("NodeHeaders", () => {
  const node = { ":path": "/gms.v1.ChatService/Refresh", "content-type": "application/grpc", "x-multi": ["a", "b"], authorization: "Bearer k", "x-request-id": "r-1" };
  /** fromNode is a Headers as connect-node makes it of a request's headers (pseudo-headers left out). */
  const fromNode = () => {
    const h = new Headers();
    for (const [k, v] of Object.entries(node)) if (!k.startsWith(":")) for (const one of [v].flat()) h.append(k, one);
    return h;
  };

  it("read as connect-node's Headers before and after every step of a policy's writes", () => {
    const real = fromNode();
    const lean = new NodeHeaders(node) as unknown as Headers;
    expect(snapshot(lean)).toEqual(snapshot(real));
    for (const op of OPS) {
      op(real);
      op(lean);
      expect(snapshot(lean)).toEqual(snapshot(real));
    }
  });

  it("answer reads from Node's object without copying it, and leave Node's object alone when written", () => {
    const given = { ...node };
    const lean = new NodeHeaders(given);
    expect([lean.get("Authorization"), lean.get("x-multi"), lean.get(":path"), lean.has("te")]).toEqual(["Bearer k", "a, b", null, false]);
    lean.set("authorization", "changed");
    expect(lean.get("authorization")).toBe("changed");
    expect(given.authorization).toBe("Bearer k");
  });
});

