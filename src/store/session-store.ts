import { lockForUpdate, type Dialect, type Queryable } from "./database.js";
import { insertStatement, sqlText, type Batcher, type InsertRows } from "./batch.js";

/** SessionState is a session's state as stored. */
export type SessionState = "active" | "ended";

/** SessionRow is a sessions row. */
export interface SessionRow {
  id: string;
  service: string;
  builtin: string;
  state: SessionState;
  phoneNumber: string;
  dataId: string;
  createdAt: number;
  expiresAt: number;
}

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

/** sessionFromSql turns a sessions row into a SessionRow. */
export function sessionFromSql(r: SessionSql): SessionRow {
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

/** insertSession stores a new session. */
export async function insertSession(q: Queryable, s: SessionRow): Promise<void> {
  await insertStatement(q, sessionInsertRow(s));
}

/** sessionInsertRow is the row insertSession inserts, for a caller that writes it its own way (insertWhen, in a batch). */
export function sessionInsertRow(s: SessionRow): InsertRows {
  return {
    table: "sessions",
    rows: [{ id: s.id, service: s.service, builtin: s.builtin, state: s.state, phone_number: s.phoneNumber, data_id: s.dataId, created_at: s.createdAt, expires_at: s.expiresAt }],
  };
}

/** readSession returns a session that is live (unexpired) at `now`, locked for update when asked. */
export async function readSession(q: Queryable, id: string, now: number, lock?: Dialect): Promise<SessionRow | undefined> {
  const qb = q("sessions").where("id", id).andWhere("expires_at", ">", now);
  const row = (await (lock === undefined ? qb : lockForUpdate(qb, lock)).first()) as SessionSql | undefined;
  return row === undefined ? undefined : sessionFromSql(row);
}

/**
 * lockSession is readSession, locked, as a batch of the caller's transaction (Batcher: on
 * batchTransaction over MySQL it begins the transaction in the same round trip).
 */
export async function lockSession(tx: Batcher, id: string, now: number): Promise<SessionRow | undefined> {
  const [rows] = await tx.run([sqlText(`SELECT * FROM sessions WHERE id = ? AND expires_at > ?${tx.dialect === "sqlite" ? "" : " FOR UPDATE"}`, [id, now])]);
  const row = rows?.[0] as SessionSql | undefined;
  return row === undefined ? undefined : sessionFromSql(row);
}

/** updateSession sets a session's state and/or expiry. */
export async function updateSession(q: Queryable, id: string, change: { state?: SessionState; expiresAt?: number }): Promise<void> {
  await q("sessions")
    .where("id", id)
    .update({ ...(change.state === undefined ? {} : { state: change.state }), ...(change.expiresAt === undefined ? {} : { expires_at: change.expiresAt }) });
}

/** sweepExpiredSessions deletes up to `batch` sessions that expired before `now` (see sweepExpiredData). */
export async function sweepExpiredSessions(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("sessions").where("expires_at", "<=", now).select("id").limit(batch)) as { id: string }[];
  if (rows.length === 0) return 0;
  return q("sessions").whereIn("id", rows.map((r) => r.id).sort()).andWhere("expires_at", "<=", now).delete();
}
