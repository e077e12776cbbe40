import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { AdminService, ChatState, type ChatParticipantSchema, type ReservationSummarySchema } from "../../gen/gms/v1/admin_pb.js";
import { SessionState } from "../../gen/gms/v1/session_pb.js";
import type { Admin } from "../domain/admin.js";
import type { Reload } from "../reload.js";
import type { Reservation } from "../domain/access-store.js";
import type { ChatState as DomainChatState, Participant } from "../domain/chat/vocabulary.js";
import type { SessionState as DomainSessionState } from "../domain/session-store.js";
import { sessionFields } from "./access-service.js";
import { participantTypes } from "./chat-service.js";
import { timestamp } from "./convert.js";

/** adminAccess says who may call each AdminService RPC: admin alone (the empty lists: admin is always added). */
export const adminAccess = {
  listResourceGroups: [],
  listReservations: [],
  releaseReservation: [],
  listChatEndpoints: [],
  listSessions: [],
  getSession: [],
  cancelSession: [],
  listServices: [],
  getChatParticipants: [],
  getConfiguration: [],
  reloadConfig: [],
} as const;


/** sessionStates map the contract's SessionState filter onto the domain's (UNSPECIFIED: any). */
const sessionStates: Record<SessionState, DomainSessionState | undefined> = {
  [SessionState.UNSPECIFIED]: undefined,
  [SessionState.ACTIVE]: "active",
  [SessionState.ENDED]: "ended",
};

/** chatStates map a chat's state onto the contract's ChatState. */
const chatStates: Record<DomainChatState, ChatState> = { waiting: ChatState.WAITING, active: ChatState.ACTIVE, ended: ChatState.ENDED };

/** chatParticipant maps a participant onto what an operator sees of it. */
function chatParticipant(p: Participant): MessageInitShape<typeof ChatParticipantSchema> {
  return {
    participantId: p.id,
    nickname: p.nickname,
    type: participantTypes[p.kind],
    identity: p.identity,
    joinedAt: timestamp(p.joinedAt),
    leftAt: p.leftAt === undefined ? undefined : timestamp(p.leftAt),
  };
}

/** reservationSummary maps a reservation onto what an operator sees of it: never its access code. */
function reservationSummary(r: Reservation): MessageInitShape<typeof ReservationSummarySchema> {
  return {
    accessNumber: r.accessNumber,
    resourceGroup: r.resourceGroup,
    sessionId: r.sessionId,
    phoneNumber: r.phoneNumber,
    createdAt: timestamp(r.createdAt),
    expiresAt: timestamp(r.expiresAt),
  };
}

/** adminService maps AdminService RPCs onto the admin views, and ReloadConfig onto the server's reload. */
export function adminService(admin: Admin, reload: Reload): ServiceImpl<typeof AdminService> {
  return {
    async listResourceGroups() {
      return {
        groups: (await admin.groups()).map((g) => ({
          name: g.group,
          reserved: BigInt(g.reserved),
          coolingDown: BigInt(g.coolingDown),
          free: BigInt(g.free),
          retired: BigInt(g.retired),
          reservations: BigInt(g.reservations),
        })),
      };
    },
    async listReservations(req) {
      return { reservations: (await admin.reservations(req.resourceGroup)).map(reservationSummary) };
    },
    async releaseReservation(req) {
      return { released: (await admin.release(req.accessNumber)).map(reservationSummary) };
    },
    async listChatEndpoints() {
      return {
        endpoints: (await admin.endpoints()).map((q) => ({
          endpoint: q.endpoint,
          waiting: BigInt(q.waiting),
          oldestQueuedAt: q.oldestQueuedAt === undefined ? undefined : timestamp(q.oldestQueuedAt),
        })),
      };
    },
    async listSessions(req) {
      const page = await admin.sessions({ service: req.service, state: sessionStates[req.state], pageSize: req.pageSize, pageToken: req.pageToken });
      return { sessions: page.sessions.map(sessionFields), nextPageToken: page.nextPageToken };
    },
    async getSession(req) {
      const { session, reservations } = await admin.session(req.sessionId);
      return { session: sessionFields(session), reservations: reservations.map(reservationSummary) };
    },
    async cancelSession(req) {
      return { session: sessionFields(await admin.cancelSession(req.sessionId)) };
    },
    listServices() {
      return {
        services: admin.services().map((s) => ({
          name: s.name,
          builtin: s.builtin,
          configured: s.configured,
          ttlSeconds: s.ttlSeconds === undefined ? undefined : BigInt(s.ttlSeconds),
          resourceGroup: s.resourceGroup,
          provideCode: s.provideCode,
          accessCodeLength: s.accessCodeLength,
          bookingExpirationTimeoutSeconds: s.bookingExpirationTimeout === undefined ? undefined : BigInt(s.bookingExpirationTimeout),
          endpoint: s.endpoint,
        })),
      };
    },
    async getChatParticipants(req) {
      const { chat, participants } = await admin.participants(req.chatId);
      return {
        chat: {
          chatId: chat.id,
          sessionId: chat.sessionId,
          service: chat.service,
          endpoint: chat.endpoint,
          state: chatStates[chat.state],
          createdAt: timestamp(chat.createdAt),
          expiresAt: timestamp(chat.expiresAt),
        },
        participants: participants.map(chatParticipant),
      };
    },
    getConfiguration() {
      return { configuration: admin.configuration() as JsonObject };
    },
    async reloadConfig() {
      const c = await reload();
      return {
        changedSections: c.sections,
        changedSettings: c.settings,
        groupsAdded: c.groupsAdded,
        groupsRemoved: c.groupsRemoved,
        groupsChanged: c.groupsChanged,
        numbersAdded: BigInt(c.numbersAdded),
        numbersRetired: BigInt(c.numbersRetired),
        servicesAdded: c.servicesAdded,
        servicesRemoved: c.servicesRemoved,
        servicesChanged: c.servicesChanged,
        apiKeysAdded: BigInt(c.apiKeysAdded),
        apiKeysRemoved: BigInt(c.apiKeysRemoved),
        apiKeysChanged: BigInt(c.apiKeysChanged),
        restartRequired: c.restartRequired,
        loadedAt: timestamp(c.loadedAt),
      };
    },
  };
}
