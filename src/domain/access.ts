import { randomInt } from "node:crypto";
import type { Knex } from "knex";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { Config, ResourceGroupConfig } from "../config.js";
import {
  claimAndReserve,
  claimNumber,
  claimSession,
  codeFailureInsert,
  countCodeFailures,
  groupHasNumbers,
  lanesFor,
  liveCodes,
  lockNumberForMatch,
  nextFreeAt,
  releaseAndCommit,
  releaseStatements,
  reserve,
  retryDeadlocks,
  syncNumbers,
  type ClaimOptions,
  type CodeFailures,
  type LiveReservation,
  type ReservationRow,
} from "../store/access-store.js";
import { type Database } from "../store/database.js";
import { batcherOf, batchTransaction, insertStatement, type Batcher, type InsertRows, type RunOptions } from "../store/batch.js";
import { lockSession, sessionInsertRow, type SessionRow } from "../store/session-store.js";
import { dataInsertRows } from "../store/storage-store.js";
import { GmsError, invalid, notFound } from "./errors.js";
import { keptReply, priorReply, runOnce, type RequestKey } from "./idempotency.js";
import { chooseMatches, guardRefusal, locksNow } from "./matching.js";
import { normalizePhone } from "./phone.js";
import { DEFAULT_SERVICE_TTL_SECONDS, pick, resolveService } from "./services.js";
import type { NewRecord, Storage } from "./storage.js";
import type { DataEntries } from "./value.js";
import { newId } from "./ids.js";

/** AccessGrant is one reservation as callers see it (GMS `_access_number`, `_access_code`, `_expiration_time`). */
export interface AccessGrant {
  accessNumber: string;
  /** accessCode is set only when a code was asked for. */
  accessCode: string | undefined;
  resourceGroup: string;
  expiresAt: number;
  expirationSeconds: number;
}

/** SessionView is a session with its live reservations. */
export interface SessionView extends SessionRow {
  access: AccessGrant[];
}

/** RequestInteractionInput is a customer's request for a number to call. */
export interface RequestInteractionInput {
  service: string;
  phoneNumber: string;
  provideCode?: boolean | undefined;
  resourceGroup?: string | undefined;
  ttlSeconds?: number | undefined;
  bookingSeconds?: number | undefined;
  codeLength?: number | undefined;
  appData: DataEntries;
  request: RequestKey;
}

/** RequestInteractionResult is the new session, its number, and the effective options. */
export interface RequestInteractionResult {
  session: SessionView;
  access: AccessGrant;
  ttlSeconds: number;
  provideCode: boolean;
}

/** RequestAccessInput asks for one more number for an existing session. */
export interface RequestAccessInput {
  service: string;
  sessionId: string;
  resourceGroup?: string | undefined;
  provideCode?: boolean | undefined;
  phoneNumber?: string | undefined;
  bookingSeconds?: number | undefined;
  codeLength?: number | undefined;
  request: RequestKey;
}

/** MatchInput describes an arriving call (DNIS, ANI, typed code). */
export interface MatchInput {
  service: string;
  accessNumber: string;
  phoneNumber?: string | undefined;
  accessCode?: string | undefined;
  returnMultiple: boolean;
  returnData: boolean;
}

/** MatchResult is one session matched to a call. */
export interface MatchResult {
  sessionId: string;
  dataId: string;
  service: string;
  phoneNumber: string;
  /** data is the session's data, with return_data only. */
  data: DataEntries | undefined;
}

/** grantOf turns a reservation into what callers see of it. */
export function grantOf(r: ReservationRow): AccessGrant {
  return {
    accessNumber: r.accessNumber,
    accessCode: r.accessCode,
    resourceGroup: r.resourceGroup,
    expiresAt: r.expiresAt,
    expirationSeconds: Math.round((r.expiresAt - r.createdAt) / 1000),
  };
}

/** randomCode draws `length` decimal digits from the cryptographic RNG. */
export function randomCode(length: number): string {
  let code = "";
  while (code.length < length) code += randomInt(0, 1_000_000).toString().padStart(6, "0");
  return code.slice(0, length);
}

/** freeCode draws a code none of `taken` holds; a number crowded with codes asks for longer ones. */
function freeCode(taken: ReadonlySet<string>, length: number, number: string): string {
  for (let i = 0; i < 20; i++) {
    const candidate = randomCode(length);
    if (!taken.has(candidate)) return candidate;
  }
  throw new GmsError("resource_exhausted", `no free ${length}-digit access code on ${number}; use longer codes`);
}

/** NO_FREE_NUMBER rolls an allocating transaction back when its group has no free number. */
const NO_FREE_NUMBER = new Error("no free number");

/** AccessDeps are what the access rules need. */
export interface AccessDeps {
  db: Database;
  clock: Clock;
  config: Config;
  storage: Storage;
  log: Logger;
}

/** AllocateInput is one reservation to make inside a transaction. */
interface AllocateInput {
  sessionId: string;
  sessionExpiresAt: number;
  group: string;
  provideCode: boolean;
  codeLength: number;
  bookingSeconds: number;
  phoneNumber: string;
}

/** Access is request-interaction, request-access and match-interaction over the store. */
export interface Access {
  /** syncNumbers brings the stored numbers in line with the configured resource groups. */
  syncNumbers(): Promise<{ added: number; retired: number }>;
  requestInteraction(input: RequestInteractionInput): Promise<RequestInteractionResult>;
  requestAccess(input: RequestAccessInput): Promise<AccessGrant>;
  matchInteraction(input: MatchInput): Promise<MatchResult[]>;
  /** release frees reservations now (cool-down applies to locking numbers), inside a transaction. */
  release(trx: Knex.Transaction, reservations: readonly ReservationRow[], now: number): Promise<void>;
}

/** createAccess builds the access-number rules. */
export function createAccess({ db, clock, config, storage, log }: AccessDeps): Access {
  const groupOf = (name: string): ResourceGroupConfig => {
    const group = config.resources[name];
    if (group === undefined) throw invalid(`resource_group: no resource group "${name}" is configured`);
    return group;
  };

  /**
   * allocate claims a number of the group and reserves it for the session, storing `rows` (the
   * session and its data, for a new one) only once a number is claimed, all in the caller's
   * transaction; undefined, with nothing stored, when the group has no free number. Where any code
   * will do (a locking number, or no code) it is one batch, a single round trip on MySQL, which
   * commits too when `options.commit` says nothing follows. A shared number's code must differ from
   * the codes of its other live reservations, known only once the number is claimed, so that case
   * reads them first and needs `tx.q` to be a knex transaction (see needsReads).
   */
  async function allocate(tx: Batcher, a: AllocateInput, rows: readonly InsertRows[] = [], options: RunOptions = {}): Promise<AccessGrant | undefined> {
    const { claim, reservation, group } = claimOf(a, clock.now());
    let number: string | undefined;
    let code: string | undefined;
    if (needsReads(a.group, a.provideCode)) {
      const trx = tx.q;
      number = await claimNumber(trx, db.dialect, claim);
      if (number !== undefined) {
        await tx.run(rows.map((ins) => insertStatement(trx, ins)));
        code = freeCode(await liveCodes(trx, number, claim.now), a.codeLength, number);
        await reserve(trx, { ...reservation, accessCode: code, resourceGroup: a.group, accessNumber: number, locking: false }, undefined);
      }
    } else {
      code = a.provideCode ? randomCode(a.codeLength) : undefined;
      number = await claimAndReserve(tx, claim, { sessionId: a.sessionId, phoneNumber: a.phoneNumber, expiresAt: reservation.expiresAt, accessCode: code }, rows, options);
    }
    if (number === undefined) return undefined;
    return grantOf({ ...reservation, id: 0, accessCode: code, resourceGroup: a.group, accessNumber: number, locking: group.locking });
  }

  /**
   * allocateForNew is allocate for a new session, as a transaction of the store's own that stores
   * the session and its data record with the claim (claimSession), where any code will do (see
   * needsReads). `reply` is the result of the call given its grant; with a request id, a retry gets
   * the first call's reply back and allocates nothing. Undefined: no free number.
   */
  async function allocateForNew<T>(a: AllocateInput, session: SessionRow, data: NewRecord, reply: (grant: AccessGrant) => T, request: RequestKey): Promise<T | undefined> {
    const { claim, reservation, group } = claimOf(a, session.createdAt);
    const code = a.provideCode ? randomCode(a.codeLength) : undefined;
    const grantFor = (accessNumber: string) => grantOf({ ...reservation, id: 0, accessCode: code, resourceGroup: a.group, accessNumber, locking: group.locking });
    // A retry gets the first reply as JSON round-trips it, as runOnce gives it.
    const once = request.requestId === "" ? undefined : { scope: request.scope, requestId: request.requestId, keepUntil: session.expiresAt, result: (n: string) => keptReply(request, reply(grantFor(n))) };
    const claimed = await claimSession(db, claim, { sessionId: a.sessionId, phoneNumber: a.phoneNumber, expiresAt: reservation.expiresAt, accessCode: code }, session, data.row, data.entries, once);
    if (claimed === undefined) return undefined;
    return claimed.prior !== undefined ? priorReply<T>(request, claimed.prior) : reply(grantFor(claimed.accessNumber));
  }

  /** claimOf is what a claim for `a` asks of the store at `now`, and the reservation it makes (booked until the booking or the session ends). */
  function claimOf(a: AllocateInput, now: number) {
    const group = groupOf(a.group);
    const claim: ClaimOptions = { group: a.group, locking: group.locking, allocation: group.allocation, lanes: lanesFor(group.numbers.length), now };
    const expiresAt = Math.min(now + a.bookingSeconds * 1000, a.sessionExpiresAt);
    return { group, claim, reservation: { sessionId: a.sessionId, phoneNumber: a.phoneNumber, createdAt: now, expiresAt } };
  }

  /** needsReads tells whether allocating in the group reads between statements (shared numbers with codes). */
  const needsReads = (group: string, provideCode: boolean) => provideCode && !groupOf(group).locking;

  /**
   * exhausted is the error for a group with no free number, told once the transaction that found
   * none has rolled back: when the next number frees up, or that the group has none at all.
   */
  async function exhausted(group: string, now: number): Promise<GmsError> {
    const next = groupOf(group).locking ? await nextFreeAt(db.knex, group, now) : undefined;
    if (!(await groupHasNumbers(db.knex, group))) return new GmsError("failed_precondition", `resource group "${group}" has no numbers`);
    return new GmsError("resource_exhausted", `resource group "${group}" has no free number`, { type: "pool_exhausted", resourceGroup: group, nextFreeAt: next });
  }

  /** allocated is what an allocation gave (a grant, a reply), or (undefined) the signal that rolls the transaction back for `exhausted`. */
  const allocated = <T>(got: T | undefined): T => {
    if (got === undefined) throw NO_FREE_NUMBER;
    return got;
  };

  /** withFreeNumber runs an allocating transaction and turns "no free number" into its error. */
  async function withFreeNumber<T>(group: string, now: number, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      throw e === NO_FREE_NUMBER ? await exhausted(group, now) : e;
    }
  }

  /** bookingOf applies the precedence service option > request > group option > global default. */
  const bookingOf = (configured: number | undefined, requested: number | undefined, group: ResourceGroupConfig) =>
    pick(configured, requested, group.booking_expiration_timeout ?? config.access.booking_expiration_timeout);

  /** freeAt is when a released reservation's number is free again: the release plus its group's cool-down. */
  const freeAt = (now: number) => (r: ReservationRow) => now + (config.resources[r.resourceGroup]?.cooldown_seconds ?? 0) * 1000;

  async function release(tx: Batcher, reservations: readonly ReservationRow[], now: number): Promise<void> {
    await tx.run(releaseStatements(reservations, now, freeAt(now)));
  }

  return {
    release: (trx, reservations, now) => release(batcherOf(trx, db.dialect), reservations, now),
    syncNumbers() {
      const groups = new Map(Object.entries(config.resources).map(([name, g]) => [name, g.numbers]));
      return db.knex.transaction((trx) => syncNumbers(trx, groups));
    },

    async requestInteraction(input) {
      const svc = resolveService(config, input.service, "request-interaction");
      const phoneNumber = normalizePhone("phone_number", input.phoneNumber);
      const groupName = pick(svc.options.resource_group, input.resourceGroup, undefined);
      if (groupName === undefined) throw new GmsError("failed_precondition", `no resource group: service "${svc.name}" configures none and the request gives none`);
      const group = groupOf(groupName);
      const ttlSeconds = pick(svc.options.ttl, input.ttlSeconds, DEFAULT_SERVICE_TTL_SECONDS);
      const provideCode = pick(svc.options.provide_code, input.provideCode, false);
      const codeLength = pick(svc.options.access_code_length, input.codeLength, group.access_code_length);
      const bookingSeconds = bookingOf(svc.options.booking_expiration_timeout, input.bookingSeconds, group);
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      const newSession = () => {
        const data = storage.newRecord(input.appData, expiresAt);
        const session: SessionRow = {
          id: newId(),
          service: svc.name,
          builtin: svc.builtin,
          state: "active",
          phoneNumber,
          dataId: data.row.id,
          createdAt: now,
          expiresAt,
        };
        const alloc: AllocateInput = { sessionId: session.id, sessionExpiresAt: expiresAt, group: groupName, provideCode, codeLength, bookingSeconds, phoneNumber };
        return { data, session, alloc };
      };
      const result = (session: SessionRow, access: AccessGrant): RequestInteractionResult => ({ session: { ...session, access: [access] }, access, ttlSeconds, provideCode });
      return withFreeNumber(groupName, now, async () => {
        // Where any code will do: one transaction of the store's own, one round trip on MySQL, with
        // the number's row lock held for no network round trip.
        if (!needsReads(groupName, provideCode)) {
          const { data, session, alloc } = newSession();
          return allocated(await allocateForNew(alloc, session, data, (access) => result(session, access), input.request));
        }
        return runOnce(
          db,
          input.request,
          now,
          async (trx) => {
            const { data, session, alloc } = newSession();
            // The session and its data are stored with the claim, once it got a number.
            const write = [...dataInsertRows(data.row, data.entries), sessionInsertRow(session)];
            return result(session, allocated(await allocate(batcherOf(trx, db.dialect), alloc, write)));
          },
          (r) => r.session.expiresAt,
        );
      });
    },

    async requestAccess(input) {
      const svc = resolveService(config, input.service, "request-access");
      const groupName = pick(svc.options.resource_group, input.resourceGroup, undefined);
      if (groupName === undefined) throw new GmsError("failed_precondition", "no resource group: resource_group is required");
      const group = groupOf(groupName);
      const phone = input.phoneNumber === undefined ? undefined : normalizePhone("phone_number", input.phoneNumber);
      const provideCode = pick(svc.options.provide_code, input.provideCode, false);
      const codeLength = pick(svc.options.access_code_length, input.codeLength, group.access_code_length);
      const bookingSeconds = bookingOf(svc.options.booking_expiration_timeout, input.bookingSeconds, group);
      const now = clock.now();
      // The session locked, then the claim: on MySQL the claim's batch commits in its round trip.
      const grant = async (tx: Batcher, options: RunOptions): Promise<AccessGrant> => {
        const session = await lockSession(tx, input.sessionId, now);
        if (session === undefined) throw notFound(`session ${input.sessionId}`);
        if (session.state !== "active") throw new GmsError("failed_precondition", `session ${input.sessionId} is not active`);
        const alloc = { sessionId: session.id, sessionExpiresAt: session.expiresAt, group: groupName, provideCode, codeLength, bookingSeconds, phoneNumber: phone ?? session.phoneNumber };
        return allocated(await allocate(tx, alloc, [], options));
      };
      return withFreeNumber(groupName, now, () =>
        // Without a request id, and where any code will do, it skips knex's transaction: two round trips.
        input.request.requestId === "" && !needsReads(groupName, provideCode)
          ? batchTransaction(db, (tx) => grant(tx, { commit: true }))
          : runOnce(db, input.request, now, (trx) => grant(batcherOf(trx, db.dialect), {}), (r) => r.expiresAt),
      );
    },

    async matchInteraction(input) {
      resolveService(config, input.service, "match-interaction");
      const number = normalizePhone("access_number", input.accessNumber);
      const phone = input.phoneNumber === undefined ? undefined : normalizePhone("phone_number", input.phoneNumber);
      const code = input.accessCode;
      const now = clock.now();
      const guard = config.access.code_attempts;
      const windowMs = guard.window_seconds * 1000;
      const codeGuard = { maxFailures: guard.max_failures, windowMs };
      // What the guard needs to know (failures) comes from the database: several nodes count alike.
      let failures: CodeFailures = { count: 0, oldest: undefined };
      // A deadlock with CancelSession or ExtendSession on a matched session rolls it back: run again.
      const outcome = await retryDeadlocks(() => batchTransaction(db, async (tx): Promise<{ matched: LiveReservation[] } | { refused: GmsError }> => {
          const found = await lockNumberForMatch(tx, number, now, now - windowMs);
          failures = found.failures;
          // On MySQL the count was read before the candidates' row locks were granted: a guess (or a
          // match on a number already guessed at) that waited for them counts again, now that the
          // guesses before it have committed their failures. A match without a code on a number
          // without failures, the common case, does not: it stays two round trips.
          const recount = code !== undefined || failures.count > 0;
          if (recount && db.dialect === "mysql" && found.live.length > 0 && failures.count < guard.max_failures) failures = await countCodeFailures(tx, number, now - windowMs);
          const locked = guardRefusal(failures, codeGuard, now);
          if (locked !== undefined) {
            throw new GmsError("resource_exhausted", `too many wrong access codes for ${number}; matching is refused until the window ends`, { type: "rate_limited", until: locked.until });
          }
          // A wrong code is counted in the transaction, before the candidates' locks are let go: guesses
          // at one number queue for them, and each counts the ones before it (at most max_failures weighed).
          const noMatch = async (refused: GmsError) => {
            if (code !== undefined) await tx.run([codeFailureInsert(number, now)], { commit: true });
            return { refused };
          };
          // Newest first: without return_multiple_matches only the most recent is matched (and released).
          const decided = chooseMatches(found.live, { code, phone, returnMultiple: input.returnMultiple });
          if ("reason" in decided) {
            const { reason } = decided;
            const message = reason === "no_reservation" ? `no live reservation on ${number}` : `no session matches the call on ${number} (${reason.replace("_", " ")})`;
            return noMatch(new GmsError("not_found", message, { type: "no_match", reason }));
          }
          const chosen = decided.matched;
          // The release is the transaction's last batch: on MySQL it commits in the same round trip.
          await releaseAndCommit(
            tx,
            chosen.map((l) => l.reservation),
            now,
            freeAt(now),
          );
          return { matched: chosen };
        }));
      if ("refused" in outcome) {
        if (code !== undefined && locksNow(failures.count, codeGuard)) {
          log.warn({ event: "security", kind: "access_code_guessing", accessNumber: number, failures: failures.count + 1, windowSeconds: guard.window_seconds }, "access number locked against code guessing");
        }
        throw outcome.refused;
      }
      const matched = outcome.matched;
      const results: MatchResult[] = [];
      for (const { session } of matched) {
        let data: DataEntries | undefined;
        if (input.returnData) data = await storage.get(session.dataId).then((d) => d.entries, () => new Map());
        results.push({ sessionId: session.id, dataId: session.dataId, service: session.service, phoneNumber: session.phoneNumber, data });
      }
      return results;
    },
  };
}
