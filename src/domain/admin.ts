// What an operator reads and does through AdminService: the access-number pools, their live
// reservations, releasing one, and the chat queues. Each is a view over the stores or a call of the
// rule that already does the thing (a release is the access rules' own, cool-down included): no
// rule of its own here.
import type { Clock } from "../clock.js";
import { chatEndpoints, type ConfigSource } from "../config.js";
import type { Access } from "./access.js";
import type { AccessStore, GroupOccupancy, Reservation } from "./access-store.js";
import type { ChatStore } from "./chat/store.js";
import type { Transactions } from "./unit-of-work.js";

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
}

/** AdminDeps are what the admin views are built on. */
export interface AdminDeps {
  /** config is the configuration in effect, read at every call. */
  config: ConfigSource;
  clock: Clock;
  transactions: Transactions;
  access: Access;
  accessStore: Pick<AccessStore, "occupancy">;
  chatStore: Pick<ChatStore, "queueLengths">;
}

/** createAdmin builds the admin views. */
export function createAdmin({ config, clock, transactions, access, accessStore, chatStore }: AdminDeps): Admin {
  return {
    groups: () => accessStore.occupancy(clock.now()),
    reservations: (group) => access.reservationsOf(group),
    release(accessNumber) {
      const now = clock.now();
      return transactions.run((uow) => access.releaseNumberIn(uow, accessNumber, now), { retryConflicts: true });
    },
    async endpoints() {
      const queues = new Map<string, EndpointQueue>();
      for (const name of chatEndpoints(config())) queues.set(name, { endpoint: name, waiting: 0, oldestQueuedAt: undefined });
      for (const q of await chatStore.queueLengths(clock.now())) queues.set(q.endpoint, { endpoint: q.endpoint, waiting: q.waiting, oldestQueuedAt: q.oldestQueuedAt });
      return [...queues.values()].sort((a, b) => (a.endpoint < b.endpoint ? -1 : a.endpoint > b.endpoint ? 1 : 0));
    },
  };
}
