// The access numbers' store on SQL (the contract: src/domain/access-store.ts). Each operation has
// one MySQL path and one SQLite path, side by side (…Mysql / …Sqlite), where the two differ; the
// rest is plain knex on both. On MySQL the hot paths are stored procedures and batches driven by
// batchTransaction (src/store/batch.ts): RequestInteraction is one prepared CALL
// (gms_claim_session_v2), RequestAccess two round trips (the session locked; the claim with its
// COMMIT), a match two (gms_match_lock_v2; the release, or the failed code, with the COMMIT), a
// match under a request id two (the id claimed with the candidates; the writes, the reply kept,
// the COMMIT). Why
// each path is what it is, with the figures: src/store/README.md.
import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type {
  AccessStore,
  Allocation,
  Claimed,
  CodeChooser,
  CodeFailures,
  Extension,
  GroupOccupancy,
  KeptMatch,
  KeptReply,
  LiveReservation,
  LockedNumber,
  MatchDecision,
  MatchedOnce,
  NewSessionClaim,
  Release,
  Reservation,
  ResourceGroup,
  SessionClaim,
} from "../domain/access-store.js";
import { type Database, type Dialect, type Queryable } from "./database.js";
import { batchTransaction, runBatch, sqlText, type Batcher, type SqlText } from "./batch.js";
import { retryDeadlocks } from "./errors.js";
import type { RequestId } from "../domain/idempotency-store.js";
import { claimRequestId, completeRequestId } from "./idempotency-store.js";
import { insertSession, readSession, sessionFromSql, type SessionSql } from "./session-store.js";
import { entriesJson, insertData } from "./storage-store.js";
import { trxOf } from "./unit-of-work.js";

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

function fromSql(r: ReservationSql): Reservation {
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
async function syncNumbers(q: Queryable, groups: ReadonlyMap<string, readonly string[]>): Promise<{ added: number; retired: number }> {
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

/** claimOptionsOf are the claim options of a resource group at `now`. */
const claimOptionsOf = (g: ResourceGroup, now: number): ClaimOptions => ({ group: g.name, locking: g.locking, allocation: g.allocation, lanes: lanesFor(g.size), now });

/**
 * claimNumberSqlite picks a number of the group in the caller's SQLite transaction (SQLite
 * serialises its writers, so no other claim can take it before the transaction ends); MySQL runs
 * the same SELECTs in gms_claim_v2. In a locking group only a free number (available_at ≤ now)
 * qualifies. Undefined when no number qualifies.
 */
async function claimNumberSqlite(trx: Knex.Transaction, o: ClaimOptions): Promise<string | undefined> {
  for (const query of claimQueries("sqlite", o)) {
    const [rows] = await runBatch(trx, "sqlite", [query]);
    const row = rows?.[0] as { number: string } | undefined;
    if (row !== undefined) return row.number;
  }
  return undefined;
}

/**
 * claimQueries are the SELECTs a claim runs, in order, until one returns a row: one for
 * round-robin (two for a locking group of several lanes: in a random lane, then in the whole
 * group), two for random (from a random pivot up, then below it). Round-robin takes the number
 * free the longest (locking) or used the longest ago (shared); random starts from a random point
 * of a random key. On MySQL a locking group skips the rows other claims hold (SKIP LOCKED), so two
 * claims never take the same number, and a shared number is waited for. Written as SQL text (the
 * hot path: knex's builder cost more CPU than the claim's round trip). claimNumberSqlite runs them
 * on SQLite; on MySQL the stored procedure gms_claim_v2 runs the same SELECTs (a test compares them),
 * and they are exported so tests and the benchmark can EXPLAIN exactly what a claim runs. Each
 * names the index it reads (FORCE INDEX on MySQL, INDEXED BY on SQLite): the plan that locks the
 * one row it returns is then not left to the optimizer's estimates, and MariaDB no longer weighs
 * the table's other indexes on every claim (a tenth of its CPU per claim).
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

/** NewReservation is a reservation to make on the number a claim gets, created at the claim's `now`. */
interface NewReservation {
  sessionId: string;
  phoneNumber: string;
  expiresAt: number;
  accessCode: string | undefined;
}

/**
 * claimArguments are gms_claim_v2's arguments, in its order: the claim (group, locking, random,
 * start lane, random pivot, now) and the reservation (session, code, phone, expiry);
 * gms_claim_session_v2 takes the same first.
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

/**
 * CODE_ATTEMPTS bounds how many times a MySQL claim draws its code again after gms_claim_v2 found
 * it taken on the number it claimed (each draw avoids every code read there so far: only a code
 * taken meanwhile by a concurrent claim can collide again).
 */
const CODE_ATTEMPTS = 10;

/**
 * withFreeCode runs a MySQL claim until its code is free: `claim` with the code drawn; when the code
 * was taken on the number claimed (takenOn), the number's live codes are read, the code drawn
 * again avoiding them, and the claim runs again (its transaction rolled back, nothing kept).
 */
async function withFreeCode<T>(
  db: Database,
  chooseCode: CodeChooser | undefined,
  now: number,
  claim: (code: string | undefined) => Promise<{ takenOn: string } | { result: T }>,
): Promise<T> {
  const taken = new Set<string>();
  let takenOn: string | undefined;
  for (let attempt = 1; ; attempt++) {
    const got = await claim(chooseCode?.(taken, takenOn));
    if ("result" in got) return got.result;
    if (attempt >= CODE_ATTEMPTS) throw new Error(`access codes on ${got.takenOn} kept colliding with concurrent claims`);
    takenOn = got.takenOn;
    for (const code of await liveCodes(db.knex, takenOn, now)) taken.add(code);
  }
}

/** liveCodes are the access codes of the live reservations of a number. */
async function liveCodes(q: Queryable, number: string, now: number): Promise<Set<string>> {
  const rows = (await live(q("reservations").where("access_number", number), now).whereNotNull("access_code").select("access_code")) as { access_code: string }[];
  return new Set(rows.map((r) => r.access_code));
}

/** PROVISIONAL_KEEP_MS is how long a request id is held while its first call runs, until its reply says how long to keep it. */
const PROVISIONAL_KEEP_MS = 24 * 3600 * 1000;

/** placeholderOf is the text a kept reply holds in place of a number the database claims later (replaced in the database). */
const placeholderOf = () => `gms-claimed-number-${randomUUID()}`;

/** keptFor is the reply `once` keeps for a claim whose number is the placeholder, with the placeholder; undefined without once. */
function keptFor(once: KeptReply | undefined, code: string | undefined) {
  if (once === undefined) return undefined;
  const placeholder = placeholderOf();
  return { ...once.reply(placeholder, code), placeholder };
}

/** NO_NUMBER rolls a SQLite claim's transaction back when the group had no free number. */
const NO_NUMBER = Symbol("no free number");

/** claimed is a transaction's outcome without NO_NUMBER: undefined when it threw it. */
async function claimed<T>(run: () => Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch (e) {
    if (e === NO_NUMBER) return undefined;
    throw e;
  }
}

/**
 * checkNewSession refuses a claim whose session is not a new active one with a new record (version
 * 1) expiring with it: what gms_claim_session_v2 writes of them whatever it is given.
 */
function checkNewSession(c: NewSessionClaim): void {
  const { session, record } = c;
  if (session.state !== "active" || session.dataId !== record.id || record.expiresAt !== session.expiresAt || record.version !== 1) {
    throw new Error("openSession: the session must be a new active one, with a new record that expires with it");
  }
}

/**
 * openSessionMysql is RequestInteraction's claim on MySQL: one prepared CALL of
 * gms_claim_session_v2 (migration 009), which begins, claims, stores the session, its record with
 * its entries (as JSON, whatever their size) and the reservation, keeps the reply under the
 * request id, and commits, all in the database; the row lock on the number is held for no network
 * round trip. A code taken on a shared number: drawn again and called again (withFreeCode).
 */
function openSessionMysql(db: Database, c: NewSessionClaim): Promise<Claimed | undefined> {
  const o = claimOptionsOf(c.group, c.now);
  const { session, record } = c;
  const entries = record.entries.size === 0 ? null : entriesJson(record.entries);
  return withFreeCode<Claimed | undefined>(db, c.chooseCode, c.now, async (code) => {
    const kept = keptFor(c.once, code);
    const call = sqlText("CALL gms_claim_session_v2(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
      ...claimArguments(o, { sessionId: session.id, phoneNumber: session.phoneNumber, expiresAt: c.bookedUntil, accessCode: code }),
      session.service,
      session.builtin,
      record.id,
      session.expiresAt,
      entries,
      c.once?.id.scope ?? null,
      c.once?.id.requestId ?? null,
      kept?.keepUntil ?? null,
      kept?.reply ?? null,
      kept?.placeholder ?? null,
    ]);
    const [rows] = await batchTransaction(db, (tx) => callOf(tx)(call, { begins: true, commits: true }));
    const [row] = (rows ?? []) as { number: string | null; prior: string | null; taken_on: string | null }[];
    if (row?.taken_on != null) return { takenOn: row.taken_on };
    if (row?.prior != null) return { result: { prior: row.prior } };
    return { result: row?.number == null ? undefined : { accessNumber: row.number, accessCode: code } };
  });
}

/**
 * openSessionSqlite is RequestInteraction's claim on SQLite: a transaction that claims the request
 * id, claims a number and its code (claimSqlite), stores the record, the session and the
 * reservation, and keeps the reply.
 */
function openSessionSqlite(db: Database, c: NewSessionClaim): Promise<Claimed | undefined> {
  const o = claimOptionsOf(c.group, c.now);
  const { session, record, once } = c;
  return claimed(() =>
    db.knex.transaction(async (trx): Promise<Claimed> => {
      const prior = once === undefined ? undefined : await claimRequestId(trx, once.id, c.now, c.now + PROVISIONAL_KEEP_MS);
      if (prior !== undefined) return { prior };
      const got = await claimSqlite(trx, o, { sessionId: session.id, phoneNumber: session.phoneNumber, expiresAt: c.bookedUntil }, c.chooseCode);
      await insertData(trx, { ...record, createdAt: c.now });
      await insertSession(trx, { ...session, createdAt: c.now });
      if (once !== undefined) {
        const kept = once.reply(got.accessNumber, got.accessCode);
        await completeRequestId(trx, once.id, kept.reply, kept.keepUntil);
      }
      return got;
    }),
  );
}

/**
 * claimSqlite claims a number in the caller's SQLite transaction, draws the reservation's code
 * (on a shared number, avoiding its live codes), and stores the reservation and the claim
 * (markNumberUsed); throws NO_NUMBER when the group has no free number.
 */
async function claimSqlite(trx: Knex.Transaction, o: ClaimOptions, r: Omit<NewReservation, "accessCode">, chooseCode: CodeChooser | undefined) {
  const number = await claimNumberSqlite(trx, o);
  if (number === undefined) throw NO_NUMBER;
  const code = chooseCode === undefined ? undefined : chooseCode(o.locking ? new Set() : await liveCodes(trx, number, o.now), number);
  await trx("reservations").insert({
    session_id: r.sessionId,
    resource_group: o.group,
    access_number: number,
    access_code: code ?? null,
    phone_number: r.phoneNumber,
    locking: o.locking,
    created_at: o.now,
    expires_at: r.expiresAt,
    released_at: null,
  });
  await markNumberUsed(trx, o, number, r.expiresAt);
  return { accessNumber: number, accessCode: code };
}

/**
 * markNumberUsed records a claim: a locking number is busy until its reservation expires
 * (available_at); a shared number was used now (last_used_at, the order of a non-locking
 * round-robin group). One column each: every indexed column a claim writes is one more index entry
 * moved per claim.
 */
async function markNumberUsed(q: Queryable, o: ClaimOptions, number: string, expiresAt: number): Promise<void> {
  await q("access_numbers")
    .where({ resource_group: o.group, number })
    .update(o.locking ? { available_at: expiresAt } : { last_used_at: o.now });
}

/** requestIdClaim are the statements that claim a request id, as claimRequestId does, for a batch: its prior result is the last one's row. */
const requestIdClaim = (id: RequestId, now: number): SqlText[] => [
  sqlText("DELETE FROM idempotency_keys WHERE scope = ? AND request_id = ? AND expires_at <= ?", [id.scope, id.requestId, now]),
  // A concurrent first call holds the key's row lock until it commits: this waits, then finds its result.
  sqlText("INSERT INTO idempotency_keys (scope, request_id, result, expires_at) VALUES (?, ?, '', ?) ON DUPLICATE KEY UPDATE request_id = request_id", [
    id.scope,
    id.requestId,
    now + PROVISIONAL_KEEP_MS,
  ]),
  sqlText("SELECT NULLIF(result, '') AS prior FROM idempotency_keys WHERE scope = ? AND request_id = ?", [id.scope, id.requestId]),
];

/** requestIdComplete is the statement that keeps a first call's reply under its claimed request id, as completeRequestId does, for a batch. */
const requestIdComplete = (id: RequestId, reply: string, keepUntil: number): SqlText =>
  sqlText("UPDATE idempotency_keys SET result = ?, expires_at = ? WHERE scope = ? AND request_id = ?", [reply, keepUntil, id.scope, id.requestId]);

/** CLAIMED and TAKEN_ON are the session variables gms_claim_v2 leaves its number, and a taken code's number, in. */
const CLAIMED = "@gms_claimed_number";
const TAKEN_ON = "@gms_code_taken_on";

/**
 * addReservationMysql is RequestAccess's claim on MySQL, two round trips on batchTransaction: the
 * BEGIN, the request id's claim and the session locked (FOR UPDATE); then, booked by the rules,
 * the CALL of gms_claim_v2, the reply kept (or, with no number, the request id let go) and the
 * COMMIT, the number read after it. A code taken on a shared number: drawn again and run again.
 */
function addReservationMysql(db: Database, c: SessionClaim): Promise<Claimed | undefined> {
  const o = claimOptionsOf(c.group, c.now);
  const { once } = c;
  return withFreeCode<Claimed | undefined>(db, c.chooseCode, c.now, (code) =>
    batchTransaction(db, async (tx) => {
      const found = await tx.run([...(once === undefined ? [] : requestIdClaim(once.id, c.now)), sqlText("SELECT * FROM sessions WHERE id = ? AND expires_at > ? FOR UPDATE", [c.sessionId, c.now])]);
      const prior = once === undefined ? undefined : ((found[2]?.[0] as { prior: string | null } | undefined)?.prior ?? undefined);
      if (prior !== undefined) return { result: { prior } };
      const row = found[found.length - 1]?.[0] as SessionSql | undefined;
      const booking = c.book(row === undefined ? undefined : sessionFromSql(row));
      const kept = keptFor(once, code);
      const keep =
        once === undefined || kept === undefined
          ? []
          : [
              sqlText(`UPDATE idempotency_keys SET result = REPLACE(?, ?, ${CLAIMED}), expires_at = ? WHERE scope = ? AND request_id = ? AND ${CLAIMED} IS NOT NULL`, [
                kept.reply,
                kept.placeholder,
                kept.keepUntil,
                once.id.scope,
                once.id.requestId,
              ]),
              // No number: the request id is not kept (the claim's rollback, in a batch that commits).
              sqlText(`DELETE FROM idempotency_keys WHERE scope = ? AND request_id = ? AND ${CLAIMED} IS NULL`, [once.id.scope, once.id.requestId]),
            ];
      const results = await tx.run([sqlText("CALL gms_claim_v2(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", claimArguments(o, { sessionId: c.sessionId, ...booking, accessCode: code })), ...keep], {
        commit: true,
        // The number is read after the COMMIT: the reply comes in one piece.
        after: [sqlText(`SELECT ${CLAIMED} AS number, ${TAKEN_ON} AS taken_on`)],
      });
      const got = results[results.length - 1]?.[0] as { number: string | null; taken_on: string | null } | undefined;
      if (got?.taken_on != null) return { takenOn: got.taken_on };
      return { result: got?.number == null ? undefined : { accessNumber: got.number, accessCode: code } };
    }),
  );
}

/**
 * addReservationSqlite is RequestAccess's claim on SQLite: a transaction that claims the request
 * id, reads the session, books it, claims (claimSqlite) and keeps the reply.
 */
function addReservationSqlite(db: Database, c: SessionClaim): Promise<Claimed | undefined> {
  const o = claimOptionsOf(c.group, c.now);
  const { once } = c;
  return claimed(() =>
    db.knex.transaction(async (trx): Promise<Claimed> => {
      const prior = once === undefined ? undefined : await claimRequestId(trx, once.id, c.now, c.now + PROVISIONAL_KEEP_MS);
      if (prior !== undefined) return { prior };
      const booking = c.book(await readSession(trx, c.sessionId, c.now));
      const got = await claimSqlite(trx, o, { sessionId: c.sessionId, ...booking }, c.chooseCode);
      if (once !== undefined) {
        const kept = once.reply(got.accessNumber, got.accessCode);
        await completeRequestId(trx, once.id, kept.reply, kept.keepUntil);
      }
      return got;
    }),
  );
}

/** callOf is a batchTransaction's procedure call: every one on MySQL has it. */
function callOf(tx: Batcher): NonNullable<Batcher["call"]> {
  if (tx.call === undefined) throw new Error("batchTransaction on MySQL calls procedures");
  return tx.call.bind(tx);
}

/** nextFreeAt: see AccessStore. Numbers free by the committed data are left out: a claim found none, so each is being claimed. */
async function nextFreeAt(q: Queryable, group: string, now: number): Promise<number | undefined> {
  const row = (await q("access_numbers").where("resource_group", group).andWhere("retired", false).andWhere("available_at", ">", now).min({ at: "available_at" }).first()) as
    | { at: number | string | null }
    | undefined;
  return row?.at === null || row?.at === undefined ? undefined : Number(row.at);
}

/** liveReservationsOfSession lists a session's live reservations, oldest first. */
async function liveReservationsOfSession(q: Queryable, sessionId: string, now: number): Promise<Reservation[]> {
  return ((await live(q("reservations").where("session_id", sessionId), now).orderBy("id")) as ReservationSql[]).map(fromSql);
}

/** extendReservations gives live reservations new expiries, and their locking numbers the same. */
async function extendReservations(q: Queryable, extensions: readonly Extension[]): Promise<void> {
  for (const { reservation: r, until } of extensions) {
    await q("reservations").where("id", r.id).update({ expires_at: until });
    if (r.locking) await q("access_numbers").where({ resource_group: r.resourceGroup, number: r.accessNumber }).update({ available_at: until });
  }
}

type CodeFailuresSql = { n: number | string; oldest: number | string | null };

/** codeFailuresQuery counts a number's failed code matches after `since` (gms_match_lock_v2 runs the same SELECT). */
export const codeFailuresQuery = (number: string, since: number) =>
  sqlText("SELECT COUNT(*) AS n, MIN(failed_at) AS oldest FROM code_failures WHERE access_number = ? AND failed_at > ?", [number, since]);

const codeFailuresOf = (rows: readonly CodeFailuresSql[]): CodeFailures => {
  const row = rows[0];
  return { count: Number(row?.n ?? 0), oldest: row?.oldest === null || row?.oldest === undefined ? undefined : Number(row.oldest) };
};

/** codeFailureInsert is the statement that counts a failed match that gave an access code. */
const codeFailureInsert = (number: string, now: number): SqlText => sqlText("INSERT INTO code_failures (access_number, failed_at) VALUES (?, ?)", [number, now]);

/**
 * liveOnNumberQuery is the live reservations on a number with their active sessions, newest first,
 * locked (on MySQL; gms_match_lock_v2 runs the same SELECT).
 */
export const liveOnNumberQuery = (dialect: Dialect, number: string, now: number): SqlText =>
  sqlText(
    `SELECT r.*, s.service AS s_service, s.builtin AS s_builtin, s.state AS s_state, s.phone_number AS s_phone_number, s.data_id AS s_data_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at
     FROM reservations r JOIN sessions s ON s.id = r.session_id
     WHERE r.access_number = ? AND ${liveSql("r")} AND s.expires_at > ? AND s.state = 'active'
     ORDER BY r.created_at DESC, r.id DESC${dialect === "sqlite" ? "" : " FOR UPDATE"}`,
    [number, now, now],
  );

/** liveOf is liveOnNumberQuery's rows as live reservations with their sessions. */
function liveOf(rows: readonly unknown[]): LiveReservation[] {
  return (rows as (ReservationSql & { [K in keyof SessionSql as K extends "id" ? never : `s_${K}`]: SessionSql[K] })[]).map((r) => ({
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
  }));
}

/**
 * matchMysql is a match on MySQL, two round trips on batchTransaction: the prepared CALL of
 * gms_match_lock_v2 (migration 009), which begins and answers with the locked candidates and the
 * failures counted after; then, decided, the release with the COMMIT (one reservation: the
 * prepared CALL of gms_release_v1, migration 008; several: one batch), or the failed code with the
 * COMMIT. A refusal that counts nothing commits (nothing was written). A deadlock with a cancel or
 * an extend of a matched session runs it again.
 */
function matchMysql<D extends MatchDecision>(db: Database, number: string, now: number, since: number, decide: (locked: LockedNumber) => D): Promise<D> {
  return retryDeadlocks(() =>
    batchTransaction(db, async (tx) => {
      const [rows, failures] = await callOf(tx)(sqlText("CALL gms_match_lock_v2(?, ?, ?)", [number, now, since]), { begins: true });
      const decided = decide({ live: liveOf(rows ?? []), failures: codeFailuresOf((failures ?? []) as CodeFailuresSql[]) });
      const [only] = decided.release ?? [];
      if (only !== undefined && decided.release?.length === 1) {
        const r = only.reservation;
        await callOf(tx)(sqlText("CALL gms_release_v1(?, ?, ?, ?, ?, ?)", [r.id, now, r.locking, r.resourceGroup, r.accessNumber, only.freeAt]), { commits: true });
      } else if (decided.release !== undefined) {
        await tx.run(releaseStatements(decided.release, now), { commit: true });
      } else if (decided.countFailure) {
        await tx.run([codeFailureInsert(number, now)], { commit: true });
      }
      return decided;
    }),
  );
}

/** decisionStatements are the writes that carry a match's decision out: the release, or the failed code counted (none for a refusal that counts nothing). */
function decisionStatements(decided: MatchDecision, number: string, now: number): SqlText[] {
  if (decided.release !== undefined) return releaseStatements(decided.release, now);
  return decided.countFailure ? [codeFailureInsert(number, now)] : [];
}

/**
 * matchOnceMysql is a kept match on MySQL, two round trips on batchTransaction: the BEGIN, the
 * request id's claim and the same SELECTs as gms_match_lock_v2 (which begins a transaction of its
 * own, so it cannot follow the claim); then, unless the id had a reply, the decision's writes, the
 * reply kept, and the COMMIT. A retry's transaction wrote nothing and commits as it is.
 */
function matchOnceMysql<D extends MatchDecision>(db: Database, number: string, now: number, since: number, decide: (locked: LockedNumber) => D, once: KeptMatch<D>): Promise<MatchedOnce<D>> {
  return retryDeadlocks(() =>
    batchTransaction(db, async (tx): Promise<MatchedOnce<D>> => {
      const [, , claimed, rows, failures] = await tx.run([...requestIdClaim(once.id, now), liveOnNumberQuery("mysql", number, now), codeFailuresQuery(number, since)]);
      const prior = (claimed?.[0] as { prior: string | null } | undefined)?.prior ?? undefined;
      if (prior !== undefined) return { prior };
      const decided = decide({ live: liveOf(rows ?? []), failures: codeFailuresOf((failures ?? []) as CodeFailuresSql[]) });
      const kept = once.reply(decided);
      await tx.run([...decisionStatements(decided, number, now), requestIdComplete(once.id, kept.reply, kept.keepUntil)], { commit: true });
      return { decided };
    }),
  );
}

/**
 * matchSqlite is a match on SQLite: a transaction that claims the request id (with `once`), reads
 * the candidates and the failures, decides, writes, and keeps the reply.
 */
function matchSqlite<D extends MatchDecision>(db: Database, number: string, now: number, since: number, decide: (locked: LockedNumber) => D, once?: KeptMatch<D>): Promise<MatchedOnce<D>> {
  return db.knex.transaction(async (trx): Promise<MatchedOnce<D>> => {
    const prior = once === undefined ? undefined : await claimRequestId(trx, once.id, now, now + PROVISIONAL_KEEP_MS);
    if (prior !== undefined) return { prior };
    const [rows, failures] = await runBatch(trx, "sqlite", [liveOnNumberQuery("sqlite", number, now), codeFailuresQuery(number, since)]);
    const decided = decide({ live: liveOf(rows ?? []), failures: codeFailuresOf((failures ?? []) as CodeFailuresSql[]) });
    await runBatch(trx, "sqlite", decisionStatements(decided, number, now));
    if (once !== undefined) {
      const kept = once.reply(decided);
      await completeRequestId(trx, once.id, kept.reply, kept.keepUntil);
    }
    return { decided };
  });
}

/** decidedOf is a match's decision, from a match made without a request id (which never has a prior reply). */
function decidedOf<D>(m: MatchedOnce<D>): D {
  if (m.prior !== undefined) throw new Error("match: a kept reply without a request id");
  return m.decided;
}

/**
 * releaseStatements mark reservations released at `now` and set when their locking numbers are
 * free again (freeAt: the release plus the group's cool-down), built but not run (runBatch).
 */
function releaseStatements(releases: readonly Release[], now: number): SqlText[] {
  if (releases.length === 0) return [];
  return [
    sqlText(`UPDATE reservations SET released_at = ? WHERE id IN (${releases.map(() => "?").join(", ")})`, [now, ...releases.map((r) => r.reservation.id)]),
    ...releases
      .filter((r) => r.reservation.locking)
      .map(({ reservation: r, freeAt }) => sqlText("UPDATE access_numbers SET available_at = ? WHERE resource_group = ? AND number = ?", [freeAt, r.resourceGroup, r.accessNumber])),
  ];
}

/** sweepAccess deletes reservations that ended before `before` and code failures older than it. */
async function sweepAccess(q: Queryable, before: number, batch: number): Promise<number> {
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

/** liveByGroup counts the live reservations per group. */
const liveByGroup = (q: Queryable, now: number) => live(q("reservations"), now).groupBy("resource_group").select("resource_group as grp").count({ n: "*" });

/**
 * occupancy counts each group's numbers by state in one pass over access_numbers, against the numbers
 * holding a live reservation (the live index by number), and the live reservations per group.
 */
async function occupancy(q: Queryable, now: number): Promise<GroupOccupancy[]> {
  const held = q("reservations").whereRaw(liveSql(), [now]).groupBy("resource_group", "access_number").select("resource_group", "access_number");
  const numbers = (await q("access_numbers as n")
    .leftJoin(held.as("l"), (j) => {
      j.on("l.resource_group", "=", "n.resource_group").andOn("l.access_number", "=", "n.number");
    })
    .groupBy("n.resource_group")
    .select("n.resource_group as grp")
    .select(
      q.raw("SUM(CASE WHEN n.retired <> 0 THEN 1 ELSE 0 END) AS retired"),
      q.raw("SUM(CASE WHEN n.retired = 0 AND l.access_number IS NOT NULL THEN 1 ELSE 0 END) AS reserved"),
      q.raw("SUM(CASE WHEN n.retired = 0 AND l.access_number IS NULL AND n.available_at > ? THEN 1 ELSE 0 END) AS cooling", [now]),
      q.raw("COUNT(*) AS total"),
    )) as { grp: string; retired: number | string | null; reserved: number | string | null; cooling: number | string | null; total: number | string }[];
  const live = (await liveByGroup(q, now)) as { grp: string; n: number | string }[];
  const reservations = new Map(live.map((r) => [r.grp, Number(r.n)]));
  return numbers
    .map((r) => {
      const [retired, reserved, coolingDown] = [Number(r.retired ?? 0), Number(r.reserved ?? 0), Number(r.cooling ?? 0)];
      return { group: r.grp, reserved, coolingDown, retired, free: Number(r.total) - retired - reserved - coolingDown, reservations: reservations.get(r.grp) ?? 0 };
    })
    .sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
}

/** createAccessStore keeps access numbers, reservations and failed codes in the database. */
export function createAccessStore(db: Database): AccessStore {
  const mysql = db.dialect === "mysql";
  return {
    syncNumbers: (groups) => db.knex.transaction((trx) => syncNumbers(trx, groups)),
    async openSession(c) {
      checkNewSession(c);
      return mysql ? openSessionMysql(db, c) : openSessionSqlite(db, c);
    },
    addReservation: (c) => (mysql ? addReservationMysql(db, c) : addReservationSqlite(db, c)),
    nextFreeAt: (group, now) => nextFreeAt(db.knex, group, now),
    hasNumbers: async (group) => (await db.knex("access_numbers").where("resource_group", group).andWhere("retired", false).first("number")) !== undefined,
    liveReservations: (sessionId, now, uow) => liveReservationsOfSession(uow === undefined ? db.knex : trxOf(uow), sessionId, now),
    groupReservations: async (group, now) =>
      ((await live(db.knex("reservations").where("resource_group", group), now).orderBy([{ column: "access_number" }, { column: "id" }])) as ReservationSql[]).map(fromSql),
    numberReservations: async (accessNumber, now, uow) =>
      ((await live((uow === undefined ? db.knex : trxOf(uow))("reservations").where("access_number", accessNumber), now).orderBy("id")) as ReservationSql[]).map(fromSql),
    async release(uow, releases, now) {
      await runBatch(trxOf(uow), db.dialect, releaseStatements(releases, now));
    },
    extend: (uow, extensions) => extendReservations(trxOf(uow), extensions),
    match: (number, now, since, decide) => (mysql ? matchMysql(db, number, now, since, decide) : matchSqlite(db, number, now, since, decide).then(decidedOf)),
    matchOnce: (number, now, since, decide, once) => (mysql ? matchOnceMysql(db, number, now, since, decide, once) : matchSqlite(db, number, now, since, decide, once)),
    occupancy: (now) => occupancy(db.knex, now),
    sweep: (before, batch) => sweepAccess(db.knex, before, batch),
  };
}
