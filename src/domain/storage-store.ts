// What the Storage rules need of a database (the contract); the SQL store keeps it (storage-store.ts
// under src/store). A data record is GMS Storage's unit: entries (texts and files) by key, a version counted up
// by every change, and an expiry after which it is gone for every read.
import type { UnitOfWork } from "./unit-of-work.js";
import type { DataEntries, DataValue } from "./value.js";

/** RecordHead is a data record without its entries: its id, version and lifetime. */
export interface RecordHead {
  id: string;
  version: number;
  createdAt: number;
  expiresAt: number;
}

/** DataRecord is a record with its entries. */
export interface DataRecord extends RecordHead {
  entries: DataEntries;
}

/** LockedRecord is a record held for a change: its head and the size of each entry (not the values). */
export interface LockedRecord extends RecordHead {
  sizes: Map<string, number>;
}

/** RecordChange is one change of a record: keys removed, entries set (replacing the same keys), its new version and expiry. */
export interface RecordChange {
  remove: readonly string[];
  set: DataEntries;
  version: number;
  expiresAt: number;
}

/** StorageStore keeps data records. Reads and locks see only records still live (unexpired) at `now`. */
export interface StorageStore {
  /** insert stores a new record with its entries. */
  insert(uow: UnitOfWork, record: DataRecord): Promise<void>;
  /** read is a record live at `now` with every entry, read consistently; undefined when there is none. */
  read(dataId: string, now: number): Promise<DataRecord | undefined>;
  /** readEntry is one entry of a record live at `now` (value undefined: no such key); undefined when there is no such record. */
  readEntry(dataId: string, key: string, now: number): Promise<{ value: DataValue | undefined } | undefined>;
  /** lock holds a record live at `now` against concurrent changes until the unit of work ends. */
  lock(uow: UnitOfWork, dataId: string, now: number): Promise<LockedRecord | undefined>;
  /** change applies a change to a record the unit of work holds (lock). */
  change(uow: UnitOfWork, dataId: string, change: RecordChange): Promise<void>;
  /** delete deletes a record, live or not, with its entries and custom id; false when there was none live at `now`. */
  delete(uow: UnitOfWork, dataId: string, now: number): Promise<boolean>;
  /** sweep deletes up to `batch` records expired by `now` with their entries and custom ids, and says how many. */
  sweep(now: number, batch: number): Promise<number>;
  /**
   * bindCustom makes a user's custom id name a record, in the unit of work that stores it, and
   * returns the record it named before (live or not), for the caller to delete; undefined when none.
   */
  bindCustom(uow: UnitOfWork, user: string, customId: string, dataId: string): Promise<string | undefined>;
  /** findCustom is the id of the record live at `now` that a user's custom id names; undefined when there is none. */
  findCustom(user: string, customId: string, now: number): Promise<string | undefined>;
}
