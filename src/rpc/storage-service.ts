import type { ServiceImpl } from "@connectrpc/connect";
import { StorageService } from "../../gen/gms/v1/storage_pb.js";
import type { Storage } from "../domain/storage.js";
import { callerOf } from "./auth.js";
import { fromEntries, optionalNumber, timestamp, toEntries, toValue } from "./convert.js";
import { requestKey } from "./request-key.js";

/** storageAccess says who may call each StorageService RPC: GMS apps and the backends behind them. */
export const storageAccess = {
  createData: ["app", "backend", "ivr", "agent"],
  getData: ["app", "backend", "ivr", "agent"],
  getDataEntry: ["app", "backend", "ivr", "agent"],
  updateData: ["app", "backend", "ivr", "agent"],
  deleteData: ["app", "backend", "ivr", "agent"],
  findCustomData: ["app", "backend", "ivr", "agent"],
} as const;

/** storageService maps StorageService RPCs onto the storage rules. */
export function storageService(storage: Storage): ServiceImpl<typeof StorageService> {
  return {
    async createData(req, ctx) {
      const r = await storage.create({
        ttlSeconds: optionalNumber(req.ttlSeconds, "ttl_seconds"),
        entries: fromEntries(req.entries),
        request: requestKey(ctx.method, callerOf(ctx), req),
        custom: req.customId === "" ? undefined : { id: req.customId, user: req.user },
      });
      return { dataId: r.dataId, expiresAt: timestamp(r.expiresAt), version: BigInt(r.version) };
    },
    async getData(req) {
      const r = await storage.get(req.dataId);
      return { dataId: r.id, entries: toEntries(r.entries), expiresAt: timestamp(r.expiresAt), version: BigInt(r.version) };
    },
    async getDataEntry(req) {
      return { value: toValue(await storage.getEntry(req.dataId, req.key)) };
    },
    async updateData(req) {
      const r = await storage.update({
        dataId: req.dataId,
        entries: fromEntries(req.entries),
        removeKeys: req.removeKeys,
        ttlSeconds: optionalNumber(req.ttlSeconds, "ttl_seconds"),
        expectedVersion: optionalNumber(req.expectedVersion, "expected_version"),
      });
      return { expiresAt: timestamp(r.expiresAt), version: BigInt(r.version) };
    },
    async deleteData(req) {
      await storage.delete(req.dataId);
      return {};
    },
    async findCustomData(req) {
      return { dataId: await storage.findCustom(req.user, req.customId) };
    },
  };
}
