import type { ServiceImpl } from "@connectrpc/connect";
import { SessionService } from "../../gen/gms/v1/session_pb.js";
import type { Sessions } from "../domain/sessions.js";
import { sessionMessage } from "./access-service.js";
import { fromEntries } from "./convert.js";

/** sessionAccess says who may call each SessionService RPC: the backends (admin may call all). */
export const sessionAccess = {
  getSession: ["backend"],
  cancelSession: ["backend"],
  updateSessionData: ["backend"],
  extendSession: ["backend"],
} as const;

/** sessionService maps SessionService RPCs onto the session rules. */
export function sessionService(sessions: Sessions): ServiceImpl<typeof SessionService> {
  return {
    async getSession(req) {
      return { session: sessionMessage(await sessions.get(req.sessionId)) };
    },
    async cancelSession(req) {
      await sessions.cancel(req.sessionId);
      return {};
    },
    async updateSessionData(req) {
      const r = await sessions.updateData(req.sessionId, fromEntries(req.entries), req.removeKeys);
      return { version: BigInt(r.version) };
    },
    async extendSession(req) {
      return { session: sessionMessage(await sessions.extend(req.sessionId, Number(req.ttlSeconds))) };
    },
  };
}
