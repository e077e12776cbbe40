// The client's error decoding as a plain function: google.rpc.RetryInfo read by its type name from
// the wire bytes a server sends (no generated code for it in the package), beside and without the
// gms.v1 details. The details as each protocol carries them are tested against the real server in
// test/client.test.ts.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { Code, ConnectError, GmsError, PoolExhausted, PoolExhaustedSchema, RateLimited, toGmsError } from "../../clients/js/src/index.js";

/** retryInfo encodes google.rpc.RetryInfo { retry_delay: Duration { seconds, nanos } }. */
function retryInfo(seconds: number, nanos: number): Uint8Array {
  const duration = new BinaryWriter().tag(1, 0).int64(seconds).tag(2, 0).int32(nanos).finish();
  return new BinaryWriter().tag(1, 2).bytes(duration).finish();
}

/** incoming is an error as a transport hands it over: details by type name and bytes. */
function incoming(code: Code, details: { type: string; value: Uint8Array }[]): ConnectError {
  const e = new ConnectError("refused", code);
  e.details = details;
  return e;
}

describe("the client's typed errors", () => {
  it("reads google.rpc.RetryInfo's delay when a server sends it, rounding nanoseconds up to a millisecond", () => {
    const e = toGmsError(incoming(Code.Unavailable, [{ type: "google.rpc.RetryInfo", value: retryInfo(1, 500_000_001) }]));
    expect(e).toBeInstanceOf(GmsError);
    expect(e.retryAfterMs).toBe(1501);
    expect(e.code).toBe(Code.Unavailable);
    expect(e.rawMessage).toBe("refused");
  });

  it("has no delay without RetryInfo, and ignores a RetryInfo it cannot read", () => {
    expect(toGmsError(incoming(Code.Unavailable, [])).retryAfterMs).toBeUndefined();
    expect(toGmsError(incoming(Code.Unavailable, [{ type: "google.rpc.RetryInfo", value: new Uint8Array([0x0a, 0x05, 0x08]) }])).retryAfterMs).toBeUndefined();
  });

  it("types an error by its gms.v1 detail, the detail's retry_after_seconds winning over RetryInfo", () => {
    const pool = toBinary(PoolExhaustedSchema, create(PoolExhaustedSchema, { resourceGroup: "DNIS", retryAfterSeconds: 7n, nextFreeAt: timestampFromMs(Date.UTC(2030, 0, 1)) }));
    const e = toGmsError(
      incoming(Code.ResourceExhausted, [
        { type: "google.rpc.RetryInfo", value: retryInfo(3, 0) },
        { type: "gms.v1.PoolExhausted", value: pool },
      ]),
    );
    expect(e).toBeInstanceOf(PoolExhausted);
    expect(e).not.toBeInstanceOf(RateLimited);
    expect(e.retryAfterMs).toBe(7000);
    expect((e as PoolExhausted).nextFreeAt?.toISOString()).toBe("2030-01-01T00:00:00.000Z");
    expect(toGmsError(e)).toBe(e);
    // Any ConnectError is not a PoolExhausted: the subclasses test their prototype chain.
    expect(new ConnectError("x", Code.ResourceExhausted)).not.toBeInstanceOf(PoolExhausted);
    expect(e).toBeInstanceOf(ConnectError);
  });

  it("makes anything thrown a GmsError (a network failure is UNKNOWN)", () => {
    const e = toGmsError(new TypeError("fetch failed"));
    expect(e).toBeInstanceOf(GmsError);
    expect(e.code).toBe(Code.Unknown);
  });
});
