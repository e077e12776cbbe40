import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { derived, type ConfigSource, type ResourceGroupConfig } from "../config.js";
import type { AccessStore, Booking, Claimed, CodeChooser, Extension, KeptReply, LockedNumber, Release, Reservation, ResourceGroup } from "./access-store.js";
import { GmsError, invalid, notFound } from "./errors.js";
import { keptReply, priorReply, type RequestKey } from "./idempotency.js";
import { judgeCall, locksNow, type NoMatchReason } from "./matching.js";
import { numberingOf, phoneReader } from "./phone.js";
import { DEFAULT_SERVICE_TTL_SECONDS, pick, resolveService } from "./services.js";
import type { Session } from "./session-store.js";
import type { Storage } from "./storage.js";
import type { UnitOfWork } from "./unit-of-work.js";
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
export interface SessionView extends Session {
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
  /** request makes the match once per request id (an IVR's call id): a retry gets the first reply, a match or a refusal. */
  request?: RequestKey | undefined;
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

/**
 * MatchOutcome is what a match answered, as kept under its request id: the sessions matched, or
 * the refusal (no match and why, or locked until when). A retry is answered from it.
 */
type MatchOutcome =
  | { matched: { sessionId: string; dataId: string; service: string; phoneNumber: string }[] }
  | { noMatch: NoMatchReason }
  | { lockedUntil: number };

/**
 * MATCH_REPLY_KEEP_MS is how long a match's reply is kept under its request id: an IVR retries a
 * call within seconds; ten minutes outlast any retry policy and a failover, and keep few rows.
 */
const MATCH_REPLY_KEEP_MS = 10 * 60 * 1000;

/** grantOf turns a reservation into what callers see of it. */
export function grantOf(r: Pick<Reservation, "accessNumber" | "accessCode" | "resourceGroup" | "createdAt" | "expiresAt">): AccessGrant {
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

/** CODE_DRAWS is how many codes freeCode draws before it calls a number crowded. */
const CODE_DRAWS = 20;

/**
 * freeCode draws a code none of `taken` (the live codes on `number`) holds; a number crowded with
 * codes asks for longer ones (RESOURCE_EXHAUSTED).
 */
export function freeCode(taken: ReadonlySet<string>, length: number, number: string | undefined): string {
  for (let i = 0; i < CODE_DRAWS; i++) {
    const candidate = randomCode(length);
    if (!taken.has(candidate)) return candidate;
  }
  throw new GmsError("resource_exhausted", `no free ${length}-digit access code on ${number ?? "the number"}; use longer codes`);
}

/** codeChooser is the store's code chooser for `length`-digit codes (freeCode). */
export const codeChooser =
  (length: number): CodeChooser =>
  (taken, number) =>
    freeCode(taken, length, number);

/** bookingSecondsOf applies GMS's precedence to a booking's length: the service's option > the request's > the group's > the global default. */
export function bookingSecondsOf(service: number | undefined, requested: number | undefined, group: number | undefined, globalDefault: number): number {
  return pick(service, requested, group ?? globalDefault);
}

/** bookedUntil is when a reservation booked at `now` for `bookingSeconds` lapses: never after its session. */
export function bookedUntil(now: number, bookingSeconds: number, sessionExpiresAt: number): number {
  return Math.min(now + bookingSeconds * 1000, sessionExpiresAt);
}

/** freeAfterRelease is when a number released at `now` is free again: after its group's cool-down. */
export function freeAfterRelease(now: number, cooldownSeconds: number): number {
  return now + cooldownSeconds * 1000;
}

/**
 * extendedUntil is a live reservation's expiry when its session is extended at `now` to
 * `sessionExpiresAt`: as far as its group allows (maxBookingSeconds from now), never past the
 * session, and never shorter than it was.
 */
export function extendedUntil(expiresAt: number, now: number, sessionExpiresAt: number, maxBookingSeconds: number): number {
  return Math.min(sessionExpiresAt, Math.max(expiresAt, now + maxBookingSeconds * 1000));
}

/** MatchCounted is how a match ended, as counted: a session matched, none did (NoMatchReason says why), or the number was locked against code guessing. */
export type MatchCounted = { outcome: "matched" } | { outcome: "no_match"; reason: NoMatchReason } | { outcome: "locked" };

/**
 * AccessEvents hears what the access rules decide, as they decide it (the metrics count them):
 * never a number, a code or a phone number, only the configured group and the outcome.
 */
export interface AccessEvents {
  /** allocated: an allocation got a number of the group (a retry given its first reply is not one). */
  allocated(group: string): void;
  /** exhausted: an allocation was refused, the group having no free number. */
  exhausted(group: string): void;
  /** matched: a match ended so. */
  matched(outcome: MatchCounted): void;
  /** lockedOut: a wrong code locked a number against code guessing (the failure that reached the limit). */
  lockedOut(): void;
}

/** NO_ACCESS_EVENTS hears nothing (the rules without metrics). */
export const NO_ACCESS_EVENTS: AccessEvents = { allocated() {}, exhausted() {}, matched() {}, lockedOut() {} };

/** AccessDeps are what the access rules need. */
export interface AccessDeps {
  store: AccessStore;
  clock: Clock;
  /** config is the configuration in effect (resource groups, services, access.*), read at every call. */
  config: ConfigSource;
  storage: Storage;
  log: Logger;
  /** events hears allocations, exhausted groups, matches and lockouts (default NO_ACCESS_EVENTS). */
  events?: AccessEvents | undefined;
}

/** Access is request-interaction, request-access and match-interaction over the store. */
export interface Access {
  /**
   * syncNumbers brings the stored numbers in line with resource groups: the configuration in
   * effect's, or `groups` (the configuration a reload is about to put in effect).
   */
  syncNumbers(groups?: Readonly<Record<string, { readonly numbers: readonly string[] }>>): Promise<{ added: number; retired: number }>;
  requestInteraction(input: RequestInteractionInput): Promise<RequestInteractionResult>;
  requestAccess(input: RequestAccessInput): Promise<AccessGrant>;
  matchInteraction(input: MatchInput): Promise<MatchResult[]>;
  /** grants are a session's live reservations at `now`, as callers see them (in the unit of work when given). */
  grants(sessionId: string, now: number, uow?: UnitOfWork): Promise<AccessGrant[]>;
  /** releaseSessionIn frees a session's live reservations at `now` in the caller's unit of work (cool-down applies to locking numbers). */
  releaseSessionIn(uow: UnitOfWork, sessionId: string, now: number): Promise<void>;
  /** reservationsOf are a resource group's live reservations now, by number, oldest first (what an operator lists). */
  reservationsOf(group: string): Promise<Reservation[]>;
  /**
   * releaseNumberIn frees every live reservation of an access number at `now` in the caller's unit
   * of work, as a match does (cool-down applies to locking numbers), and returns them; NOT_FOUND
   * when none is live.
   */
  releaseNumberIn(uow: UnitOfWork, accessNumber: string, now: number): Promise<Reservation[]>;
  /** extendSessionIn extends a session's live reservations for its new expiry in the caller's unit of work (extendedUntil). */
  extendSessionIn(uow: UnitOfWork, sessionId: string, now: number, sessionExpiresAt: number): Promise<void>;
}

/**
 * keeper is the KeptReply for a call's request key (none without a request id): the reply a claim
 * that got a number and code gets, kept as keptReply gives it, until keepUntil of it.
 */
function keeper<T>(key: RequestKey, replyOf: (accessNumber: string, accessCode: string | undefined) => T, keepUntil: (reply: T) => number): KeptReply | undefined {
  if (key.requestId === "") return undefined;
  return {
    id: { scope: key.scope, requestId: key.requestId },
    reply(accessNumber, accessCode) {
      const reply = replyOf(accessNumber, accessCode);
      return { reply: keptReply(key, reply), keepUntil: keepUntil(reply) };
    },
  };
}

/** createAccess builds the access-number rules. */
export function createAccess({ store, clock, config, storage, log, events = NO_ACCESS_EVENTS }: AccessDeps): Access {
  const groupOf = (name: string): ResourceGroupConfig => {
    const group = config().resources[name];
    if (group === undefined) throw invalid(`resource_group: no resource group "${name}" is configured`);
    return group;
  };

  /** readPhone reads phone and access numbers under the configured numbering plan (access.default_country_code). */
  const reader = derived(config, (c) => phoneReader(numberingOf(c.access)));
  const readPhone = (field: string, raw: string) => reader()(field, raw);

  /** resourceGroupOf is a configured group as a claim needs it. */
  const resourceGroupOf = (name: string): ResourceGroup => {
    const g = groupOf(name);
    return { name, locking: g.locking, allocation: g.allocation, size: g.numbers.length };
  };

  /**
   * exhausted is the error for a group with no free number, told once the claim that found none
   * has rolled back: when the next number frees up, or that the group has none at all.
   */
  async function exhausted(group: string, now: number): Promise<GmsError> {
    const next = groupOf(group).locking ? await store.nextFreeAt(group, now) : undefined;
    if (!(await store.hasNumbers(group))) return new GmsError("failed_precondition", `resource group "${group}" has no numbers`);
    events.exhausted(group);
    return new GmsError("resource_exhausted", `resource group "${group}" has no free number`, { type: "pool_exhausted", resourceGroup: group, nextFreeAt: next });
  }

  /** claim is what an allocation claimed, or (undefined: no free number) the group's `exhausted` error. */
  async function claim(group: string, now: number, got: Promise<Claimed | undefined>): Promise<Claimed> {
    const claimed = await got;
    if (claimed === undefined) throw await exhausted(group, now);
    if (claimed.prior === undefined) events.allocated(group);
    return claimed;
  }

  /** bookingOf is the booking length for a service option and a request in a group. */
  const bookingOf = (configured: number | undefined, requested: number | undefined, group: ResourceGroupConfig) =>
    bookingSecondsOf(configured, requested, group.booking_expiration_timeout, config().access.booking_expiration_timeout);

  /** releaseOf frees a reservation at `now`, its number free again after its group's cool-down. */
  const releaseOf = (reservation: Reservation, now: number): Release => ({
    reservation,
    // A group no longer configured (a reload removed it) releases without a cool-down.
    freeAt: freeAfterRelease(now, config().resources[reservation.resourceGroup]?.cooldown_seconds ?? 0),
  });

  return {
    syncNumbers(groups = config().resources) {
      return store.syncNumbers(new Map(Object.entries(groups).map(([name, g]) => [name, g.numbers])));
    },

    async grants(sessionId, now, uow) {
      return (await store.liveReservations(sessionId, now, uow)).map(grantOf);
    },

    async releaseSessionIn(uow, sessionId, now) {
      const live = await store.liveReservations(sessionId, now, uow);
      await store.release(
        uow,
        live.map((r) => releaseOf(r, now)),
        now,
      );
    },

    reservationsOf(group) {
      return store.groupReservations(group, clock.now());
    },

    async releaseNumberIn(uow, accessNumber, now) {
      const live = await store.numberReservations(accessNumber, now, uow);
      if (live.length === 0) throw new GmsError("not_found", `access number "${accessNumber}" has no live reservation`);
      await store.release(
        uow,
        live.map((r) => releaseOf(r, now)),
        now,
      );
      return live;
    },

    async extendSessionIn(uow, sessionId, now, sessionExpiresAt) {
      const extensions: Extension[] = [];
      for (const r of await store.liveReservations(sessionId, now, uow)) {
        const until = extendedUntil(r.expiresAt, now, sessionExpiresAt, config().resources[r.resourceGroup]?.max_booking_expiration_timeout ?? 0);
        if (until !== r.expiresAt) extensions.push({ reservation: r, until });
      }
      await store.extend(uow, extensions);
    },

    async requestInteraction(input) {
      const svc = resolveService(config(), input.service, "request-interaction");
      const phoneNumber = readPhone("phone_number", input.phoneNumber);
      const groupName = pick(svc.options.resource_group, input.resourceGroup, undefined);
      if (groupName === undefined) throw new GmsError("failed_precondition", `no resource group: service "${svc.name}" configures none and the request gives none`);
      const group = groupOf(groupName);
      const ttlSeconds = pick(svc.options.ttl, input.ttlSeconds, DEFAULT_SERVICE_TTL_SECONDS);
      const provideCode = pick(svc.options.provide_code, input.provideCode, false);
      const codeLength = pick(svc.options.access_code_length, input.codeLength, group.access_code_length);
      const bookingSeconds = bookingOf(svc.options.booking_expiration_timeout, input.bookingSeconds, group);
      const now = clock.now();
      const expiresAt = now + ttlSeconds * 1000;
      const record = storage.newRecord(input.appData, expiresAt);
      const session: Session = { id: newId(), service: svc.name, builtin: svc.builtin, state: "active", phoneNumber, dataId: record.id, createdAt: now, expiresAt };
      const until = bookedUntil(now, bookingSeconds, expiresAt);
      const result = (accessNumber: string, accessCode: string | undefined): RequestInteractionResult => {
        const access = grantOf({ accessNumber, accessCode, resourceGroup: groupName, createdAt: now, expiresAt: until });
        return { session: { ...session, access: [access] }, access, ttlSeconds, provideCode };
      };
      const claimed = await claim(
        groupName,
        now,
        store.openSession({
          group: resourceGroupOf(groupName),
          now,
          session,
          record,
          bookedUntil: until,
          chooseCode: provideCode ? codeChooser(codeLength) : undefined,
          // A retry gets the first reply as JSON round-trips it.
          once: keeper(input.request, result, (r) => r.session.expiresAt),
        }),
      );
      return claimed.prior !== undefined ? priorReply<RequestInteractionResult>(input.request, claimed.prior) : result(claimed.accessNumber, claimed.accessCode);
    },

    async requestAccess(input) {
      const svc = resolveService(config(), input.service, "request-access");
      const groupName = pick(svc.options.resource_group, input.resourceGroup, undefined);
      if (groupName === undefined) throw new GmsError("failed_precondition", "no resource group: resource_group is required");
      const group = groupOf(groupName);
      const phone = input.phoneNumber === undefined ? undefined : readPhone("phone_number", input.phoneNumber);
      const provideCode = pick(svc.options.provide_code, input.provideCode, false);
      const codeLength = pick(svc.options.access_code_length, input.codeLength, group.access_code_length);
      const bookingSeconds = bookingOf(svc.options.booking_expiration_timeout, input.bookingSeconds, group);
      const now = clock.now();
      // The booking, decided on the session as the store locked it.
      let booked: Booking | undefined;
      const book = (session: Session | undefined): Booking => {
        if (session === undefined) throw notFound(`session ${input.sessionId}`);
        if (session.state !== "active") throw new GmsError("failed_precondition", `session ${input.sessionId} is not active`);
        booked = { phoneNumber: phone ?? session.phoneNumber, expiresAt: bookedUntil(now, bookingSeconds, session.expiresAt) };
        return booked;
      };
      const grantFor = (accessNumber: string, accessCode: string | undefined): AccessGrant => {
        if (booked === undefined) throw new Error("requestAccess: a grant before the session was booked");
        return grantOf({ accessNumber, accessCode, resourceGroup: groupName, createdAt: now, expiresAt: booked.expiresAt });
      };
      const claimed = await claim(
        groupName,
        now,
        store.addReservation({
          sessionId: input.sessionId,
          group: resourceGroupOf(groupName),
          now,
          book,
          chooseCode: provideCode ? codeChooser(codeLength) : undefined,
          once: keeper(input.request, grantFor, (g) => g.expiresAt),
        }),
      );
      return claimed.prior !== undefined ? priorReply<AccessGrant>(input.request, claimed.prior) : grantFor(claimed.accessNumber, claimed.accessCode);
    },

    async matchInteraction(input) {
      resolveService(config(), input.service, "match-interaction");
      const number = readPhone("access_number", input.accessNumber);
      const phone = input.phoneNumber === undefined ? undefined : readPhone("phone_number", input.phoneNumber);
      const code = input.accessCode;
      const now = clock.now();
      const guard = config().access.code_attempts;
      const codeGuard = { maxFailures: guard.max_failures, windowMs: guard.window_seconds * 1000 };
      // The store holds the number's candidates while judgeCall decides: the release, or a wrong code
      // counted, commits before they are let go, so guesses at one number queue for them and each
      // counts the ones before it (at most max_failures weighed). The failures come from the
      // database: several nodes count alike.
      const decide = ({ live, failures }: LockedNumber) => {
        const verdict = judgeCall(live, failures, { code, phone, returnMultiple: input.returnMultiple }, codeGuard, now);
        // Newest first: without return_multiple_matches only the most recent is matched (and released).
        if ("matched" in verdict) return { release: verdict.matched.map((l) => releaseOf(l.reservation, now)), matched: verdict.matched };
        return { countFailure: verdict.countFailure, verdict, failuresBefore: failures.count };
      };
      type Decided = ReturnType<typeof decide>;
      const outcomeOf = (decided: Decided): MatchOutcome => {
        if (decided.release !== undefined) {
          return { matched: decided.matched.map(({ session: s }) => ({ sessionId: s.id, dataId: s.dataId, service: s.service, phoneNumber: s.phoneNumber })) };
        }
        const { verdict } = decided;
        return "locked" in verdict ? { lockedUntil: verdict.locked.until } : { noMatch: verdict.reason };
      };
      /** fresh is the outcome of a match decided now (not a retry's): counted (events), and logged as a security event when its wrong code locks the number. */
      const fresh = (decided: Decided): MatchOutcome => {
        if (decided.release !== undefined) events.matched({ outcome: "matched" });
        else if ("locked" in decided.verdict) events.matched({ outcome: "locked" });
        else events.matched({ outcome: "no_match", reason: decided.verdict.reason });
        if (decided.release === undefined && !("locked" in decided.verdict) && code !== undefined && locksNow(decided.failuresBefore, codeGuard)) {
          events.lockedOut();
          log.warn({ event: "security", kind: "access_code_guessing", accessNumber: number, failures: decided.failuresBefore + 1, windowSeconds: guard.window_seconds }, "access number locked against code guessing");
        }
        return outcomeOf(decided);
      };
      const key = input.request;
      let outcome: MatchOutcome;
      if (key === undefined || key.requestId === "") {
        outcome = fresh(await store.match(number, now, now - codeGuard.windowMs, decide));
      } else {
        // A retry (the same call id) gets the first call's outcome: nothing is released or counted again.
        const once = { id: { scope: key.scope, requestId: key.requestId }, reply: (d: Decided) => ({ reply: keptReply(key, outcomeOf(d)), keepUntil: now + MATCH_REPLY_KEEP_MS }) };
        const got = await store.matchOnce(number, now, now - codeGuard.windowMs, decide, once);
        outcome = got.prior !== undefined ? priorReply<MatchOutcome>(key, got.prior) : fresh(got.decided);
      }
      if ("lockedUntil" in outcome) {
        throw new GmsError("resource_exhausted", `too many wrong access codes for ${number}; matching is refused until the window ends`, { type: "rate_limited", until: outcome.lockedUntil });
      }
      if ("noMatch" in outcome) {
        const reason = outcome.noMatch;
        const message = reason === "no_reservation" ? `no live reservation on ${number}` : `no session matches the call on ${number} (${reason.replace("_", " ")})`;
        throw new GmsError("not_found", message, { type: "no_match", reason });
      }
      const results: MatchResult[] = [];
      for (const m of outcome.matched) {
        let data: DataEntries | undefined;
        if (input.returnData) data = await storage.get(m.dataId).then((d) => d.entries, () => new Map());
        results.push({ ...m, data });
      }
      return results;
    },
  };
}
