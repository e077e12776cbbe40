// What the session rules need of a database (the contract); the SQL store keeps it (session-store.ts
// under src/store). A session is the GMS service instance: RequestInteraction and RequestChat create one, the
// access numbers it holds and its data record hang off it.
import type { UnitOfWork } from "./unit-of-work.js";

/** SessionState is a session's state: active until cancelled (ended) or expired. */
export type SessionState = "active" | "ended";

/** Session is a service instance: whose (the caller's phone number), of which service, with which data record, until when. */
export interface Session {
  id: string;
  /** service is the service's name as called, e.g. "iPhoneService". */
  service: string;
  /** builtin is the GMS builtin the service is an instance of, e.g. "request-interaction". */
  builtin: string;
  state: SessionState;
  /** phoneNumber is the customer's number, normalised; empty for a chat's session. */
  phoneNumber: string;
  /** dataId is the session's data record (GMS `_data_id`). */
  dataId: string;
  createdAt: number;
  expiresAt: number;
}

/** SessionChange is what an update of a session sets: its state, its expiry, or both. */
export interface SessionChange {
  state?: SessionState;
  expiresAt?: number;
}

/** SessionFilter keeps the sessions of one service (its name as called) and/or in one state; unset keeps all. */
export interface SessionFilter {
  service?: string | undefined;
  state?: SessionState | undefined;
}

/** SessionCursor is where a listing resumes: just after the session created at `createdAt` with `id`, in listing order. */
export interface SessionCursor {
  createdAt: number;
  id: string;
}

/** SessionStore keeps sessions. Reads and locks see only sessions still live (unexpired) at `now`. */
export interface SessionStore {
  /** read is a session live at `now`, outside any unit of work; undefined when there is none. */
  read(sessionId: string, now: number): Promise<Session | undefined>;
  /** lock is read inside a unit of work, with the session held against concurrent changes until it ends. */
  lock(uow: UnitOfWork, sessionId: string, now: number): Promise<Session | undefined>;
  /** insert stores a new session. */
  insert(uow: UnitOfWork, session: Session): Promise<void>;
  /** update sets a session's state and/or expiry. */
  update(uow: UnitOfWork, sessionId: string, change: SessionChange): Promise<void>;
  /**
   * list is up to `limit` sessions live at `now` that the filter keeps, newest first (by createdAt,
   * then id, both descending), starting just after `after` when given: a session stored since the
   * cursor was taken is newer than it and never shifts what follows.
   */
  list(filter: SessionFilter, now: number, limit: number, after?: SessionCursor): Promise<Session[]>;
  /** sweep deletes up to `batch` sessions expired by `now`, and says how many. */
  sweep(now: number, batch: number): Promise<number>;
}
