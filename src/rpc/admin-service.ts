import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { AdminService, type ReservationSummarySchema } from "../../gen/gms/v1/admin_pb.js";
import type { Admin } from "../domain/admin.js";
import type { Reload } from "../reload.js";
import type { Reservation } from "../domain/access-store.js";
import { timestamp } from "./convert.js";

/** adminAccess says who may call each AdminService RPC: admin alone (the empty lists: admin is always added). */
export const adminAccess = {
  listResourceGroups: [],
  listReservations: [],
  releaseReservation: [],
  listChatEndpoints: [],
  reloadConfig: [],
} as const;

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
