/**
 * Property tests of allocation and matching (issue 16): any interleaving of RequestInteraction,
 * RequestAccess, MatchInteraction, CancelSession, ExtendSession and the clock passing booking
 * expiries and session TTLs, run one at a time and in concurrent batches, against the real domain
 * on a real database (SQLite and MariaDB), keeps the invariants:
 *
 * - no access number of a locking group is held by two live reservations;
 * - codes are unique among the live reservations of a number;
 * - a released number (matched, cancelled, lapsed) is allocated again (after its cool-down);
 *   RESOURCE_EXHAUSTED comes only when every number of the group is held or resting;
 * - every acknowledged reservation is matchable until it lapses, and not after.
 *
 * A model of the live sessions and reservations predicts every answer. A concurrent batch passes
 * when some order of its calls (a linearization) explains every answer and the store after it.
 * After each step the store's live reservations, live sessions and numbers (free at, used at) must
 * be the model's, and the invariants are checked on the store itself.
 *
 * Reproduce a failure with what fast-check prints: GMS_PROPERTY_SEED=<seed> GMS_PROPERTY_PATH=<path>
 * (a batch's interleaving is the database's, so a concurrent failure may need a few tries).
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import fc from "fast-check";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessService } from "../gen/gms/v1/access_pb.js";
import { ManualClock } from "../src/clock.js";
import { expandNumbers, parseConfig } from "../src/config.js";
import type { AccessGrant } from "../src/domain/access.js";
import { GmsError } from "../src/domain/errors.js";
import type { DataValue } from "../src/domain/value.js";
import { createApp, createAppSweeper, type App } from "../src/server.js";
import { DIALECTS, createTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/** SEED makes every run reproducible; fast-check prints it (with the failing path) on a failure. */
const SEED = Number(process.env["GMS_PROPERTY_SEED"] ?? 20261216);
/** RUNS is how many command sequences each dialect runs. */
const RUNS = Number(process.env["GMS_PROPERTY_RUNS"] ?? 30);
/** REPLAY replays one failing case (the path fast-check printed) of SEED. */
const REPLAY = process.env["GMS_PROPERTY_PATH"] === undefined ? {} : { path: process.env["GMS_PROPERTY_PATH"], endOnFailure: true };

const config = parseConfig({
  access: { booking_expiration_timeout: 30, code_attempts: { max_failures: 3, window_seconds: 20 } },
  resources: {
    // Small pools, so that exhaustion and reuse happen in most runs.
    lock: { numbers: ["+18005550100..+18005550102"], allocation: "round-robin", locking: true, booking_expiration_timeout: 20, max_booking_expiration_timeout: 60 },
    lockr: { numbers: ["+18005550110..+18005550113"], allocation: "random", locking: true, cooldown_seconds: 5, access_code_length: 5, max_booking_expiration_timeout: 45 },
    shared: { numbers: ["+18005550200", "+18005550201"], allocation: "round-robin", locking: false, access_code_length: 4, booking_expiration_timeout: 15, max_booking_expiration_timeout: 60 },
    sharedr: { numbers: ["+18005550210..+18005550212"], allocation: "random", locking: false, access_code_length: 4 },
  },
});
const GROUPS = ["lock", "lockr", "shared", "sharedr"] as const;
type Group = (typeof GROUPS)[number];
const groupConfig = (g: string) => config.resources[g]!;
const ALL_NUMBERS = GROUPS.flatMap((g) => groupConfig(g).numbers.map((number) => ({ group: g, number })));
/** LOCKING are the numbers of locking groups. */
const LOCKING = new Set(ALL_NUMBERS.filter((a) => groupConfig(a.group).locking).map((a) => a.number));
const PHONES = ["+16505550001", "+16505550002", "+16505550003"];
/** dialled writes a phone number as a caller's phone might send it; matching normalises it. */
const dialled = (p: string) => `+1 (${p.slice(2, 5)}) ${p.slice(5, 8)}-${p.slice(8)}`;
const GUARD = config.access.code_attempts;
const UNKNOWN_SESSION = "0b7f8a4e-9c1d-4f5e-8a2b-3c4d5e6f7a8b";

// ---------------------------------------------------------------------------------------------
// The model.

interface MSession {
  id: string;
  dataId: string;
  phone: string;
  state: "active" | "ended";
  expiresAt: number;
  marker: string;
}

interface MReservation {
  sessionId: string;
  group: Group;
  number: string;
  code: string | undefined;
  phone: string;
  createdAt: number;
  expiresAt: number;
  released: boolean;
  /** tick is the step that made it (the same for a whole batch); seq orders the model's steps. */
  tick: number;
  seq: number;
}

interface MNumber {
  group: Group;
  locking: boolean;
  /** availableAt is when a locking number is free (its reservation's expiry, or release + cool-down). */
  availableAt: number;
  /** lastUsedAt orders a shared round-robin group. */
  lastUsedAt: number;
}

/** Stored is a reply kept under a request id, with the call that made it (a retry repeats it). */
interface Stored {
  reply: Reply;
  keepUntil: number;
  op: InteractionOp | AccessOp;
}

interface Model {
  sessions: Record<string, MSession>;
  reservations: MReservation[];
  numbers: Record<string, MNumber>;
  failures: Record<string, number[]>;
  requestIds: Record<string, Stored>;
  seq: number;
}

/** Reply is what an allocating call answered, reduced to what the model checks. */
interface Reply {
  sessionId: string;
  grant: AccessGrant;
}

// Concrete calls, resolved against the model before they run.
interface InteractionOp {
  kind: "interaction";
  group: Group;
  provideCode: boolean;
  phone: string;
  ttl: number;
  booking: number | undefined;
  scope: string;
  requestId: string;
  marker: string;
}
interface AccessOp {
  kind: "access";
  sessionId: string;
  group: Group;
  provideCode: boolean;
  phone: string | undefined;
  booking: number | undefined;
  scope: string;
  requestId: string;
}
interface MatchOp {
  kind: "match";
  number: string;
  phone: string | undefined;
  code: string | undefined;
  multiple: boolean;
  data: boolean;
}
interface CancelOp {
  kind: "cancel";
  sessionId: string;
}
interface ExtendOp {
  kind: "extend";
  sessionId: string;
  ttl: number;
}
interface GetOp {
  kind: "get";
  sessionId: string;
}
/** SweepOp is the background sweeper's pass: it deletes what has lapsed and must change nothing live. */
interface SweepOp {
  kind: "sweep";
}
type Op = InteractionOp | AccessOp | MatchOp | CancelOp | ExtendOp | GetOp | SweepOp;

type Outcome = { ok: true; value: unknown } | { ok: false; kind: string; detail: unknown; message: string };

interface MatchValue {
  sessionId: string;
  dataId: string;
  phoneNumber: string;
  data: Map<string, DataValue> | undefined;
}
interface SessionValue {
  id: string;
  state: string;
  expiresAt: number;
  access: AccessGrant[];
}

/** Step is where a call is applied: the time, the step's tick, and whether it ran alone. */
interface Step {
  now: number;
  tick: number;
  serial: boolean;
}

const emptyModel = (numbers: Record<string, MNumber>): Model => ({ sessions: {}, reservations: [], numbers, failures: {}, requestIds: {}, seq: 0 });
const clone = (m: Model): Model => structuredClone(m);

const liveOf = (m: Model, now: number) => m.reservations.filter((r) => !r.released && r.expiresAt > now);
/** matchable are the live reservations on a number whose sessions are active. */
const matchable = (m: Model, number: string, now: number) =>
  liveOf(m, now).filter((r) => r.number === number && m.sessions[r.sessionId]?.state === "active" && m.sessions[r.sessionId]!.expiresAt > now);

const bookingOf = (group: Group, requested: number | undefined) => requested ?? groupConfig(group).booking_expiration_timeout ?? config.access.booking_expiration_timeout;

const fail = (why: string) => why;
const describeOutcome = (o: Outcome) => (o.ok ? `ok ${JSON.stringify(o.value, (_k, v: unknown) => (v instanceof Map ? [...v] : v))}` : `${o.kind} ${JSON.stringify(o.detail)} ${o.message}`);

/**
 * allocate checks an allocation's answer against the model and records it: `sessionExpiresAt`
 * bounds the booking. Returns a reason when the answer is impossible.
 */
function allocate(
  m: Model,
  s: Step,
  o: { group: Group; provideCode: boolean; booking: number | undefined; phone: string; sessionId: string; sessionExpiresAt: number },
  outcome: Outcome,
  grant: AccessGrant | undefined,
): string | undefined {
  const g = groupConfig(o.group);
  const numbers = Object.entries(m.numbers).filter(([, n]) => n.group === o.group);
  const free = g.locking ? numbers.filter(([, n]) => n.availableAt <= s.now) : numbers;
  if (free.length === 0) {
    if (outcome.ok) return fail(`allocated ${grant?.accessNumber} though every number of ${o.group} is held or resting`);
    if (outcome.kind !== "resource_exhausted") return fail(`expected RESOURCE_EXHAUSTED, got ${describeOutcome(outcome)}`);
    const detail = outcome.detail as { type: string; resourceGroup: string; nextFreeAt: number | undefined };
    if (detail.type !== "pool_exhausted" || detail.resourceGroup !== o.group) return fail(`bad exhaustion detail ${JSON.stringify(detail)}`);
    // nextFreeAt reads the store after the failed claim: exact when nothing ran beside it.
    const next = Math.min(...numbers.map(([, n]) => n.availableAt).filter((at) => at > s.now));
    if (s.serial && detail.nextFreeAt !== next) return fail(`nextFreeAt ${detail.nextFreeAt}, model says ${next}`);
    return undefined;
  }
  if (!outcome.ok || grant === undefined) return fail(`expected a number of ${o.group} (free: ${free.map(([n]) => n).join(", ")}), got ${describeOutcome(outcome)}`);
  const number = grant.accessNumber;
  const entry = free.find(([n]) => n === number);
  if (entry === undefined) return fail(`allocated ${number}, not a free number of ${o.group} (free: ${free.map(([n]) => n).join(", ")})`);
  if (s.serial && g.allocation === "round-robin") {
    // Alone, round-robin is exact: the number free the longest (locking) or used the longest ago (shared).
    const key = (n: MNumber) => (g.locking ? n.availableAt : n.lastUsedAt);
    const head = [...free].sort(([a, na], [b, nb]) => key(na) - key(nb) || (a < b ? -1 : 1))[0]![0];
    if (number !== head) return fail(`round-robin handed out ${number}, the head is ${head}`);
  }
  const expiresAt = Math.min(s.now + bookingOf(o.group, o.booking) * 1000, o.sessionExpiresAt);
  if (grant.expiresAt !== expiresAt) return fail(`grant expires at ${grant.expiresAt}, model says ${expiresAt}`);
  if (grant.resourceGroup !== o.group) return fail(`grant of group ${grant.resourceGroup}`);
  if (o.provideCode) {
    if (grant.accessCode === undefined || !new RegExp(`^[0-9]{${g.access_code_length}}$`).test(grant.accessCode)) return fail(`bad code ${grant.accessCode}`);
    const taken = liveOf(m, s.now).filter((r) => r.number === number && r.code === grant.accessCode);
    if (taken.length > 0) return fail(`code ${grant.accessCode} on ${number} is already held by session ${taken[0]!.sessionId}`);
  } else if (grant.accessCode !== undefined) return fail(`a code (${grant.accessCode}) nobody asked for`);
  m.seq++;
  m.reservations.push({
    sessionId: o.sessionId,
    group: o.group,
    number,
    code: grant.accessCode,
    phone: o.phone,
    createdAt: s.now,
    expiresAt,
    released: false,
    tick: s.tick,
    seq: m.seq,
  });
  const n = entry[1];
  if (g.locking) n.availableAt = expiresAt;
  else n.lastUsedAt = s.now;
  return undefined;
}

/** release marks reservations released now; a locking number rests for its group's cool-down. */
function release(m: Model, s: Step, rs: readonly MReservation[]): void {
  for (const r of rs) {
    r.released = true;
    const n = m.numbers[r.number]!;
    if (n.locking) n.availableAt = s.now + groupConfig(r.group).cooldown_seconds * 1000;
  }
}

const sameGrant = (a: AccessGrant, b: AccessGrant) =>
  a.accessNumber === b.accessNumber && (a.accessCode ?? "") === (b.accessCode ?? "") && a.expiresAt === b.expiresAt && a.resourceGroup === b.resourceGroup;

/** retried answers a call whose request id holds a kept reply: the same reply, nothing allocated. */
function retried(m: Model, s: Step, key: string, got: Reply | undefined): string | undefined | false {
  const stored = m.requestIds[key];
  if (stored === undefined || stored.keepUntil <= s.now) return false;
  if (got === undefined) return fail(`a retry of ${key} failed; the first reply was ${JSON.stringify(stored.reply)}`);
  if (got.sessionId !== stored.reply.sessionId || !sameGrant(got.grant, stored.reply.grant)) return fail(`a retry of ${key} answered ${JSON.stringify(got)}, the first reply was ${JSON.stringify(stored.reply)}`);
  return undefined;
}

/** STATS counts the outcomes the runs saw, by call (printed with GMS_PROPERTY_STATS=1): do they reach every case? */
const STATS = new Map<string, number>();
const count = (op: Op, outcome: Outcome, serial: boolean) => {
  const detail = outcome.ok ? "ok" : `${outcome.kind}${(outcome.detail as { reason?: string } | undefined)?.reason ? `/${(outcome.detail as { reason: string }).reason}` : ""}`;
  const key = `${serial ? "serial" : "batch"} ${op.kind}${"requestId" in op && op.requestId !== "" ? "+rid" : ""}${op.kind === "match" ? (op.code ? "+code" : "") + (op.phone ? "+phone" : "") : ""} ${detail}`;
  STATS.set(key, (STATS.get(key) ?? 0) + 1);
};

/** apply checks one call's outcome against the model and records its effect; a reason when impossible. */
function apply(m: Model, op: Op, outcome: Outcome, s: Step): string | undefined {
  switch (op.kind) {
    case "interaction": {
      const value = outcome.ok ? (outcome.value as { session: SessionValue; access: AccessGrant }) : undefined;
      const reply = value === undefined ? undefined : { sessionId: value.session.id, grant: value.access };
      const key = `${op.scope}/${op.requestId}`;
      if (op.requestId !== "") {
        const r = retried(m, s, key, reply);
        if (r !== false) return r;
      }
      const sessionExpiresAt = s.now + op.ttl * 1000;
      const sessionId = value?.session.id ?? "";
      if (value !== undefined) {
        if (m.sessions[sessionId] !== undefined) return fail(`a new session reuses the id ${sessionId}`);
        if (value.session.expiresAt !== sessionExpiresAt || value.session.state !== "active") return fail(`new session ${JSON.stringify(value.session)}`);
      }
      const why = allocate(m, s, { group: op.group, provideCode: op.provideCode, booking: op.booking, phone: op.phone, sessionId, sessionExpiresAt }, outcome, value?.access);
      if (why !== undefined || value === undefined) return why;
      const dataId = (value.session as unknown as { dataId: string }).dataId;
      m.sessions[sessionId] = { id: sessionId, dataId, phone: op.phone, state: "active", expiresAt: sessionExpiresAt, marker: op.marker };
      if (op.requestId !== "") m.requestIds[key] = { reply: reply!, keepUntil: sessionExpiresAt, op };
      return undefined;
    }
    case "access": {
      const grant = outcome.ok ? (outcome.value as AccessGrant) : undefined;
      const key = `${op.scope}/${op.requestId}`;
      if (op.requestId !== "") {
        const r = retried(m, s, key, grant === undefined ? undefined : { sessionId: op.sessionId, grant });
        if (r !== false) return r;
      }
      const session = m.sessions[op.sessionId];
      if (session === undefined || session.expiresAt <= s.now) return outcome.ok || outcome.kind !== "not_found" ? fail(`expected NOT_FOUND for a lapsed or unknown session, got ${describeOutcome(outcome)}`) : undefined;
      if (session.state !== "active") return outcome.ok || outcome.kind !== "failed_precondition" ? fail(`expected FAILED_PRECONDITION for an ended session, got ${describeOutcome(outcome)}`) : undefined;
      const why = allocate(m, s, { group: op.group, provideCode: op.provideCode, booking: op.booking, phone: op.phone ?? session.phone, sessionId: session.id, sessionExpiresAt: session.expiresAt }, outcome, grant);
      if (why !== undefined || grant === undefined) return why;
      if (op.requestId !== "") m.requestIds[key] = { reply: { sessionId: op.sessionId, grant }, keepUntil: grant.expiresAt, op };
      return undefined;
    }
    case "match": {
      const windowMs = GUARD.window_seconds * 1000;
      const recent = (m.failures[op.number] ?? []).filter((at) => at > s.now - windowMs);
      if (recent.length >= GUARD.max_failures) {
        const until = Math.min(...recent) + windowMs;
        if (outcome.ok || outcome.kind !== "resource_exhausted") return fail(`expected RATE_LIMITED until ${until}, got ${describeOutcome(outcome)}`);
        const detail = outcome.detail as { type: string; until: number };
        return detail.type === "rate_limited" && detail.until === until ? undefined : fail(`rate-limit detail ${JSON.stringify(detail)}, model says until ${until}`);
      }
      const live = matchable(m, op.number, s.now);
      const byCode = op.code === undefined ? live : live.filter((r) => r.code === op.code);
      const byBoth = op.phone === undefined ? byCode : byCode.filter((r) => r.phone === op.phone);
      if (byBoth.length === 0) {
        const reason = live.length === 0 ? "no_reservation" : byCode.length === 0 ? "code_mismatch" : "phone_mismatch";
        if (outcome.ok || outcome.kind !== "not_found" || (outcome.detail as { reason?: string } | undefined)?.reason !== reason) {
          return fail(`expected NOT_FOUND (${reason}), got ${describeOutcome(outcome)}; live on ${op.number}: ${JSON.stringify(live)}`);
        }
        if (op.code !== undefined) (m.failures[op.number] ??= []).push(s.now);
        return undefined;
      }
      if (!outcome.ok) return fail(`expected a match among ${JSON.stringify(byBoth)}, got ${describeOutcome(outcome)}`);
      const got = outcome.value as MatchValue[];
      // Newest first: by creation time, then (for calls of one batch, whose order the store decides) any order.
      const tiers: MReservation[][] = [];
      for (const r of [...byBoth].sort((a, b) => b.createdAt - a.createdAt || b.tick - a.tick || b.seq - a.seq)) {
        const last = tiers[tiers.length - 1];
        if (last !== undefined && last[0]!.createdAt === r.createdAt && last[0]!.tick === r.tick) last.push(r);
        else tiers.push([r]);
      }
      const wanted = op.multiple ? tiers : [tiers[0]!];
      const expectedCount = wanted.reduce((k, t) => k + (op.multiple ? t.length : 1), 0);
      if (got.length !== expectedCount) return fail(`matched ${got.length} sessions, expected ${expectedCount} of ${JSON.stringify(byBoth)}: ${describeOutcome(outcome)}`);
      const chosen: MReservation[] = [];
      let k = 0;
      for (const tier of wanted) {
        const pool = [...tier];
        const take = op.multiple ? tier.length : 1;
        for (let i = 0; i < take; i++) {
          const g = got[k++]!;
          // A session holding two reservations of one tier: the later one comes first (its row id is larger).
          const idx = pool.reduce((best, r, j) => (r.sessionId === g.sessionId && (best < 0 || r.seq > pool[best]!.seq) ? j : best), -1);
          if (idx < 0) return fail(`matched session ${g.sessionId}, not among the newest candidates ${JSON.stringify(tier)}`);
          const [r] = pool.splice(idx, 1);
          chosen.push(r!);
          const session = m.sessions[g.sessionId]!;
          if (g.dataId !== session.dataId || g.phoneNumber !== session.phone) return fail(`match ${JSON.stringify(g)} does not describe session ${JSON.stringify(session)}`);
          // The data is read after the release: a call beside it may have cancelled the session.
          if (op.data && s.serial) {
            const marker = g.data?.get("marker");
            if (marker?.kind !== "text" || marker.text !== session.marker) return fail(`match returned the data ${JSON.stringify(g.data && [...g.data])}, the session's marker is ${session.marker}`);
          }
          if (!op.data && g.data !== undefined) return fail("data returned without return_data");
        }
      }
      release(m, s, chosen);
      return undefined;
    }
    case "cancel": {
      const session = m.sessions[op.sessionId];
      if (session === undefined || session.expiresAt <= s.now) return outcome.ok || outcome.kind !== "not_found" ? fail(`expected NOT_FOUND, got ${describeOutcome(outcome)}`) : undefined;
      if (!outcome.ok) return fail(`cancel of ${op.sessionId} failed: ${describeOutcome(outcome)}`);
      if (session.state === "active") {
        release(
          m,
          s,
          liveOf(m, s.now).filter((r) => r.sessionId === op.sessionId),
        );
        session.state = "ended";
      }
      return undefined;
    }
    case "extend": {
      const session = m.sessions[op.sessionId];
      if (session === undefined || session.expiresAt <= s.now) return outcome.ok || outcome.kind !== "not_found" ? fail(`expected NOT_FOUND, got ${describeOutcome(outcome)}`) : undefined;
      if (session.state !== "active") return outcome.ok || outcome.kind !== "failed_precondition" ? fail(`expected FAILED_PRECONDITION, got ${describeOutcome(outcome)}`) : undefined;
      if (!outcome.ok) return fail(`extend of ${op.sessionId} failed: ${describeOutcome(outcome)}`);
      session.expiresAt = s.now + op.ttl * 1000;
      // Each live reservation as far as its group allows, never past the session (README: ExtendSession).
      for (const r of liveOf(m, s.now).filter((x) => x.sessionId === op.sessionId)) {
        const until = Math.min(session.expiresAt, Math.max(r.expiresAt, s.now + groupConfig(r.group).max_booking_expiration_timeout * 1000));
        r.expiresAt = until;
        const n = m.numbers[r.number]!;
        if (n.locking) n.availableAt = until;
      }
      // The reply is read after the commit: exact when nothing ran beside it.
      if (s.serial) return checkView(m, s, session, outcome.value as SessionValue);
      return undefined;
    }
    case "sweep":
      return outcome.ok ? undefined : fail(`the sweeper failed: ${describeOutcome(outcome)}`);
    case "get": {
      const session = m.sessions[op.sessionId];
      if (session === undefined || session.expiresAt <= s.now) return outcome.ok || outcome.kind !== "not_found" ? fail(`expected NOT_FOUND, got ${describeOutcome(outcome)}`) : undefined;
      if (!outcome.ok) return fail(`get failed: ${describeOutcome(outcome)}`);
      return checkView(m, s, session, outcome.value as SessionValue);
    }
  }
}

/** checkView compares a session as the store shows it with the model's. */
function checkView(m: Model, s: Step, session: MSession, got: SessionValue): string | undefined {
  const mine = liveOf(m, s.now)
    .filter((r) => r.sessionId === session.id)
    .map((r) => `${r.number}/${r.code ?? ""}/${r.expiresAt}`)
    .sort();
  const theirs = got.access.map((a) => `${a.accessNumber}/${a.accessCode ?? ""}/${a.expiresAt}`).sort();
  if (got.state !== session.state || got.expiresAt !== session.expiresAt) return fail(`session ${JSON.stringify({ state: got.state, expiresAt: got.expiresAt })}, model ${JSON.stringify(session)}`);
  if (JSON.stringify(mine) !== JSON.stringify(theirs)) return fail(`session's reservations ${JSON.stringify(theirs)}, model ${JSON.stringify(mine)}`);
  return undefined;
}

/** permutations of a short list (a batch holds at most five calls: 120 orders). */
function permutations<T>(xs: readonly T[]): T[][] {
  if (xs.length <= 1) return [[...xs]];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

/** Explanation is an order of a batch's calls that explains their answers, and the model after it. */
interface Explanation {
  model: Model;
  order: string;
}

/**
 * linearize finds every order of a batch's calls that explains every answer (the model after each);
 * a reason when none does. Orders that differ in what the answers do not show (e.g. an extension
 * before or after a new reservation of the same session) are told apart by the store's state after.
 */
function linearize(m: Model, calls: readonly { op: Op; outcome: Outcome }[], s: Step): Explanation[] | string {
  const reasons: string[] = [];
  const found: Explanation[] = [];
  const listing = calls.map((c, i) => `  call ${i}: ${JSON.stringify(c.op)} -> ${describeOutcome(c.outcome)}`).join("\n");
  for (const order of permutations(calls.map((_, i) => i))) {
    const trial = clone(m);
    let why: string | undefined;
    for (const i of order) {
      why = apply(trial, calls[i]!.op, calls[i]!.outcome, s);
      if (why !== undefined) {
        why = `order ${order.join(",")}: call ${i} (${JSON.stringify(calls[i]!.op)}): ${why}`;
        break;
      }
    }
    if (why === undefined) found.push({ model: trial, order: `the order ${order.join(",")} of\n${listing}` });
    else reasons.push(why);
  }
  return found.length > 0 ? found : `no order of the batch explains its outcomes:\n${listing}\n${reasons.slice(0, 6).join("\n")}`;
}

// ---------------------------------------------------------------------------------------------
// Commands as fast-check generates them: indices, resolved against the model when they run.

type Spec =
  | { kind: "interaction"; group: Group; provideCode: boolean; phone: number; ttl: number; booking: number | undefined; scope: number; requestId: number | undefined }
  | { kind: "access"; pick: number; group: Group; provideCode: boolean; phone: number | undefined; booking: number | undefined; scope: number; requestId: number | undefined }
  | { kind: "match"; how: "number" | "phone" | "code" | "codePhone" | "wrongCode" | "stranger" | "lapsed"; pick: number; phone: number; multiple: boolean; data: boolean; wrong: string; formatted: boolean }
  | { kind: "cancel"; pick: number }
  | { kind: "extend"; pick: number; ttl: number }
  | { kind: "get"; pick: number }
  | { kind: "sweep" };

const groupArb = fc.constantFrom(...GROUPS);
const bookingArb = fc.option(fc.constantFrom(3, 12, 50), { nil: undefined });
const requestIdArb = fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined, freq: 2 });
const specArb: fc.Arbitrary<Spec> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("interaction" as const),
      group: groupArb,
      provideCode: fc.boolean(),
      phone: fc.nat(PHONES.length - 1),
      ttl: fc.constantFrom(8, 25, 70),
      booking: bookingArb,
      scope: fc.nat(1),
      requestId: requestIdArb,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("access" as const),
      pick: fc.nat(),
      group: groupArb,
      provideCode: fc.boolean(),
      phone: fc.option(fc.nat(PHONES.length - 1), { nil: undefined }),
      booking: bookingArb,
      scope: fc.nat(1),
      requestId: requestIdArb,
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("match" as const),
      how: fc.constantFrom("number" as const, "phone" as const, "code" as const, "codePhone" as const, "wrongCode" as const, "stranger" as const, "lapsed" as const),
      pick: fc.nat(),
      phone: fc.nat(PHONES.length - 1),
      multiple: fc.boolean(),
      data: fc.boolean(),
      wrong: fc.stringMatching(/^[0-9]{4,6}$/),
      formatted: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("extend" as const), pick: fc.nat(), ttl: fc.constantFrom(5, 30, 90) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("get" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "sweep" as const }) },
);

/** pickSession picks a session the model knows (lapsed and ended ones too), now and then an unknown one. */
const pickSession = (m: Model, pick: number): string => {
  const ids = Object.keys(m.sessions);
  return ids.length === 0 || pick % 11 === 10 ? UNKNOWN_SESSION : ids[pick % ids.length]!;
};

let markers = 0;

/** resolve turns a generated command into a call against the model's current state. */
function resolve(m: Model, spec: Spec, now: number): Op {
  switch (spec.kind) {
    case "interaction": {
      const scope = `RequestInteraction:caller-${spec.scope}`;
      const requestId = spec.requestId === undefined ? "" : `rid-${spec.requestId}`;
      const stored = m.requestIds[`${scope}/${requestId}`];
      // A request id in use is a retry: the same call again.
      if (requestId !== "" && stored !== undefined && stored.keepUntil > now && stored.op.kind === "interaction") return stored.op;
      return { kind: "interaction", group: spec.group, provideCode: spec.provideCode, phone: PHONES[spec.phone]!, ttl: spec.ttl, booking: spec.booking, scope, requestId, marker: `m${++markers}` };
    }
    case "access": {
      const scope = `RequestAccess:caller-${spec.scope}`;
      const requestId = spec.requestId === undefined ? "" : `rid-${spec.requestId}`;
      const stored = m.requestIds[`${scope}/${requestId}`];
      if (requestId !== "" && stored !== undefined && stored.keepUntil > now && stored.op.kind === "access") return stored.op;
      return {
        kind: "access",
        sessionId: pickSession(m, spec.pick),
        group: spec.group,
        provideCode: spec.provideCode,
        phone: spec.phone === undefined ? undefined : PHONES[spec.phone],
        booking: spec.booking,
        scope,
        requestId,
      };
    }
    case "match": {
      // Mostly a reservation still live (with a code, when the call gives one), now and then any the model knows.
      const wantsCode = spec.how === "code" || spec.how === "codePhone";
      // "lapsed": the reservation that lapsed last (not released), at the moment it lapses or after.
      const lapsed = m.reservations.filter((x) => !x.released && x.expiresAt <= now).sort((a, b) => b.expiresAt - a.expiresAt);
      const candidates =
        spec.how === "lapsed" ? lapsed.slice(0, 1) : spec.pick % 4 === 0 ? m.reservations : liveOf(m, now).filter((x) => !wantsCode || x.code !== undefined);
      const rs = candidates.length === 0 ? m.reservations : candidates;
      const r = rs.length === 0 ? undefined : rs[Math.floor(spec.pick / 4) % rs.length];
      const number = r?.number ?? ALL_NUMBERS[spec.pick % ALL_NUMBERS.length]!.number;
      const phoneOf = (p: string) => (spec.formatted ? dialled(p) : p);
      const base = { kind: "match" as const, number, multiple: spec.multiple, data: spec.data };
      switch (spec.how) {
        case "number":
          return { ...base, number: ALL_NUMBERS[spec.pick % ALL_NUMBERS.length]!.number, phone: undefined, code: undefined };
        case "phone":
          return { ...base, phone: phoneOf(r?.phone ?? PHONES[spec.phone]!), code: undefined };
        case "code":
          return { ...base, phone: undefined, code: r?.code ?? spec.wrong };
        case "codePhone":
          return { ...base, phone: phoneOf(PHONES[spec.phone]!), code: r?.code ?? spec.wrong };
        case "wrongCode":
          return { ...base, phone: undefined, code: spec.wrong };
        case "stranger":
          return { ...base, phone: "+15550009999", code: undefined };
        case "lapsed":
          return { ...base, phone: undefined, code: r?.code };
      }
      break;
    }
    case "cancel":
      return { kind: "cancel", sessionId: pickSession(m, spec.pick) };
    case "extend":
      return { kind: "extend", sessionId: pickSession(m, spec.pick), ttl: spec.ttl };
    case "get":
      return { kind: "get", sessionId: pickSession(m, spec.pick) };
    case "sweep":
      return { kind: "sweep" };
  }
}

/** normalise is the phone number as the store keeps it (matching compares it so). */
const normalise = (p: string | undefined) => (p === undefined ? undefined : p.replace(/[\s().-]/g, ""));

/** run makes the call on the real domain. */
async function run(app: App, op: Op): Promise<Outcome> {
  try {
    const value = await (async (): Promise<unknown> => {
      switch (op.kind) {
        case "interaction":
          return app.access.requestInteraction({
            service: "",
            phoneNumber: op.phone,
            resourceGroup: op.group,
            provideCode: op.provideCode,
            ttlSeconds: op.ttl,
            bookingSeconds: op.booking,
            appData: new Map([["marker", { kind: "text", text: op.marker }]]),
            request: { scope: op.scope, requestId: op.requestId, digest: "the same request" },
          });
        case "access":
          return app.access.requestAccess({
            service: "",
            sessionId: op.sessionId,
            resourceGroup: op.group,
            provideCode: op.provideCode,
            phoneNumber: op.phone,
            bookingSeconds: op.booking,
            request: { scope: op.scope, requestId: op.requestId, digest: "the same request" },
          });
        case "match":
          return app.access.matchInteraction({ service: "", accessNumber: op.number, phoneNumber: op.phone, accessCode: op.code, returnMultiple: op.multiple, returnData: op.data });
        case "cancel":
          return app.sessions.cancel(op.sessionId);
        case "extend":
          return app.sessions.extend(op.sessionId, op.ttl);
        case "get":
          return app.sessions.get(op.sessionId);
        case "sweep":
          return createAppSweeper(app, 50).sweep();
      }
    })();
    return { ok: true, value };
  } catch (e) {
    if (e instanceof GmsError) return { ok: false, kind: e.kind, detail: e.detail, message: e.message };
    const err = e as { code?: string; message?: string };
    return { ok: false, kind: "unexpected", detail: err.code, message: String(err.message) };
  }
}

/** modelOp is the call as the model compares it: phone numbers normalised as the store keeps them. */
const modelOp = (op: Op): Op => (op.kind === "match" ? { ...op, phone: normalise(op.phone) } : op);

/** World is one property run's real side: the app, its database, its clock. */
interface World {
  app: App;
  db: TestDatabase;
  clock: ManualClock;
  tick: number;
}

/** Snapshot is what the store holds that the model predicts: live reservations, live sessions, when numbers are free. */
interface Snapshot {
  reservations: string[];
  sessions: string[];
  numbers: string[];
}

interface ReservationSql {
  session_id: string;
  resource_group: string;
  access_number: string;
  access_code: string | null;
  locking: number | boolean;
  expires_at: number | string;
}

/** storeState reads the store's snapshot, and its live reservations for the invariants. */
async function storeState(w: World): Promise<{ snapshot: Snapshot; rows: ReservationSql[] }> {
  const now = w.clock.now();
  const knex = w.db.knex;
  const rows = (await knex("reservations")
    .whereNull("released_at")
    .andWhere("expires_at", ">", now)
    .select("session_id", "resource_group", "access_number", "access_code", "locking", "expires_at")) as ReservationSql[];
  const sessions = (await knex("sessions").where("expires_at", ">", now).select("id", "state", "expires_at")) as { id: string; state: string; expires_at: number | string }[];
  const numbers = (await knex("access_numbers").where("retired", false).select("number", "available_at", "last_used_at")) as {
    number: string;
    available_at: number | string;
    last_used_at: number | string;
  }[];
  return {
    rows,
    snapshot: {
      reservations: rows.map((r) => `${r.session_id} ${r.resource_group} ${r.access_number} ${r.access_code ?? "-"} ${Number(r.expires_at)}`).sort(),
      sessions: sessions.map((x) => `${x.id} ${x.state} ${Number(x.expires_at)}`).sort(),
      numbers: numbers.map((n) => `${n.number} ${LOCKING.has(n.number) ? `free at ${Number(n.available_at)}` : `used at ${Number(n.last_used_at)}`}`).sort(),
    },
  };
}

/** modelState is the model's snapshot at `now`. */
function modelState(m: Model, now: number): Snapshot {
  return {
    reservations: liveOf(m, now)
      .map((r) => `${r.sessionId} ${r.group} ${r.number} ${r.code ?? "-"} ${r.expiresAt}`)
      .sort(),
    sessions: Object.values(m.sessions)
      .filter((x) => x.expiresAt > now)
      .map((x) => `${x.id} ${x.state} ${x.expiresAt}`)
      .sort(),
    numbers: Object.entries(m.numbers)
      .map(([number, n]) => `${number} ${n.locking ? `free at ${n.availableAt}` : `used at ${n.lastUsedAt}`}`)
      .sort(),
  };
}

/** differences lists where two snapshots differ. */
function differences(store: Snapshot, model: Snapshot): string | undefined {
  const lines: string[] = [];
  for (const key of ["reservations", "sessions", "numbers"] as const) {
    const a = new Set(store[key]);
    const b = new Set(model[key]);
    for (const x of a) if (!b.has(x)) lines.push(`  ${key}: the store has ${x}`);
    for (const x of b) if (!a.has(x)) lines.push(`  ${key}: the model has ${x}`);
  }
  return lines.length === 0 ? undefined : lines.join("\n");
}

/**
 * checkStore picks the explanation of the last step the store agrees with (its live reservations,
 * live sessions and numbers), makes it the model, and checks the invariants on the store: no
 * locking number held twice, no code held twice on a number.
 */
async function checkStore(w: World, m: Model, explanations: readonly Explanation[]): Promise<void> {
  const now = w.clock.now();
  const { snapshot, rows } = await storeState(w);
  const agreeing = explanations.find((e) => differences(snapshot, modelState(e.model, now)) === undefined);
  if (agreeing === undefined) {
    const first = explanations[0]!;
    expect.fail(`the store is not what the model says after ${first.order}:\n${differences(snapshot, modelState(first.model, now))}`);
  }
  Object.assign(m, agreeing.model);
  const held = new Map<string, number>();
  const codes = new Map<string, number>();
  for (const r of rows) {
    if (r.locking) held.set(r.access_number, (held.get(r.access_number) ?? 0) + 1);
    if (r.access_code !== null) codes.set(`${r.access_number}/${r.access_code}`, (codes.get(`${r.access_number}/${r.access_code}`) ?? 0) + 1);
  }
  expect([...held].filter(([, k]) => k > 1), "locking numbers held twice").toEqual([]);
  expect([...codes].filter(([, k]) => k > 1), "codes held twice on a number").toEqual([]);
  // The model itself: a locking number with a live reservation is busy at least until it lapses.
  for (const r of liveOf(m, now)) {
    const n = m.numbers[r.number]!;
    if (n.locking) expect(n.availableAt, `${r.number} is busy while reserved`).toBeGreaterThanOrEqual(r.expiresAt);
  }
}

/** readNumbers is the model's starting view of the numbers: their free-at and used-at times as stored. */
async function readNumbers(w: World): Promise<Record<string, MNumber>> {
  const rows = (await w.db.knex("access_numbers").where("retired", false).select("resource_group", "number", "available_at", "last_used_at")) as {
    resource_group: Group;
    number: string;
    available_at: number | string;
    last_used_at: number | string;
  }[];
  return Object.fromEntries(
    rows.map((r) => [r.number, { group: r.resource_group, locking: groupConfig(r.resource_group).locking, availableAt: Number(r.available_at), lastUsedAt: Number(r.last_used_at) }]),
  );
}

/** Cmd is a fast-check command over the model and the world. */
type Cmd = fc.AsyncCommand<Model, World>;

/** One call, alone. */
class Call implements Cmd {
  constructor(readonly spec: Spec) {}
  check = () => true;
  async run(m: Model, w: World): Promise<void> {
    const op = resolve(m, this.spec, w.clock.now());
    const outcome = await run(w.app, op);
    count(op, outcome, true);
    const why = apply(m, modelOp(op), outcome, { now: w.clock.now(), tick: ++w.tick, serial: true });
    if (why !== undefined) expect.fail(`${JSON.stringify(op)}\n -> ${describeOutcome(outcome)}\n${why}`);
    await checkStore(w, m, [{ model: m, order: `${JSON.stringify(op)} -> ${describeOutcome(outcome)}` }]);
  }
  toString = () => `Call(${JSON.stringify(this.spec)})`;
}

/** Several calls at once (Promise.all): some order of them must explain every answer. */
class Batch implements Cmd {
  constructor(readonly specs: readonly Spec[]) {}
  check = () => true;
  async run(m: Model, w: World): Promise<void> {
    const now = w.clock.now();
    const ops: Op[] = [];
    const guarded = new Set<string>();
    const retries = new Map<string, Op>();
    for (const spec of this.specs) {
      // A read of a session is two reads, not one snapshot: it is checked alone, not in a batch.
      if (spec.kind === "get") continue;
      let op = resolve(m, spec, now);
      // Two calls of a batch with one request id are one call and its retry: the same call twice.
      if ((op.kind === "interaction" || op.kind === "access") && op.requestId !== "") {
        const key = `${op.scope}/${op.requestId}`;
        op = retries.get(key) ?? op;
        retries.set(key, op);
      }
      // The code-guessing guard counts failures after its transaction: two guesses at one number
      // in one batch may both see the count before either; the guard under concurrency has its own test.
      if (op.kind === "match" && op.code !== undefined) {
        if (guarded.has(op.number)) continue;
        guarded.add(op.number);
      }
      ops.push(op);
    }
    const outcomes = await Promise.all(ops.map((op) => run(w.app, op)));
    ops.forEach((op, i) => count(op, outcomes[i]!, false));
    const explanations = linearize(
      m,
      ops.map((op, i) => ({ op: modelOp(op), outcome: outcomes[i]! })),
      { now, tick: ++w.tick, serial: false },
    );
    if (typeof explanations === "string") expect.fail(explanations);
    await checkStore(w, m, explanations);
  }
  toString = () => `Batch(${JSON.stringify(this.specs)})`;
}

/** The clock moves on: by a fixed step, or to just before, at or just after the next expiry the model knows of. */
class Advance implements Cmd {
  constructor(readonly how: { kind: "by"; ms: number } | { kind: "next"; offset: -1 | 0 | 1 }) {}
  check = () => true;
  async run(m: Model, w: World): Promise<void> {
    const now = w.clock.now();
    let ms = 0;
    if (this.how.kind === "by") ms = this.how.ms;
    else {
      const moments = [
        ...m.reservations.filter((r) => !r.released).map((r) => r.expiresAt),
        ...Object.values(m.sessions).map((s) => s.expiresAt),
        ...Object.values(m.numbers).map((n) => n.availableAt),
      ].filter((t) => t > now);
      if (moments.length > 0) ms = Math.max(0, Math.min(...moments) - now + this.how.offset);
    }
    w.clock.advance(ms);
    await checkStore(w, m, [{ model: m, order: `the clock moved ${ms} ms` }]);
  }
  toString = () => `Advance(${JSON.stringify(this.how)})`;
}

/** Fill asks a group for numbers until it says it has none (each answer checked by the model). */
class Fill implements Cmd {
  constructor(
    readonly group: Group,
    readonly phone: number,
  ) {}
  check = () => true;
  async run(m: Model, w: World): Promise<void> {
    for (let i = 0; i <= groupConfig(this.group).numbers.length; i++) {
      const op: InteractionOp = { kind: "interaction", group: this.group, provideCode: false, phone: PHONES[this.phone]!, ttl: 60, booking: undefined, scope: "fill", requestId: "", marker: `m${++markers}` };
      const outcome = await run(w.app, op);
      count(op, outcome, true);
      const why = apply(m, op, outcome, { now: w.clock.now(), tick: ++w.tick, serial: true });
      if (why !== undefined) expect.fail(`${JSON.stringify(op)}\n -> ${describeOutcome(outcome)}\n${why}`);
      if (!outcome.ok) break;
    }
    await checkStore(w, m, [{ model: m, order: `Fill(${this.group})` }]);
  }
  toString = () => `Fill(${this.group})`;
}

const callArb = specArb.map((s) => new Call(s));
const commandsArb = fc.commands(
  [
    callArb,
    callArb,
    callArb,
    fc.array(specArb, { minLength: 2, maxLength: 5 }).map((specs) => new Batch(specs)),
    fc.oneof(
      fc.constantFrom(1, 1_000, 5_000, 10_000).map((ms) => new Advance({ kind: "by", ms })),
      fc.constantFrom(-1 as const, 0 as const, 1 as const).map((offset) => new Advance({ kind: "next", offset })),
    ),
    fc.record({ group: fc.constantFrom("lock" as const, "lockr" as const), phone: fc.nat(PHONES.length - 1) }).map((f) => new Fill(f.group, f.phone)),
  ],
  { maxCommands: 40, size: "large" },
);

describe.each(DIALECTS)("allocation and matching properties on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(async () => {
    await db.close();
    if (process.env["GMS_PROPERTY_STATS"]) process.stderr.write(`${dialect}:\n${[...STATS].sort().map(([k, n]) => `  ${k}: ${n}`).join("\n")}\n`);
    STATS.clear();
  });

  it("any interleaving of request, match, cancel, extend and expiry keeps the invariants", async () => {
    await fc.assert(
      fc.asyncProperty(commandsArb, async (cmds) => {
        // A day later everything of the previous run has lapsed: the pool is free, the guard forgets.
        clock.advance(24 * 3600 * 1000);
        const world: World = { app, db, clock, tick: 0 };
        const model = emptyModel(await readNumbers(world));
        await fc.asyncModelRun(() => ({ model, real: world }), cmds);
      }),
      { seed: SEED, numRuns: RUNS, ...REPLAY },
    );
  }, 240_000);
});

/**
 * queued is how many statements on the test's database have been running a second or more: while
 * a transaction of the test holds a row, those are the calls queued for it. (PROCESSLIST, not
 * INNODB_TRX: a locking read of one row by its key waits in the optimizer's "Statistics" step,
 * where a busy MariaDB may not list it as a lock wait.)
 */
async function queued(db: TestDatabase): Promise<number> {
  const [rows] = (await db.knex.raw(
    "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND COMMAND IN ('Query', 'Execute') AND TIME >= 1 AND ID <> CONNECTION_ID()",
  )) as [{ n: number | string }[]];
  return Number(rows[0]?.n);
}

/** untilQueued waits (a minute at most) until `n` calls are queued (queued). */
async function untilQueued(db: TestDatabase, n: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await queued(db)) < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(await queued(db)).toBeGreaterThanOrEqual(n);
}

/**
 * Regression (found by the property above on MariaDB): a match locks a number's reservations, then
 * their sessions; ExtendSession and CancelSession lock the session, then write its reservations.
 * Run together they deadlocked and one of them failed with ER_LOCK_DEADLOCK. Made deterministic
 * here: a transaction of the test holds the session's row while the extend (or cancel), then the
 * match, queue behind it; releasing it lets the extend take the session and reach for the
 * reservation the waiting match holds.
 */
describe.runIf(DIALECTS.includes("mysql"))("ExtendSession and CancelSession racing a match on mysql", () => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;

  beforeAll(async () => {
    db = await createTestDatabase("mysql");
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(() => db.close());

  const untilWaiting = (n: number) => untilQueued(db, n);

  for (const kind of ["extend", "cancel"] as const) {
    it(`${kind} and a match queued on one session both finish`, async () => {
      clock.advance(24 * 3600 * 1000);
      const r = await app.access.requestInteraction({
        service: "",
        phoneNumber: PHONES[0]!,
        resourceGroup: "lock",
        ttlSeconds: 70,
        bookingSeconds: 12,
        appData: new Map(),
        request: { scope: "t", requestId: "", digest: "" },
      });
      const trx = await db.knex.transaction();
      try {
        await trx("sessions").where("id", r.session.id).forUpdate().first();
        const first = kind === "extend" ? app.sessions.extend(r.session.id, 90).then(() => "done") : app.sessions.cancel(r.session.id).then(() => "done");
        const settledFirst = first.then(
          (v) => v,
          (e: unknown) => `failed: ${(e as Error).message}`,
        );
        await untilWaiting(1);
        // A wrong code: the match locks the reservation and its session, and releases nothing.
        const second = app.access
          .matchInteraction({ service: "", accessNumber: r.access.accessNumber, accessCode: "000000", returnMultiple: false, returnData: false })
          .then(
            () => "matched",
            (e: unknown) => (e instanceof GmsError ? e.kind : `failed: ${(e as Error).message}`),
          );
        await untilWaiting(2);
        await trx.commit();
        expect(await settledFirst).toBe("done");
        // After the extend the session holds the number (a code mismatch); after the cancel, nothing does.
        expect(await second).toBe("not_found");
      } finally {
        if (!trx.isCompleted()) await trx.rollback();
      }
      const live = await app.sessions.get(r.session.id);
      expect(live.access.length).toBe(kind === "extend" ? 1 : 0);
    }, 150_000);
  }
});

/**
 * Regression (found by the property tests on MariaDB): a match reads the number's failed guesses
 * before its candidates' row locks are granted. A match without a code that queued behind a wrong
 * guess still matched after that guess had locked the number. Here a transaction of the test holds
 * the reservation's row while the match queues, then commits the failure that locks the number.
 */
describe.runIf(DIALECTS.includes("mysql"))("a match queued behind the guess that locks the number on mysql", () => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;

  beforeAll(async () => {
    db = await createTestDatabase("mysql");
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(() => db.close());

  it("is refused once the guesses before it reached the limit", async () => {
    const r = await app.access.requestInteraction({
      service: "",
      phoneNumber: PHONES[0]!,
      resourceGroup: "lock",
      ttlSeconds: 70,
      appData: new Map(),
      request: { scope: "t", requestId: "", digest: "" },
    });
    const number = r.access.accessNumber;
    const match = (accessCode?: string) =>
      app.access.matchInteraction({ service: "", accessNumber: number, accessCode, returnMultiple: false, returnData: false }).then(
        () => "matched",
        (e: unknown) => (e instanceof GmsError ? e.kind : `failed: ${(e as Error).message}`),
      );
    for (let i = 0; i < GUARD.max_failures - 1; i++) expect(await match("999999")).toBe("not_found");
    const trx = await db.knex.transaction();
    try {
      await trx("reservations").where("access_number", number).whereNull("released_at").forUpdate().select("id");
      const queued = match();
      await untilQueued(db, 1);
      // The last failure the guard allows, committed while the match waits.
      await trx("code_failures").insert({ access_number: number, failed_at: clock.now() });
      await trx.commit();
      expect(await queued).toBe("resource_exhausted");
    } finally {
      if (!trx.isCompleted()) await trx.rollback();
    }
  }, 120_000);
});

/**
 * The code-guessing guard under concurrency: however many wrong codes arrive at once, no more than
 * `max_failures` of them in a window are weighed against the number's codes (answered NOT_FOUND);
 * the rest are refused (RESOURCE_EXHAUSTED, rate limited), and so is the right code after them.
 */
describe.each(DIALECTS)("the code-guessing guard under concurrent guesses on %s", (dialect) => {
  let db: TestDatabase;
  let clock: ManualClock;
  let app: App;

  beforeAll(async () => {
    db = await createTestDatabase(dialect);
    clock = new ManualClock();
    app = createApp({ config, db, clock, log: pino({ level: "silent" }) });
    await app.access.syncNumbers();
  });
  afterAll(() => db.close());

  it("at most max_failures guesses per window are weighed, however many come at once", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 12 }), fc.nat(GUARD.max_failures - 1), async (guesses, before) => {
        clock.advance(24 * 3600 * 1000);
        const r = await app.access.requestInteraction({
          service: "",
          phoneNumber: PHONES[0]!,
          resourceGroup: "lockr",
          provideCode: true,
          ttlSeconds: 70,
          appData: new Map(),
          request: { scope: "t", requestId: "", digest: "" },
        });
        const number = r.access.accessNumber;
        const code = r.access.accessCode!;
        const wrong = (i: number) => String((Number(code) + 1 + i) % 100_000).padStart(5, "0");
        const guess = (c: string) =>
          app.access.matchInteraction({ service: "", accessNumber: number, accessCode: c, returnMultiple: false, returnData: false }).then(
            () => "matched",
            (e: unknown) => (e instanceof GmsError ? e.kind : `failed: ${(e as Error).message}`),
          );
        // Some wrong guesses one at a time first, then a burst.
        for (let i = 0; i < before; i++) expect(await guess(wrong(i))).toBe("not_found");
        const answers = await Promise.all(Array.from({ length: guesses }, (_, i) => guess(wrong(before + i))));
        const weighed = answers.filter((a) => a === "not_found").length;
        expect(answers.filter((a) => a !== "not_found" && a !== "resource_exhausted")).toEqual([]);
        expect(weighed).toBeLessThanOrEqual(Math.max(0, GUARD.max_failures - before));
        // Once the weighed guesses reach the limit the number is locked for the rest of the window,
        // even for the right code; a guess refused unweighed is no failure (as one refused alone).
        expect(await guess(code)).toBe(before + weighed >= GUARD.max_failures ? "resource_exhausted" : "matched");
      }),
      { seed: SEED, numRuns: 15, ...REPLAY },
    );
  }, 120_000);
});

/** RACE_GROUPS are the locking pools of the gRPC race: a few sizes, round-robin and random. */
const RACE_GROUPS = {
  duo: { numbers: ["+18005550500", "+18005550501"], allocation: "round-robin", locking: true, booking_expiration_timeout: 120 },
  quad: { numbers: ["+18005550510..+18005550513"], allocation: "random", locking: true, booking_expiration_timeout: 120 },
  seven: { numbers: ["+18005550520..+18005550526"], allocation: "round-robin", locking: true, booking_expiration_timeout: 120 },
} as const;

/**
 * The real server over real sockets, on MariaDB: N RequestInteraction racing for M numbers, with
 * MatchInteraction (DNIS only) racing them, come out exactly right: no number held twice, every
 * match names the session that got its number, a loser only when every number was held, the
 * store holds exactly the winners not matched, and afterwards every number is handed out again.
 */
describe.runIf(DIALECTS.includes("mysql"))("racing allocations and matches over gRPC on mysql", () => {
  let t: TestServer;
  let clock: ManualClock;
  let access: Client<typeof AccessService>;

  beforeAll(async () => {
    clock = new ManualClock(Date.now());
    t = await startTestServer("mysql", { clock, config: { resources: RACE_GROUPS } });
    access = createClient(AccessService, t.grpc);
  });
  afterAll(() => t.close());

  type Settled<T> = { ok: true; value: T } | { ok: false; code: Code; message: string };
  const settle = <T>(p: Promise<T>): Promise<Settled<T>> =>
    p.then(
      (value) => ({ ok: true as const, value }),
      (e: unknown) => {
        const err = ConnectError.from(e);
        return { ok: false as const, code: err.code, message: err.rawMessage };
      },
    );

  it("N racing RequestInteraction on M numbers, with matches racing them, come out exactly right", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...(Object.keys(RACE_GROUPS) as (keyof typeof RACE_GROUPS)[])),
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        async (group, n, matchPicks) => {
          clock.advance(24 * 3600 * 1000);
          const numbers = expandNumbers([...RACE_GROUPS[group].numbers]);
          const m = numbers.length;
          const ask = (i: number) => settle(access.requestInteraction({ phoneNumber: `+1650555${String(i).padStart(4, "0")}`, resourceGroup: group, ttlSeconds: 600n, appData: {} }));
          const match = (number: string) => settle(access.matchInteraction({ accessNumber: number }));
          const [requests, matches] = await Promise.all([
            Promise.all(Array.from({ length: n }, (_, i) => ask(i))),
            Promise.all(matchPicks.map((p) => match(numbers[p % m]!))),
          ]);
          const matchedNumbers = matchPicks.map((p) => numbers[p % m]!);
          // Losers are told the pool is exhausted; a match finds a session or nothing.
          expect(requests.flatMap((r) => (r.ok || r.code === Code.ResourceExhausted ? [] : [r]))).toEqual([]);
          expect(matches.flatMap((r) => (r.ok || r.code === Code.NotFound ? [] : [r]))).toEqual([]);
          const won = requests.flatMap((r) => (r.ok ? [{ session: r.value.session!.id, number: r.value.access!.accessNumber }] : []));
          const lost = requests.length - won.length;
          const numberOf = new Map(won.map((w) => [w.session, w.number]));
          expect(numberOf.size).toBe(won.length);
          for (const w of won) expect(numbers).toContain(w.number);
          // Each match released the session that got the number it was called on, once.
          const released = new Set<string>();
          matches.forEach((r, k) => {
            if (!r.ok) return;
            expect(r.value.matches).toHaveLength(1);
            const session = r.value.matches[0]!.sessionId;
            expect(numberOf.get(session), "a match names a session that got the number").toBe(matchedNumbers[k]);
            expect(released.has(session), "a session is matched once").toBe(false);
            released.add(session);
          });
          // A number is handed out again only after its holder was matched.
          for (const number of numbers) {
            const holders = won.filter((w) => w.number === number);
            expect(holders.filter((w) => !released.has(w.session)).length, `${number} held twice`).toBeLessThanOrEqual(1);
          }
          // A loser only when every number was held: the winners then held all of them.
          if (lost > 0) expect(won.length).toBeGreaterThanOrEqual(m);
          expect(won.length).toBeLessThanOrEqual(m + released.size);
          // The store holds exactly the winners not matched.
          const knex = t.server.app.db.knex;
          const live = (await knex("reservations").whereNull("released_at").andWhere("expires_at", ">", clock.now()).andWhere("resource_group", group).select("session_id", "access_number")) as {
            session_id: string;
            access_number: string;
          }[];
          expect(new Map(live.map((r) => [r.session_id, r.access_number]))).toEqual(new Map(won.filter((w) => !released.has(w.session)).map((w) => [w.session, w.number])));
          // Every live reservation matches its session by the number alone; then the whole pool is handed out again.
          for (const r of live) {
            const got = await access.matchInteraction({ accessNumber: r.access_number });
            expect(got.matches.map((x) => x.sessionId)).toEqual([r.session_id]);
          }
          const again = await Promise.all(Array.from({ length: m }, (_, i) => ask(1000 + i)));
          expect(again.every((r) => r.ok)).toBe(true);
          expect(new Set(again.map((r) => (r.ok ? r.value.access!.accessNumber : "")))).toEqual(new Set(numbers));
        },
      ),
      { seed: SEED, numRuns: 12, ...REPLAY },
    );
  }, 180_000);
});
