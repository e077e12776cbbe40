// What the access rules need of a database (the contract); the SQL store keeps it (access-store.ts
// under src/store). The store claims numbers (which one a group hands out, under which lock, in how many round
// trips) and carries out what the rules decide; the rules themselves (which code, which booking,
// which reservation a call matches, the code-guessing guard) stay in the domain, handed to the
// store as functions it runs between its statements.
import type { RequestId } from "./idempotency-store.js";
import type { Session } from "./session-store.js";
import type { DataRecord } from "./storage-store.js";
import type { UnitOfWork } from "./unit-of-work.js";

/** Allocation is how a group picks among its free numbers. */
export type Allocation = "random" | "round-robin";

/** ResourceGroup is a configured group of access numbers, as a claim needs it. */
export interface ResourceGroup {
  name: string;
  /** locking: a number serves one session at a time; else numbers are shared, sessions told apart by caller number or code. */
  locking: boolean;
  allocation: Allocation;
  /** size is how many numbers the configuration gives the group. */
  size: number;
}

/** Reservation is one number held for one session, until it expires or is released. */
export interface Reservation {
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

/**
 * CodeChooser draws a reservation's access code that none of `taken` holds: the codes of the live
 * reservations on the number it is for (`accessNumber`, once claimed; before, undefined and
 * nothing taken). It throws when it finds none.
 */
export type CodeChooser = (taken: ReadonlySet<string>, accessNumber: string | undefined) => string;

/** KeptReply makes an allocation once per request id: a retry gets the first call's reply back, and nothing is claimed. */
export interface KeptReply {
  id: RequestId;
  /** reply is the reply to keep for a claim that got `accessNumber` and `accessCode`, and until when to keep it. */
  reply(accessNumber: string, accessCode: string | undefined): { reply: string; keepUntil: number };
}

/** Claimed is what an allocation got: a number (and code), or the first call's kept reply (a retry). */
export type Claimed = { accessNumber: string; accessCode: string | undefined; prior?: undefined } | { prior: string; accessNumber?: undefined; accessCode?: undefined };

/** NewSessionClaim is RequestInteraction's allocation: a number for a new session, stored with the session and its data. */
export interface NewSessionClaim {
  group: ResourceGroup;
  now: number;
  /** session is the new session: active, created now; the reservation is on its phone number. */
  session: Session;
  /** record is the session's new data record: version 1, created now, expiring with the session. */
  record: DataRecord;
  /** bookedUntil is when the reservation lapses. */
  bookedUntil: number;
  /** chooseCode draws the reservation's access code; without it, the reservation has none. */
  chooseCode?: CodeChooser | undefined;
  once?: KeptReply | undefined;
}

/** Booking is what a reservation for an existing session is: on which phone number, until when. */
export interface Booking {
  phoneNumber: string;
  expiresAt: number;
}

/** SessionClaim is RequestAccess's allocation: one more number for an existing session. */
export interface SessionClaim {
  sessionId: string;
  group: ResourceGroup;
  now: number;
  /** book is the booking for the session as locked (undefined: none live), or throws to refuse; it may run more than once. */
  book(session: Session | undefined): Booking;
  chooseCode?: CodeChooser | undefined;
  once?: KeptReply | undefined;
}

/** CodeFailures are a number's recent failed code matches: how many, and when the oldest was. */
export interface CodeFailures {
  count: number;
  oldest: number | undefined;
}

/** LiveReservation is a live reservation with its active session. */
export interface LiveReservation {
  reservation: Reservation;
  session: Session;
}

/** LockedNumber is what a match sees of its number, held: its live reservations, newest first, and its failed codes. */
export interface LockedNumber {
  live: LiveReservation[];
  failures: CodeFailures;
}

/** Release frees a reservation: its number, when locking, is free again at freeAt. */
export interface Release {
  reservation: Reservation;
  freeAt: number;
}

/** MatchDecision is what a match does: release reservations, or refuse (counting a failed code, or not). */
export type MatchDecision = { release: readonly Release[]; countFailure?: undefined } | { release?: undefined; countFailure: boolean };

/**
 * KeptMatch makes a match once per request id (an IVR's call id): the reply to keep for what the
 * match decided, and until when, kept in the match's own transaction.
 */
export interface KeptMatch<D> {
  id: RequestId;
  reply(decided: D): { reply: string; keepUntil: number };
}

/** MatchedOnce is what a kept match got: its decision, or (a retry) the first call's kept reply. */
export type MatchedOnce<D> = { decided: D; prior?: undefined } | { prior: string; decided?: undefined };

/** Extension gives a live reservation a new expiry (its locking number stays busy until then). */
export interface Extension {
  reservation: Reservation;
  until: number;
}

/**
 * GroupOccupancy is what a resource group's numbers are doing at a moment, each number counted in
 * one state: retired (no longer configured), else reserved (holding a live reservation), else
 * cooling down (a locking number released, its cool-down not over), else free.
 */
export interface GroupOccupancy {
  group: string;
  reserved: number;
  coolingDown: number;
  free: number;
  retired: number;
  /** reservations are the group's live reservations: one per reserved number when locking, any number per number when shared. */
  reservations: number;
}

/** AccessStore keeps access numbers and their reservations. A reservation is live until it is released or expires. */
export interface AccessStore {
  /**
   * syncNumbers makes the stored numbers those configured per group: missing ones added, ones no
   * longer configured retired (never handed out again), ones configured again un-retired.
   * Idempotent; several nodes may run it at once.
   */
  syncNumbers(groups: ReadonlyMap<string, readonly string[]>): Promise<{ added: number; retired: number }>;
  /**
   * openSession claims a free number of the group (a locking group's only while free, i.e. its
   * last reservation lapsed or its release's cool-down ended; a shared one whatever its load, its
   * code unique among its live reservations) and, only when it got one, stores the session, its
   * record and the reservation and commits, in a transaction of its own. With `once`, a retry gets
   * the first call's reply and nothing is claimed. Undefined: no free number, nothing stored (not
   * the request id either).
   */
  openSession(claim: NewSessionClaim): Promise<Claimed | undefined>;
  /**
   * addReservation is openSession for an existing session: the session locked and booked (book),
   * then the claim and the reservation, in a transaction of its own. With `once`, a retry gets the
   * first call's reply before the session is looked at. Undefined: no free number, nothing stored.
   */
  addReservation(claim: SessionClaim): Promise<Claimed | undefined>;
  /** nextFreeAt is the earliest moment after `now` a busy number of a locking group frees up; undefined when none is busy. */
  nextFreeAt(group: string, now: number): Promise<number | undefined>;
  /** hasNumbers tells whether a group has any number that may be handed out. */
  hasNumbers(group: string): Promise<boolean>;
  /** liveReservations are a session's live reservations at `now`, oldest first; in the unit of work when given. */
  liveReservations(sessionId: string, now: number, uow?: UnitOfWork): Promise<Reservation[]>;
  /** groupReservations are a group's live reservations at `now`, by number, then oldest first (what an operator lists). */
  groupReservations(group: string, now: number): Promise<Reservation[]>;
  /** numberReservations are a number's live reservations at `now`, oldest first, in any group; in the unit of work when given. */
  numberReservations(accessNumber: string, now: number, uow?: UnitOfWork): Promise<Reservation[]>;
  /** release releases reservations at `now`, each locking number free at its freeAt. */
  release(uow: UnitOfWork, releases: readonly Release[], now: number): Promise<void>;
  /** extend gives live reservations new expiries; a locking number stays busy until its reservation's. */
  extend(uow: UnitOfWork, extensions: readonly Extension[]): Promise<void>;
  /**
   * match holds a number's live reservations of active sessions with their sessions, counts its
   * failed codes after `since` once they are held (so guesses at one number are counted one after
   * another), lets `decide` choose, carries the decision out (releases at `now`, or a failed code
   * counted at `now`) and commits, in a transaction of its own, and gives the decision back. decide
   * may run more than once (a conflict with a concurrent cancel runs the match again): it must do
   * nothing else. A throw from decide rolls the match back.
   */
  match<D extends MatchDecision>(accessNumber: string, now: number, since: number, decide: (locked: LockedNumber) => D): Promise<D>;
  /**
   * matchOnce is match under a request id: it claims the id first (a retry racing the first call
   * waits for it), then, for a new id, matches as match does and keeps `once.reply` of the decision
   * in the same transaction; a retry gets the first call's kept reply and decides nothing, holds
   * nothing, releases and counts nothing.
   */
  matchOnce<D extends MatchDecision>(accessNumber: string, now: number, since: number, decide: (locked: LockedNumber) => D, once: KeptMatch<D>): Promise<MatchedOnce<D>>;
  /** occupancy is every stored group's numbers by state at `now`, and its live reservations (what an operator watches). */
  occupancy(now: number): Promise<GroupOccupancy[]>;
  /** sweep deletes up to `batch` reservations that ended, and failed codes counted, by `before`; says how many. */
  sweep(before: number, batch: number): Promise<number>;
}
