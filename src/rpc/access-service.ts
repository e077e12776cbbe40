import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { AccessInfoSchema } from "../../gen/gms/v1/access_info_pb.js";
import { AccessService } from "../../gen/gms/v1/access_pb.js";
import { SessionState, type SessionSchema } from "../../gen/gms/v1/session_pb.js";
import type { SessionSummarySchema } from "../../gen/gms/v1/admin_pb.js";
import type { Access, AccessGrant, SessionView } from "../domain/access.js";
import type { Session } from "../domain/session-store.js";
import { fromEntries, optionalNumber, timestamp, toEntries } from "./convert.js";
import { requestKey } from "./request-key.js";
import { connectUnary, unaryRpc } from "./lean-rpc.js";

/** accessAccess says who may call each AccessService RPC (admin may call all). */
export const accessAccess = {
  requestInteraction: ["app"],
  requestAccess: ["backend"],
  matchInteraction: ["ivr"],
} as const;

/** accessInfo maps a grant onto the AccessInfo message. */
export function accessInfo(g: AccessGrant): MessageInitShape<typeof AccessInfoSchema> {
  return {
    accessNumber: g.accessNumber,
    accessCode: g.accessCode ?? "",
    resourceGroup: g.resourceGroup,
    expiresAt: timestamp(g.expiresAt),
    expirationSeconds: BigInt(g.expirationSeconds),
  };
}

/** sessionFields are a session's own fields as the contract carries them (Session, and the operator's SessionSummary): never its data's values. */
export function sessionFields(s: Session): MessageInitShape<typeof SessionSchema> & MessageInitShape<typeof SessionSummarySchema> {
  return {
    id: s.id,
    service: s.service,
    builtin: s.builtin,
    state: s.state === "active" ? SessionState.ACTIVE : SessionState.ENDED,
    phoneNumber: s.phoneNumber,
    dataId: s.dataId,
    createdAt: timestamp(s.createdAt),
    expiresAt: timestamp(s.expiresAt),
  };
}

/** sessionMessage maps a session view onto the Session message. */
export function sessionMessage(s: SessionView): MessageInitShape<typeof SessionSchema> {
  return { ...sessionFields(s), access: s.access.map(accessInfo) };
}

const orUndefined = (s: string) => (s === "" ? undefined : s);

/**
 * accessRpcs are AccessService's RPCs, served through connect and by the lean path
 * (lean-path.ts) alike: allocation and matching are the hot calls of an IVR integration.
 */
export function accessRpcs(access: Access) {
  return {
    requestInteraction: unaryRpc(AccessService.method.requestInteraction, async (req, caller) => {
      const r = await access.requestInteraction({
        service: req.service,
        phoneNumber: req.phoneNumber,
        provideCode: req.provideCode,
        resourceGroup: req.resourceGroup,
        ttlSeconds: optionalNumber(req.ttlSeconds, "ttl_seconds"),
        bookingSeconds: optionalNumber(req.bookingExpirationTimeoutSeconds, "booking_expiration_timeout_seconds"),
        codeLength: req.accessCodeLength,
        appData: fromEntries(req.appData),
        request: requestKey(AccessService.method.requestInteraction, caller, req),
      });
      return { session: sessionMessage(r.session), access: accessInfo(r.access), ttlSeconds: BigInt(r.ttlSeconds), provideCode: r.provideCode };
    }),
    requestAccess: unaryRpc(AccessService.method.requestAccess, async (req, caller) => {
      const g = await access.requestAccess({
        service: req.service,
        sessionId: req.sessionId,
        resourceGroup: orUndefined(req.resourceGroup),
        provideCode: req.provideCode,
        phoneNumber: orUndefined(req.phoneNumber),
        bookingSeconds: optionalNumber(req.bookingExpirationTimeoutSeconds, "booking_expiration_timeout_seconds"),
        codeLength: req.accessCodeLength,
        request: requestKey(AccessService.method.requestAccess, caller, req),
      });
      return { access: accessInfo(g) };
    }),
    matchInteraction: unaryRpc(AccessService.method.matchInteraction, async (req, caller) => {
      const matches = await access.matchInteraction({
        service: req.service,
        accessNumber: req.accessNumber,
        phoneNumber: orUndefined(req.phoneNumber),
        accessCode: orUndefined(req.accessCode),
        returnMultiple: req.returnMultipleMatches,
        returnData: req.returnData,
        request: requestKey(AccessService.method.matchInteraction, caller, req),
      });
      return {
        matches: matches.map((m) => ({
          sessionId: m.sessionId,
          dataId: m.dataId,
          service: m.service,
          phoneNumber: m.phoneNumber,
          data: m.data === undefined ? {} : toEntries(m.data),
        })),
      };
    }),
  };
}

/** accessService maps AccessService RPCs onto the access rules. */
export function accessService(access: Access): ServiceImpl<typeof AccessService> {
  const rpcs = accessRpcs(access);
  return {
    requestInteraction: connectUnary(rpcs.requestInteraction),
    requestAccess: connectUnary(rpcs.requestAccess),
    matchInteraction: connectUnary(rpcs.matchInteraction),
  };
}
