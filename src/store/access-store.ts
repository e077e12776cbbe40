import type { Knex } from "knex";
import { randomUUID } from "node:crypto";
import { type Database, type Dialect, type Queryable } from "./database.js";
import { batcherOf, batchTransaction, insertStatement, insertWhen, runBatch, sqlText, type Batcher, type InsertRows, type RunOptions, type SqlText } from "./batch.js";
import { sessionFromSql, sessionInsertRow, type SessionRow, type SessionSql } from "./session-store.js";
import { valueSize, type DataEntries } from "../domain/value.js";
import { isDeadlock } from "./errors.js";
import { claimRequestId, completeRequestId } from "./idempotency-store.js";
import { dataInsertRows, entriesJson, type DataRow } from "./storage-store.js";

/** DEADLOCK_ATTEMPTS is how many times retryDeadlocks runs a transaction the database keeps choosing as a deadlock's victim. */
const DEADLOCK_ATTEMPTS = 5;

/**
 * retryDeadlocks runs a transaction again when MySQL rolled it back as a deadlock's victim. A match
 * locks a number's reservations, then their sessions; CancelSession and ExtendSession lock the
 * session, then write its reservations: run together on one session they can deadlock, and the
 * victim, rolled back whole, is safe to run again. SQLite never deadlocks (one writer at a time).
 */
export async function retryDeadlocks<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (e) {
      if (!isDeadlock(e) || attempt >= DEADLOCK_ATTEMPTS) throw e;
      // A short random pause, so that the two do not meet again at once.
      await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
    }
  }
}

/** Allocation is how a group picks among its free numbers. */
export type Allocation = "random" | "round-robin";

/** ReservationRow is a reservations row: one number held for one session. */
export interface ReservationRow {
  id: number;
  sessionId: string;
  resourceGroup: string;
  accessNumber: string;
  accessCode: string | undefined;
  phoneNumber: string;
  locking: boolean;
  createdAt: number;
  expiresAt: number;
}

interface ReservationSql {
  id: number | string;
  session_id: string;
  resource_group: string;
  access_number: string;
  access_code: string | null;
  phone_number: string;
  locking: number | boolean;
  created_at: number | string;
  expires_at: number | string;
}

function fromSql(r: ReservationSql): ReservationRow {
  return {
    id: Number(r.id),
    sessionId: r.session_id,
    resourceGroup: r.resource_group,
    accessNumber: r.access_number,
    accessCode: r.access_code ?? undefined,
    phoneNumber: r.phone_number,
    locking: Boolean(r.locking),
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
  };
}

/**
 * liveSql is the condition of a reservation still holding its number at a moment (its one binding):
 * not released, not expired. The predicate decides, not a sweeper: a reservation frees its number
 * the moment it expires.
 */
function liveSql(alias = ""): string {
  const p = alias === "" ? "" : `${alias}.`;
  return `${p}released_at IS NULL AND ${p}expires_at > ?`;
}

/** live restricts a reservations query to the reservations still holding their number at `now`. */
function live(qb: Knex.QueryBuilder, now: number, alias = ""): Knex.QueryBuilder {
  return qb.whereRaw(liveSql(alias), [now]);
}

/** LANE_SIZE is about how many numbers one lane of a large group holds; MAX_LANES caps a group's lanes. */
const LANE_SIZE = 16;
const MAX_LANES = 64;

/**
 * lanesFor is how many lanes a group of `count` numbers is split into: one below 2 × LANE_SIZE
 * numbers (a claim then takes the number free the longest in the whole group), else one per
 * LANE_SIZE numbers, at most MAX_LANES. The number at position i of the configured list is in lane
 * i mod lanes, so consecutive numbers fall in different lanes.
 */
export const lanesFor = (count: number): number => Math.max(1, Math.min(MAX_LANES, Math.floor(count / LANE_SIZE)));

/**
 * syncNumbers makes access_numbers match the configuration: missing numbers are added, numbers
 * configured again are un-retired, numbers no longer configured are retired (never handed out
 * again; a live reservation on one still matches until it lapses), and every configured number is
 * put in its lane (lanesFor). Idempotent and decided by the configuration alone, so several nodes
 * starting at once do not conflict.
 */
export async function syncNumbers(q: Queryable, groups: ReadonlyMap<string, readonly string[]>): Promise<{ added: number; retired: number }> {
  let added = 0;
  let retired = 0;
  for (const [group, numbers] of groups) {
    const lanes = lanesFor(numbers.length);
    const laneOf = new Map(numbers.map((n, i) => [n, i % lanes]));
    const stored = new Map(
      ((await q("access_numbers").where("resource_group", group).select("number", "lane")) as { number: string; lane: number | string }[]).map((r) => [r.number, Number(r.lane)]),
    );
    const fresh = numbers.filter((n) => !stored.has(n));
    for (let i = 0; i < fresh.length; i += 500) {
      const rows = fresh
        .slice(i, i + 500)
        .map((number) => ({ resource_group: group, number, retired: false, available_at: 0, last_used_at: 0, rand_key: Math.random(), lane: laneOf.get(number) ?? 0 }));
      await q("access_numbers").insert(rows).onConflict(["resource_group", "number"]).ignore();
    }
    added += fresh.length;
    // Numbers in another lane than the configuration now gives them (the group grew or shrank), moved lane by lane.
    const moves = new Map<number, string[]>();
    for (const [number, lane] of stored) {
      const want = laneOf.get(number);
      if (want === undefined || want === lane) continue;
      const list = moves.get(want);
      if (list === undefined) moves.set(want, [number]);
      else list.push(number);
    }
    for (const [lane, moved] of moves) {
      for (let i = 0; i < moved.length; i += 500) {
        await q("access_numbers").where("resource_group", group).whereIn("number", moved.slice(i, i + 500)).update({ lane });
      }
    }
    for (let i = 0; i < numbers.length; i += 500) {
      await q("access_numbers").where("resource_group", group).whereIn("number", numbers.slice(i, i + 500)).andWhere("retired", true).update({ retired: false });
    }
    retired += await q("access_numbers").where("resource_group", group).andWhere("retired", false).whereNotIn("number", numbers).update({ retired: true });
  }
  retired += await q("access_numbers").whereNotIn("resource_group", [...groups.keys()]).andWhere("retired", false).update({ retired: true });
  return { added, retired };
}

/** ClaimOptions say which number a group hands out. */
export interface ClaimOptions {
  group: string;
  locking: boolean;
  allocation: Allocation;
  /** lanes is the group's lane count (lanesFor its configured size); a locking round-robin claim starts in a random one. */
  lanes: number;
  now: number;
}

/**
 * claimNumber picks a number of the group and locks its row for the caller's transaction. In a
 * locking group only a free number (available_at ≤ now) qualifies, and rows other transactions are
 * claiming are skipped (SKIP LOCKED on MySQL), so two claims never take the same number; the index
 * on (group, retired, order column) lets MySQL lock just the row it returns. Round-robin takes the
 * number free the longest (locking: in a random lane of a large group, see lanesFor, else in the
 * whole group) or used the longest ago (non-locking); random starts from a random point of a random
 * key. Undefined when no number qualifies.
 */
export async function claimNumber(q: Queryable, dialect: Dialect, o: ClaimOptions): Promise<string | undefined> {
  for (const query of claimQueries(dialect, o)) {
    const [rows] = await runBatch(q, dialect, [query]);
    const row = rows?.[0] as { number: string } | undefined;
    if (row !== undefined) return row.number;
  }
  return undefined;
}

/**
 * claimQueries are the SELECTs claimNumber runs, in order, until one returns a row: one for
 * round-robin (two for a locking group of several lanes: in a random lane, then in the whole
 * group), two for random (from a random pivot up, then below it). Written as SQL text (the hot
 * path: knex's builder cost more CPU than the claim's round trip) and exported so tests can EXPLAIN
 * exactly what the claim runs. On MySQL claimAndReserve runs the same SELECTs in the stored
 * procedure gms_claim_v1 (migration 006). Each names the index it reads (FORCE INDEX on MySQL,
 * INDEXED BY on SQLite): the plan that locks the one row it returns is then not left to the
 * optimizer's estimates, and MariaDB no longer weighs the table's other indexes on every claim
 * (a tenth of its CPU per claim).
 */
export function claimQueries(dialect: Dialect, o: ClaimOptions): SqlText[] {
  // Non-locking numbers are shared: wait for a busy row rather than skip it, or a burst would find none.
  const lock = dialect === "sqlite" ? "" : o.locking ? " FOR UPDATE SKIP LOCKED" : " FOR UPDATE";
  const query = (index: ClaimIndex, extra: string[], extraBindings: unknown[], order: string) => {
    const where = ["`resource_group` = ?", "`retired` = 0", ...(o.locking ? ["`available_at` <= ?"] : []), ...extra];
    const hint = dialect === "sqlite" ? `INDEXED BY \`${index}\`` : `FORCE INDEX (\`${index}\`)`;
    return sqlText(`SELECT \`number\` FROM \`access_numbers\` ${hint} WHERE ${where.join(" AND ")} ORDER BY ${order} LIMIT 1${lock}`, [
      o.group,
      ...(o.locking ? [o.now] : []),
      ...extraBindings,
    ]);
  };
  if (o.allocation === "round-robin") {
    if (!o.locking) return [query("access_numbers_least_used", [], [], "`last_used_at`, `number`")];
    const freeLongest = "`available_at`, `number`";
    const lane = startLane(o);
    if (lane === null) return [query("access_numbers_round_robin", [], [], freeLongest)];
    return [query("access_numbers_lane", ["`lane` = ?"], [lane], freeLongest), query("access_numbers_round_robin", [], [], freeLongest)];
  }
  const pivot = Math.random();
  return [query("access_numbers_random", ["`rand_key` >= ?"], [pivot], "`rand_key`"), query("access_numbers_random", ["`rand_key` < ?"], [pivot], "`rand_key`")];
}

/** ClaimIndex is an index of access_numbers a claim reads (migrations 001 and 005). */
type ClaimIndex = "access_numbers_round_robin" | "access_numbers_random" | "access_numbers_least_used" | "access_numbers_lane";

/**
 * startLane is the lane a locking round-robin claim looks in first, at random, so that concurrent
 * claims spread over the lanes instead of all skipping one another at the head of one index; null
 * when the group has one lane (or the claim does not use lanes).
 */
function startLane(o: ClaimOptions): number | null {
  return o.allocation === "round-robin" && o.locking && o.lanes > 1 ? Math.floor(Math.random() * o.lanes) : null;
}

/** CLAIMED is the MySQL session variable gms_claim_v1 leaves its number in (see claimAndReserve). */
const CLAIMED = "@gms_claimed_number";

/**
 * claimArguments are gms_claim_v1's arguments, in its order: the claim (group, locking, random,
 * start lane, random pivot, now) and the reservation (session, code, phone, expiry);
 * gms_claim_session_v1 takes the same first.
 */
const claimArguments = (o: ClaimOptions, r: NewReservation): unknown[] => [
  o.group,
  o.locking,
  o.allocation === "random",
  startLane(o),
  Math.random(),
  o.now,
  r.sessionId,
  r.accessCode ?? null,
  r.phoneNumber,
  r.expiresAt,
];

/** NewReservation is a reservation to store on a number the store claims for it; it is created at the claim's `now`. */
export type NewReservation = Omit<ReservationRow, "id" | "accessNumber" | "resourceGroup" | "locking" | "createdAt">;

/**
 * claimAndReserve claims a number as claimNumber does and, only when it got one, stores `rows`
 * (e.g. the session the reservation belongs to, and its data) and the reservation on it, and
 * records the claim (markNumberUsed; a locking number is busy until the reservation expires).
 * Undefined (no free number) has stored nothing. On MySQL all of it is one batch, which commits
 * the transaction too when `options.commit` says it is the last: the stored procedure gms_claim_v1
 * claims and reserves and leaves the number in a session variable the later statements read, so the
 * row lock is held for no network round trip at all; the number is read back after the COMMIT
 * (RunOptions.after). On SQLite `tx.q` must be the transaction (batchTransaction's is).
 */
export async function claimAndReserve(tx: Batcher, o: ClaimOptions, r: NewReservation, rows: readonly InsertRows[] = [], options: RunOptions = {}): Promise<string | undefined> {
  const { q, dialect } = tx;
  if (dialect === "sqlite") {
    const number = await claimNumber(q, dialect, o);
    if (number === undefined) return undefined;
    await tx.run(rows.map((ins) => insertStatement(q, ins)));
    await reserve(q, { ...r, createdAt: o.now, resourceGroup: o.group, accessNumber: number, locking: o.locking }, o.locking ? r.expiresAt : undefined);
    return number;
  }
  const results = await tx.run(
    [
      sqlText("CALL gms_claim_v1(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", claimArguments(o, r)),
      ...rows.map((ins) => insertWhen(ins, `${CLAIMED} IS NOT NULL`)),
    ],
    // The number is read after the COMMIT (when this batch commits): the reply comes in one piece.
    { ...options, after: [sqlText(`SELECT ${CLAIMED} AS number`)] },
  );
  const row = results[results.length - 1]?.[0] as { number: string | null } | undefined;
  return row?.number ?? undefined;
}

/**
 * CALL_ENTRIES_MAX_BYTES is the most data (values' bytes) claimSession sends inside its CALL, as
 * JSON with base64 values; a larger record's entries go as binary rows of their own, where the
 * third more bytes and the JSON parse would cost more than the round trip they share.
 */
const CALL_ENTRIES_MAX_BYTES = 64 * 1024;

/** bytesOf is the bytes of a record's values. */
const bytesOf = (entries: DataEntries): number => {
  let n = 0;
  for (const v of entries.values()) n += valueSize(v);
  return n;
};

/** ClaimOnce makes a claimSession idempotent: a retry with the same request id gets the first result. */
export interface ClaimOnce {
  scope: string;
  requestId: string;
  /** keepUntil is how long the first result is kept for retries. */
  keepUntil: number;
  /** result is the reply to keep, given the number the claim got. */
  result(accessNumber: string): string;
}

/** ClaimedSession is what claimSession did: claimed a number, or found the first call's result (a retry); undefined when no number was free. */
export type ClaimedSession = { accessNumber: string; prior?: undefined } | { accessNumber?: undefined; prior: string };

/** NO_NUMBER rolls claimSession's own transaction back when the group had no free number. */
const NO_NUMBER = Symbol("no free number");

/**
 * claimSession is RequestInteraction's transaction of its own: it claims a number as claimAndReserve
 * does and, only when it got one, stores the new session, its data record (with `entries`) and the
 * reservation, and commits. With `once`, a retry with the same request id claims and stores
 * nothing and gets the first call's result back. Undefined (no free number) has stored nothing,
 * not the request id either. On MySQL it is one prepared CALL of gms_claim_session_v1 (migration
 * 007), which does all of it in the database, with the entries as JSON (up to
 * CALL_ENTRIES_MAX_BYTES of values). A larger record, and SQLite, take claimAndReserve's batch in
 * a batchTransaction (one round trip on MySQL), or with `once` in a knex transaction with the
 * request id's claim (claimRequestId) before it. The session, the record and the reservation are created at the claim's
 * `now`; the session is a new one: active, on the reservation's phone number, with the record.
 */
export async function claimSession(
  db: Database,
  o: ClaimOptions,
  r: NewReservation,
  session: SessionRow,
  data: DataRow,
  entries: DataEntries,
  once?: ClaimOnce,
): Promise<ClaimedSession | undefined> {
  if (session.state !== "active" || session.phoneNumber !== r.phoneNumber || session.id !== r.sessionId || session.dataId !== data.id || data.expiresAt !== session.expiresAt || data.version !== 1) {
    throw new Error("claimSession: the session must be a new active one, on the reservation's phone number, with a new record that expires with it");
  }
  if (db.dialect === "mysql" && bytesOf(entries) <= CALL_ENTRIES_MAX_BYTES) {
    // The number is not known before the CALL: the result is kept with a placeholder the procedure replaces.
    const placeholder = `gms-claimed-number-${randomUUID()}`;
    const call = sqlText("CALL gms_claim_session_v1(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
      ...claimArguments(o, r),
      session.service,
      session.builtin,
      session.dataId,
      session.expiresAt,
      entries.size === 0 ? null : entriesJson(entries),
      once?.scope ?? null,
      once?.requestId ?? null,
      once?.keepUntil ?? null,
      once?.result(placeholder) ?? null,
      once === undefined ? null : placeholder,
    ]);
    const [rows] = await batchTransaction(db, (tx) => {
      if (tx.call === undefined) throw new Error("claimSession: batchTransaction on MySQL calls procedures");
      return tx.call(call, { begins: true, commits: true });
    });
    const [row] = (rows ?? []) as { number: string | null; prior: string | null }[];
    if (row?.prior != null) return { prior: row.prior };
    return row?.number == null ? undefined : { accessNumber: row.number };
  }
  const rows = [...dataInsertRows({ ...data, createdAt: o.now }, entries), sessionInsertRow({ ...session, createdAt: o.now })];
  if (once === undefined) {
    // One batch, committed in its round trip on MySQL (stores nothing when it claims nothing).
    const number = await batchTransaction(db, (tx) => claimAndReserve(tx, o, r, rows, { commit: true }));
    return number === undefined ? undefined : { accessNumber: number };
  }
  try {
    return await db.knex.transaction(async (trx): Promise<ClaimedSession> => {
      const prior = await claimRequestId(trx, once.scope, once.requestId, o.now, once.keepUntil);
      if (prior !== undefined) return { prior };
      const number = await claimAndReserve(batcherOf(trx, db.dialect), o, r, rows);
      // Rolled back: the request id is not kept either.
      if (number === undefined) throw NO_NUMBER;
      await completeRequestId(trx, once.scope, once.requestId, once.result(number), once.keepUntil);
      return { accessNumber: number };
    });
  } catch (e) {
    if (e === NO_NUMBER) return undefined;
    throw e;
  }
}

/** reserve stores a reservation on a number the caller claimed and records the claim. */
export async function reserve(q: Queryable, r: Omit<ReservationRow, "id">, busyUntil: number | undefined): Promise<void> {
  await insertReservation(q, r);
  await markNumberUsed(q, r.resourceGroup, r.accessNumber, r.createdAt, busyUntil);
}

/**
 * numberUsedColumn is what a claim records: a locking number is busy until `busyUntil`
 * (available_at); a shared number was used now (last_used_at, the order of a non-locking
 * round-robin group). One column each: every indexed column a claim writes is one more index entry
 * moved per claim.
 */
const numberUsedColumn = (busyUntil: number | undefined) => (busyUntil === undefined ? "last_used_at" : "available_at");

/** markNumberUsed records a claim (numberUsedColumn). */
async function markNumberUsed(q: Queryable, group: string, number: string, now: number, busyUntil: number | undefined): Promise<void> {
  await q("access_numbers")
    .where({ resource_group: group, number })
    .update({ [numberUsedColumn(busyUntil)]: busyUntil ?? now });
}

/** setNumbersAvailableAt sets when locking numbers are free again (release plus cool-down, or a new expiry). */
export async function setNumbersAvailableAt(q: Queryable, numbers: readonly { group: string; number: string }[], availableAt: number): Promise<void> {
  for (const n of numbers) await q("access_numbers").where({ resource_group: n.group, number: n.number }).update({ available_at: availableAt });
}

/**
 * nextFreeAt is the earliest moment after `now` a number of a locking group frees up; undefined when
 * none is busy. Numbers free by the committed data (available_at ≤ now) are left out: a claim found
 * none of them, so each is being claimed by a transaction in flight, whose new expiry is not visible.
 */
export async function nextFreeAt(q: Queryable, group: string, now: number): Promise<number | undefined> {
  const row = (await q("access_numbers").where("resource_group", group).andWhere("retired", false).andWhere("available_at", ">", now).min({ at: "available_at" }).first()) as
    | { at: number | string | null }
    | undefined;
  return row?.at === null || row?.at === undefined ? undefined : Number(row.at);
}

/** groupHasNumbers tells whether a group has any number that may be handed out. */
export async function groupHasNumbers(q: Queryable, group: string): Promise<boolean> {
  return (await q("access_numbers").where("resource_group", group).andWhere("retired", false).first("number")) !== undefined;
}

/** liveCodes are the access codes of the live reservations of a number. */
export async function liveCodes(q: Queryable, number: string, now: number): Promise<Set<string>> {
  const rows = (await live(q("reservations").where("access_number", number), now).whereNotNull("access_code").select("access_code")) as { access_code: string }[];
  return new Set(rows.map((r) => r.access_code));
}

/** insertReservation stores a reservation and returns its id. */
async function insertReservation(q: Queryable, r: Omit<ReservationRow, "id">): Promise<number> {
  const [id] = (await q("reservations").insert({
    session_id: r.sessionId,
    resource_group: r.resourceGroup,
    access_number: r.accessNumber,
    access_code: r.accessCode ?? null,
    phone_number: r.phoneNumber,
    locking: r.locking,
    created_at: r.createdAt,
    expires_at: r.expiresAt,
    released_at: null,
  })) as number[];
  return Number(id);
}

/** liveReservationsOfSession lists a session's live reservations, oldest first. */
export async function liveReservationsOfSession(q: Queryable, sessionId: string, now: number): Promise<ReservationRow[]> {
  return ((await live(q("reservations").where("session_id", sessionId), now).orderBy("id")) as ReservationSql[]).map(fromSql);
}

/** setReservationExpiry gives live reservations a new expiry. */
export async function setReservationExpiry(q: Queryable, ids: readonly number[], expiresAt: number): Promise<void> {
  if (ids.length === 0) return;
  await q("reservations").whereIn("id", ids).update({ expires_at: expiresAt });
}

/** CodeFailures are a number's recent failed code matches: how many, and when the oldest was. */
export interface CodeFailures {
  count: number;
  oldest: number | undefined;
}

type CodeFailuresSql = { n: number | string; oldest: number | string | null };

export const codeFailuresQuery = (number: string, since: number) =>
  sqlText("SELECT COUNT(*) AS n, MIN(failed_at) AS oldest FROM code_failures WHERE access_number = ? AND failed_at > ?", [number, since]);

const codeFailuresOf = (rows: readonly CodeFailuresSql[]): CodeFailures => {
  const row = rows[0];
  return { count: Number(row?.n ?? 0), oldest: row?.oldest === null || row?.oldest === undefined ? undefined : Number(row.oldest) };
};

/** countCodeFailures reads a number's failed code matches after `since` in the caller's transaction. */
export async function countCodeFailures(tx: Batcher, number: string, since: number): Promise<CodeFailures> {
  const [rows] = await tx.run([codeFailuresQuery(number, since)]);
  return codeFailuresOf((rows ?? []) as CodeFailuresSql[]);
}

/** codeFailureInsert is the statement that counts a failed match that gave an access code, for a batch (runBatch). */
export const codeFailureInsert = (number: string, now: number): SqlText => sqlText("INSERT INTO code_failures (access_number, failed_at) VALUES (?, ?)", [number, now]);

/** LiveReservation is a live reservation with its active session. */
export interface LiveReservation {
  reservation: ReservationRow;
  session: SessionRow;
}

/**
 * lockNumberForMatch reads, in one round trip, a number's failed code matches after `since` and its
 * live reservations whose sessions are active, newest first, locked (with their sessions, on MySQL)
 * for the caller's transaction.
 */
export async function lockNumberForMatch(tx: Batcher, number: string, now: number, since: number): Promise<{ failures: CodeFailures; live: LiveReservation[] }> {
  // On batchTransaction over MySQL, the same SELECTs as the prepared CALL of gms_match_lock_v1 (migration 008), which begins the transaction.
  const [failures, rows] =
    tx.call !== undefined
      ? await tx.call(sqlText("CALL gms_match_lock_v1(?, ?, ?)", [number, now, since]), { begins: true })
      : await tx.run([codeFailuresQuery(number, since), liveOnNumberQuery(tx.dialect, number, now)]);
  return {
    failures: codeFailuresOf((failures ?? []) as CodeFailuresSql[]),
    live: ((rows ?? []) as (ReservationSql & { [K in keyof SessionSql as K extends "id" ? never : `s_${K}`]: SessionSql[K] })[]).map((r) => ({
      reservation: fromSql(r),
      session: sessionFromSql({
        id: r.session_id,
        service: r.s_service,
        builtin: r.s_builtin,
        state: r.s_state,
        phone_number: r.s_phone_number,
        data_id: r.s_data_id,
        created_at: r.s_created_at,
        expires_at: r.s_expires_at,
      }),
    })),
  };
}

/** liveOnNumberQuery is the live reservations on a number with their active sessions, newest first, locked (on MySQL). */
export const liveOnNumberQuery = (dialect: Dialect, number: string, now: number): SqlText =>
  sqlText(
    `SELECT r.*, s.service AS s_service, s.builtin AS s_builtin, s.state AS s_state, s.phone_number AS s_phone_number, s.data_id AS s_data_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at
     FROM reservations r JOIN sessions s ON s.id = r.session_id
     WHERE r.access_number = ? AND ${liveSql("r")} AND s.expires_at > ? AND s.state = 'active'
     ORDER BY r.created_at DESC, r.id DESC${dialect === "sqlite" ? "" : " FOR UPDATE"}`,
    [number, now, now],
  );

/**
 * releaseAndCommit releases reservations (releaseStatements) as the transaction's last batch: on
 * batchTransaction over MySQL one reservation is the prepared CALL of gms_release_v1 (migration
 * 008), which commits; several are one batch with the COMMIT.
 */
export async function releaseAndCommit(tx: Batcher, released: readonly ReservationRow[], now: number, freeAt: (r: ReservationRow) => number): Promise<void> {
  const [only] = released;
  if (tx.call !== undefined && only !== undefined && released.length === 1) {
    await tx.call(sqlText("CALL gms_release_v1(?, ?, ?, ?, ?, ?)", [only.id, now, only.locking, only.resourceGroup, only.accessNumber, freeAt(only)]), { commits: true });
    return;
  }
  await tx.run(releaseStatements(released, now, freeAt), { commit: true });
}

/**
 * releaseStatements mark reservations released at `now` and set when their locking numbers are
 * free again (`freeAt`: the release plus the group's cool-down), built but not run (runBatch).
 */
export function releaseStatements(released: readonly ReservationRow[], now: number, freeAt: (r: ReservationRow) => number): SqlText[] {
  if (released.length === 0) return [];
  return [
    sqlText(`UPDATE reservations SET released_at = ? WHERE id IN (${released.map(() => "?").join(", ")})`, [now, ...released.map((r) => r.id)]),
    ...released.filter((r) => r.locking).map((r) => sqlText("UPDATE access_numbers SET available_at = ? WHERE resource_group = ? AND number = ?", [freeAt(r), r.resourceGroup, r.accessNumber])),
  ];
}

/** sweepAccess deletes reservations that ended before `before` and code failures older than it. */
export async function sweepAccess(q: Queryable, before: number, batch: number): Promise<number> {
  const ended = (await q("reservations")
    .where((w) => {
      void w.where("expires_at", "<=", before).orWhere("released_at", "<=", before);
    })
    .select("id")
    .limit(batch)) as { id: number }[];
  if (ended.length > 0) await q("reservations").whereIn("id", ended.map((r) => r.id)).delete();
  const failures = (await q("code_failures").where("failed_at", "<=", before).select("id").limit(batch)) as { id: number }[];
  if (failures.length > 0) await q("code_failures").whereIn("id", failures.map((r) => r.id)).delete();
  return ended.length + failures.length;
}
