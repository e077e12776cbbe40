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
  /** sweep deletes up to `batch` sessions expired by `now`, and says how many. */
  sweep(now: number, batch: number): Promise<number>;
}
