// What an operator reads and does through AdminService: the access-number pools, their live
// reservations, releasing one, the chat queues and a chat's participants, the sessions (listed,
// read, cancelled), the services and the configuration in effect. Each is a view over the stores
// or a call of the rule that already does the thing (a release is the access rules' own, cool-down
// included; a cancel the session rules'): no rule of its own here.
import type { Clock } from "../clock.js";
import { BUILTINS, chatEndpoints, redactedConfig, type Builtin, type ConfigSource } from "../config.js";
import type { Access } from "./access.js";
import type { AccessStore, GroupOccupancy, Reservation } from "./access-store.js";
import type { ChatStore } from "./chat/store.js";
import type { Chat, Participant } from "./chat/vocabulary.js";
import { invalid, notFound } from "./errors.js";
import { decodePageToken, encodePageToken } from "./paging.js";
import type { Session, SessionFilter, SessionState, SessionStore } from "./session-store.js";
import type { Sessions } from "./sessions.js";
import type { Transactions } from "./unit-of-work.js";

/** DEFAULT_PAGE_SIZE is how many sessions a page holds when the caller does not say. */
export const DEFAULT_PAGE_SIZE = 100;
/** MAX_PAGE_SIZE is the most sessions one page holds (the contract says so too). */
export const MAX_PAGE_SIZE = 1000;

/** SessionQuery asks for a page of live sessions: of one service and/or state, after a previous page's token. */
export interface SessionQuery {
  service?: string | undefined;
  state?: SessionState | undefined;
  /** pageSize is 1 to MAX_PAGE_SIZE; 0 means DEFAULT_PAGE_SIZE. */
  pageSize: number;
  /** pageToken is a previous page's nextPageToken for the same service and state; "" for the first page. */
  pageToken: string;
}

/** SessionPage is one page of sessions, newest first, and the token of the next ("" on the last). */
export interface SessionPage {
  sessions: Session[];
  nextPageToken: string;
}

/** SessionDetail is a session and its live reservations. */
export interface SessionDetail {
  session: Session;
  reservations: Reservation[];
}

/** ServiceSummary is a service callers may name, with the options its configuration fixes (unset: the request's or the default). */
export interface ServiceSummary {
  name: string;
  builtin: Builtin;
  /** configured tells a `services.<name>` section from a builtin called under its own name. */
  configured: boolean;
  ttlSeconds?: number | undefined;
  resourceGroup?: string | undefined;
  provideCode?: boolean | undefined;
  accessCodeLength?: number | undefined;
  bookingExpirationTimeout?: number | undefined;
  /** endpoint is the queue its chats wait in: request-chat services only. */
  endpoint?: string | undefined;
}

/** ChatParticipants are a chat and everyone who joined it, in the order they joined. */
export interface ChatParticipants {
  chat: Chat;
  participants: Participant[];
}

/** EndpointQueue is a chat endpoint's queue: how many chats wait, and since when the oldest does (undefined: none). */
export interface EndpointQueue {
  endpoint: string;
  waiting: number;
  oldestQueuedAt: number | undefined;
}

/** Admin is what AdminService serves. */
export interface Admin {
  /** groups are the stored resource groups' numbers by state, now. */
  groups(): Promise<GroupOccupancy[]>;
  /** reservations are a group's live reservations now. */
  reservations(group: string): Promise<Reservation[]>;
  /** release frees an access number's live reservations now (NOT_FOUND when none), and returns them. */
  release(accessNumber: string): Promise<Reservation[]>;
  /** endpoints are the configured chat endpoints and those with chats waiting, by name. */
  endpoints(): Promise<EndpointQueue[]>;
  /** sessions are a page of the live sessions, newest first (a bad page token or size is INVALID_ARGUMENT). */
  sessions(query: SessionQuery): Promise<SessionPage>;
  /** session is a live session, whoever made it, with its live reservations (NOT_FOUND when none). */
  session(sessionId: string): Promise<SessionDetail>;
  /** cancelSession ends a live session through the session rules, as SessionService does, and returns it ended. */
  cancelSession(sessionId: string): Promise<Session>;
  /** services are the configured services, then the builtins not configured under their own name, each by name. */
  services(): ServiceSummary[];
  /** participants are a live chat's participants (NOT_FOUND when there is no such chat). */
  participants(chatId: string): Promise<ChatParticipants>;
  /** configuration is the configuration in effect with its secrets redacted (redactedConfig). */
  configuration(): Record<string, unknown>;
}

/** AdminDeps are what the admin views are built on. */
export interface AdminDeps {
  /** config is the configuration in effect, read at every call. */
  config: ConfigSource;
  clock: Clock;
  transactions: Transactions;
  access: Access;
  sessions: Sessions;
  accessStore: Pick<AccessStore, "occupancy" | "liveReservations">;
  sessionStore: Pick<SessionStore, "read" | "list">;
  chatStore: Pick<ChatStore, "queueLengths" | "readChat" | "participants">;
}

/** byName orders strings by their UTF-16 code units, the same on every machine (no locale). */
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** createAdmin builds the admin views. */
export function createAdmin({ config: current, clock, transactions, access, sessions, accessStore, sessionStore, chatStore }: AdminDeps): Admin {
  async function liveSession(sessionId: string, now: number): Promise<Session> {
    const session = await sessionStore.read(sessionId, now);
    if (session === undefined) throw notFound(`session ${sessionId}`);
    return session;
  }

  return {
    groups: () => accessStore.occupancy(clock.now()),
    reservations: (group) => access.reservationsOf(group),
    release(accessNumber) {
      const now = clock.now();
      return transactions.run((uow) => access.releaseNumberIn(uow, accessNumber, now), { retryConflicts: true });
    },
    async endpoints() {
      const queues = new Map<string, EndpointQueue>();
      for (const name of chatEndpoints(current())) queues.set(name, { endpoint: name, waiting: 0, oldestQueuedAt: undefined });
      for (const q of await chatStore.queueLengths(clock.now())) queues.set(q.endpoint, { endpoint: q.endpoint, waiting: q.waiting, oldestQueuedAt: q.oldestQueuedAt });
      return [...queues.values()].sort((a, b) => byName(a.endpoint, b.endpoint));
    },

    async sessions({ service, state, pageSize, pageToken }) {
      if (!Number.isInteger(pageSize) || pageSize < 0 || pageSize > MAX_PAGE_SIZE) throw invalid(`page_size: 0 to ${MAX_PAGE_SIZE}`);
      const filter: SessionFilter = { service: service === "" ? undefined : service, state };
      const after = pageToken === "" ? undefined : decodePageToken(pageToken, filter);
      const size = pageSize === 0 ? DEFAULT_PAGE_SIZE : pageSize;
      // One more than the page tells whether another page follows, so the last page says so.
      const rows = await sessionStore.list(filter, clock.now(), size + 1, after);
      const page = rows.slice(0, size);
      const last = page[page.length - 1];
      return { sessions: page, nextPageToken: rows.length > size && last !== undefined ? encodePageToken(last, filter) : "" };
    },

    async session(sessionId) {
      const now = clock.now();
      const session = await liveSession(sessionId, now);
      return { session, reservations: await accessStore.liveReservations(sessionId, now) };
    },

    async cancelSession(sessionId) {
      await sessions.cancel(sessionId);
      return liveSession(sessionId, clock.now());
    },

    services() {
      const config = current();
      const configured: ServiceSummary[] = Object.entries(config.services).map(([name, svc]) => ({
        name,
        builtin: svc.builtin,
        configured: true,
        ttlSeconds: svc.ttl,
        resourceGroup: svc.resource_group,
        provideCode: svc.provide_code,
        accessCodeLength: svc.access_code_length,
        bookingExpirationTimeout: svc.booking_expiration_timeout,
        endpoint: svc.builtin === "request-chat" ? (svc.endpoint ?? config.chat.default_endpoint) : undefined,
      }));
      const builtins: ServiceSummary[] = BUILTINS.filter((b) => config.services[b] === undefined).map((b) => ({
        name: b,
        builtin: b,
        configured: false,
        endpoint: b === "request-chat" ? config.chat.default_endpoint : undefined,
      }));
      return [...configured.sort((a, b) => byName(a.name, b.name)), ...builtins];
    },

    async participants(chatId) {
      const chat = await chatStore.readChat(chatId, clock.now());
      if (chat === undefined) throw notFound(`chat ${chatId}`);
      return { chat, participants: await chatStore.participants(chatId) };
    },

    configuration: () => redactedConfig(current()),
  };
}
