// The sessions' store on SQL (the contract: src/domain/session-store.ts). One path for both
// dialects: plain knex, the lock a FOR UPDATE on MySQL (SQLite serialises its writers).
import type { Session, SessionChange, SessionCursor, SessionFilter, SessionState, SessionStore } from "../domain/session-store.js";
import { lockForUpdate, type Database, type Dialect, type Queryable } from "./database.js";
import { trxOf } from "./unit-of-work.js";

/** SessionSql is a sessions row as the driver returns it. */
export interface SessionSql {
  id: string;
  service: string;
  builtin: string;
  state: string;
  phone_number: string;
  data_id: string;
  created_at: number | string;
  expires_at: number | string;
}

/** sessionFromSql turns a sessions row into a Session. */
export function sessionFromSql(r: SessionSql): Session {
  return {
    id: r.id,
    service: r.service,
    builtin: r.builtin,
    state: r.state as SessionState,
    phoneNumber: r.phone_number,
    dataId: r.data_id,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
  };
}

/** sessionSql is a Session as its sessions row. */
export function sessionSql(s: Session): SessionSql {
  return { id: s.id, service: s.service, builtin: s.builtin, state: s.state, phone_number: s.phoneNumber, data_id: s.dataId, created_at: s.createdAt, expires_at: s.expiresAt };
}

/** insertSession stores a new session. */
export async function insertSession(q: Queryable, s: Session): Promise<void> {
  await q("sessions").insert(sessionSql(s));
}

/** readSession returns a session that is live (unexpired) at `now`, locked for update when asked. */
export async function readSession(q: Queryable, id: string, now: number, lock?: Dialect): Promise<Session | undefined> {
  const qb = q("sessions").where("id", id).andWhere("expires_at", ">", now);
  const row = (await (lock === undefined ? qb : lockForUpdate(qb, lock)).first()) as SessionSql | undefined;
  return row === undefined ? undefined : sessionFromSql(row);
}

/** updateSession sets a session's state and/or expiry. */
async function updateSession(q: Queryable, id: string, change: SessionChange): Promise<void> {
  await q("sessions")
    .where("id", id)
    .update({ ...(change.state === undefined ? {} : { state: change.state }), ...(change.expiresAt === undefined ? {} : { expires_at: change.expiresAt }) });
}

/**
 * listSessions pages the live sessions newest first by keyset: (created_at, id) below the cursor's,
 * written as an OR rather than a row comparison, which MariaDB does not take to an index. The
 * indexes of migration 011 serve the order: sessions_listing for every service, sessions_by_service
 * for one; a state is filtered on the rows the index yields.
 */
async function listSessions(q: Queryable, filter: SessionFilter, now: number, limit: number, after?: SessionCursor): Promise<Session[]> {
  const qb = q("sessions").where("expires_at", ">", now);
  if (filter.service !== undefined) qb.andWhere("service", filter.service);
  if (filter.state !== undefined) qb.andWhere("state", filter.state);
  if (after !== undefined) {
    qb.andWhere((w) => {
      void w.where("created_at", "<", after.createdAt).orWhere((same) => {
        void same.where("created_at", after.createdAt).andWhere("id", "<", after.id);
      });
    });
  }
  const rows = (await qb.orderBy([{ column: "created_at", order: "desc" }, { column: "id", order: "desc" }]).limit(limit).select("*")) as SessionSql[];
  return rows.map(sessionFromSql);
}

/**
 * sweepExpiredSessions deletes up to `batch` sessions that expired before `now`, in key order (see
 * sweepExpiredData: sweepers on several nodes wait for one another, never deadlock).
 */
async function sweepExpiredSessions(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("sessions").where("expires_at", "<=", now).select("id").limit(batch)) as { id: string }[];
  if (rows.length === 0) return 0;
  return q("sessions").whereIn("id", rows.map((r) => r.id).sort()).andWhere("expires_at", "<=", now).delete();
}

/** createSessionStore keeps sessions in the database's sessions table. */
export function createSessionStore(db: Database): SessionStore {
  return {
    read: (id, now) => readSession(db.knex, id, now),
    lock: (uow, id, now) => readSession(trxOf(uow), id, now, db.dialect),
    insert: (uow, session) => insertSession(trxOf(uow), session),
    update: (uow, id, change) => updateSession(trxOf(uow), id, change),
    list: (filter, now, limit, after) => listSessions(db.knex, filter, now, limit, after),
    sweep: (now, batch) => sweepExpiredSessions(db.knex, now, batch),
  };
}
