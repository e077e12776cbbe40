// The benchmark's own load generator for calls that differ (bench/grpc-drive.c), against the real
// server: every call with a body of its own, its grpc-status read (trailers and trailers-only), the
// headers sent. Not part of `npm test` (the server needs no C toolchain): `npm run bench` runs it
// first, through bench/vitest.config.ts, whenever grpc-drive can be built; skipped where it cannot.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService, MatchInteractionRequestSchema } from "../gen/gms/v1/access_pb.js";
import { GRPC_DRIVE, GRPC_DRIVE_MISSING, grpcDriveUnary } from "./grpc-drive.js";
import { expandNumbers } from "../src/config.js";
import { startTestServer, type TestServer } from "../test/helpers/server.js";

const NUMBERS = "+18005551000..+18005551029";
const IVR_KEY = "ivr-key-0123456789abcdef";

describe.skipIf(GRPC_DRIVE === undefined)(`grpc-drive (bench/grpc-drive.c)${GRPC_DRIVE === undefined ? `: ${GRPC_DRIVE_MISSING}` : ""}`, () => {
  let t: TestServer;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gms-grpc-drive-"));
    t = await startTestServer("sqlite", {
      config: {
        auth: { api_keys: [{ name: "ivr", key: IVR_KEY, roles: ["ivr"] }] },
        resources: { desk: { numbers: [NUMBERS], locking: true } },
      },
    });
  });
  afterAll(async () => {
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends each message once, a call each, and fails the run on a status other than OK", async () => {
    const app = createClient(AccessService, t.grpc);
    const granted: string[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await app.requestInteraction({ phoneNumber: `+1650555${String(i).padStart(4, "0")}`, resourceGroup: "desk", ttlSeconds: 600n, bookingExpirationTimeoutSeconds: 600n });
      granted.push(r.access!.accessNumber);
    }
    expect(new Set(granted)).toEqual(new Set(expandNumbers([NUMBERS])));
    const messages = granted.map((accessNumber) => toBinary(MatchInteractionRequestSchema, create(MatchInteractionRequestSchema, { accessNumber })));
    const load = (headers: Record<string, string>) => grpcDriveUnary({ url: t.server.url, path: "/gms.v1.AccessService/MatchInteraction", messages, connections: 2, dir, headers });

    // Without the IVR's key every call is refused (trailers-only, UNAUTHENTICATED = 16), and nothing is matched.
    await expect(load({})(4, 0)).rejects.toThrow("grpc-status 16");
    const driven = await load({ authorization: `Bearer ${IVR_KEY}` })(4, 0);
    expect(driven.ops).toBe(30);
    expect(driven.latency.totalCount).toBe(30);
    expect(driven.seconds).toBeGreaterThan(0);
    // Every number was matched, so released: all 30 free again, and the same calls now find nothing (NOT_FOUND = 5).
    const again = await Promise.all(granted.map((n) => createClient(AccessService, t.transport("grpc", IVR_KEY)).matchInteraction({ accessNumber: n }).then(() => "matched", () => "none")));
    expect(again).toEqual(granted.map(() => "none"));
    await expect(load({ authorization: `Bearer ${IVR_KEY}` })(4, 0)).rejects.toThrow("grpc-status 5");
    // With a duration, messages used up before it passed fail the run: it would have measured less than asked.
    await expect(load({})(4, 20_000)).rejects.toThrow("ran out");
  });
});
