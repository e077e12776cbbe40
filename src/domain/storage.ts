import type { Clock } from "../clock.js";
import { GmsError, invalid, notFound } from "./errors.js";
import { runOnce, type Once, type RequestKey } from "./idempotency.js";
import type { IdempotencyStore } from "./idempotency-store.js";
import type { DataRecord, StorageStore } from "./storage-store.js";
import type { Transactions, UnitOfWork } from "./unit-of-work.js";
import { byteLength, valueSize, type DataEntries, type DataValue } from "./value.js";
import { newId } from "./ids.js";

/** StorageLimits are the `storage` section of the configuration, in the domain's words. */
export interface StorageLimits {
  defaultTtlSeconds: number;
  maxEntries: number;
  maxKeyBytes: number;
  maxValueBytes: number;
  maxDataBytes: number;
}

/** StoredData identifies a record and tells its version and expiry. */
export interface StoredData {
  dataId: string;
  expiresAt: number;
  version: number;
}

/** CreateDataInput is what CreateData stores. */
export interface CreateDataInput {
  ttlSeconds: number | undefined;
  entries: DataEntries;
  request: RequestKey;
  /**
   * custom also names the record by a user's id of their choosing (GMS's custom storage ids); a
   * record the same user's custom id named before is deleted in the same unit of work.
   */
  custom?: { id: string; user: string } | undefined;
}

/** UpdateDataInput is one atomic change of a record. */
export interface UpdateDataInput {
  dataId: string;
  entries: DataEntries;
  removeKeys: readonly string[];
  ttlSeconds?: number | undefined;
  expectedVersion?: number | undefined;
}

/**
 * checkEntries applies the per-key and per-value limits to entries about to be written; the
 * record-wide limits are checked by checkRecord once the record's final shape is known.
 */
export function checkEntries(entries: DataEntries, limits: StorageLimits): void {
  for (const [key, value] of entries) {
    const keyBytes = byteLength(key);
    if (keyBytes > limits.maxKeyBytes) {
      throw new GmsError("invalid_argument", `key "${key.slice(0, 64)}" is ${keyBytes} bytes; storage.max_key_bytes is ${limits.maxKeyBytes}`, {
        type: "limit",
        limit: "storage.max_key_bytes",
        max: limits.maxKeyBytes,
        actual: keyBytes,
      });
    }
    const size = valueSize(value);
    if (size > limits.maxValueBytes) {
      throw new GmsError("invalid_argument", `value of "${key.slice(0, 64)}" is ${size} bytes; storage.max_value_bytes is ${limits.maxValueBytes}`, {
        type: "limit",
        limit: "storage.max_value_bytes",
        max: limits.maxValueBytes,
        actual: size,
      });
    }
  }
}

/** checkRecord applies the record-wide limits (entry count, total bytes) to a record's final sizes. */
export function checkRecord(sizes: ReadonlyMap<string, number>, limits: StorageLimits): void {
  if (sizes.size > limits.maxEntries) {
    throw new GmsError("resource_exhausted", `the data would hold ${sizes.size} entries; storage.max_entries is ${limits.maxEntries}`, {
      type: "limit",
      limit: "storage.max_entries",
      max: limits.maxEntries,
      actual: sizes.size,
    });
  }
  let total = 0;
  for (const size of sizes.values()) total += size;
  if (total > limits.maxDataBytes) {
    throw new GmsError("resource_exhausted", `the data would hold ${total} bytes; storage.max_data_bytes is ${limits.maxDataBytes}`, {
      type: "limit",
      limit: "storage.max_data_bytes",
      max: limits.maxDataBytes,
      actual: total,
    });
  }
}

function sizesOf(entries: DataEntries): Map<string, number> {
  return new Map([...entries].map(([k, v]) => [k, valueSize(v)]));
}

/** Storage is the GMS Storage API's rules over the store. */
export interface Storage {
  create(input: CreateDataInput): Promise<StoredData>;
  /**
   * createIn stores a record inside the caller's unit of work (chats keep their data and files
   * this way); `own` replaces the configured limits for records with limits of their own (chat
   * files).
   */
  createIn(uow: UnitOfWork, entries: DataEntries, expiresAt: number, own?: StorageLimits): Promise<StoredData>;
  /**
   * newRecord checks entries against the limits and gives the record createIn would store (version
   * 1, created now), for a store that writes it with other rows its own way (a new session's).
   */
  newRecord(entries: DataEntries, expiresAt: number): DataRecord;
  get(dataId: string): Promise<DataRecord>;
  getEntry(dataId: string, key: string): Promise<DataValue>;
  update(input: UpdateDataInput): Promise<StoredData>;
  /** updateIn applies an update inside the caller's unit of work. */
  updateIn(uow: UnitOfWork, input: UpdateDataInput): Promise<StoredData>;
  delete(dataId: string): Promise<void>;
  /** findCustom is the id of the live record a user's custom id names; NOT_FOUND when there is none. */
  findCustom(user: string, customId: string): Promise<string>;
  /** deleteIn deletes a record, live or not, inside the caller's unit of work (a cancelled session's). */
  deleteIn(uow: UnitOfWork, dataId: string): Promise<void>;
  /** sweep deletes expired records in bounded batches until none is left or `maxBatches` ran. */
  sweep(batchSize: number, maxBatches?: number): Promise<number>;
}

/** StorageDeps are what the storage rules need. */
export interface StorageDeps {
  store: StorageStore;
  transactions: Transactions;
  requestIds: IdempotencyStore;
  clock: Clock;
  /** limits are the limits in effect (config `storage.*`), read at every call. */
  limits: () => StorageLimits;
}

/** createStorage builds the Storage API's rules over a store. */
export function createStorage({ store, transactions, requestIds, clock, limits }: StorageDeps): Storage {
  const once: Once = { transactions, requestIds };
  const ttlMs = (ttlSeconds: number | undefined) => {
    const ttl = ttlSeconds ?? limits().defaultTtlSeconds;
    if (!Number.isInteger(ttl) || ttl <= 0) throw invalid("ttl_seconds: must be a positive number of seconds");
    return ttl * 1000;
  };

  function newRecord(entries: DataEntries, expiresAt: number, own = limits()): DataRecord {
    checkEntries(entries, own);
    checkRecord(sizesOf(entries), own);
    return { id: newId(), version: 1, createdAt: clock.now(), expiresAt, entries };
  }

  async function createIn(uow: UnitOfWork, entries: DataEntries, expiresAt: number, own = limits()): Promise<StoredData> {
    const record = newRecord(entries, expiresAt, own);
    await store.insert(uow, record);
    return { dataId: record.id, expiresAt, version: 1 };
  }

  async function updateIn(uow: UnitOfWork, input: UpdateDataInput): Promise<StoredData> {
    const overlap = input.removeKeys.find((k) => input.entries.has(k));
    if (overlap !== undefined) throw invalid(`remove_keys: "${overlap}" is also set in entries`);
    const configured = limits();
    checkEntries(input.entries, configured);
    const now = clock.now();
    const current = await store.lock(uow, input.dataId, now);
    if (current === undefined) throw notFound(`data ${input.dataId}`);
    if (input.expectedVersion !== undefined && input.expectedVersion !== current.version) {
      throw new GmsError("failed_precondition", `data ${input.dataId} is at version ${current.version}, not ${input.expectedVersion}`);
    }
    const sizes = new Map(current.sizes);
    for (const k of input.removeKeys) sizes.delete(k);
    for (const [k, v] of input.entries) sizes.set(k, valueSize(v));
    checkRecord(sizes, configured);
    const version = current.version + 1;
    const expiresAt = input.ttlSeconds === undefined ? current.expiresAt : now + ttlMs(input.ttlSeconds);
    await store.change(uow, input.dataId, { remove: input.removeKeys, set: input.entries, version, expiresAt });
    return { dataId: input.dataId, expiresAt, version };
  }

  return {
    createIn,
    newRecord: (entries, expiresAt) => newRecord(entries, expiresAt),
    updateIn,
    async create(input) {
      const ttl = ttlMs(input.ttlSeconds);
      const now = clock.now();
      const custom = input.custom;
      return runOnce(
        once,
        input.request,
        now,
        async (uow) => {
          const stored = await createIn(uow, input.entries, now + ttl);
          if (custom !== undefined) {
            const before = await store.bindCustom(uow, custom.user, custom.id, stored.dataId);
            if (before !== undefined) await store.delete(uow, before, now);
          }
          return stored;
        },
        (r) => r.expiresAt,
      );
    },
    async findCustom(user, customId) {
      const dataId = await store.findCustom(user, customId, clock.now());
      // The message names neither the user nor the id: they may be personal.
      if (dataId === undefined) throw notFound("custom id for this user");
      return dataId;
    },
    async get(dataId) {
      const record = await store.read(dataId, clock.now());
      if (record === undefined) throw notFound(`data ${dataId}`);
      return record;
    },
    async getEntry(dataId, key) {
      const found = await store.readEntry(dataId, key, clock.now());
      if (found === undefined) throw notFound(`data ${dataId}`);
      if (found.value === undefined) throw notFound(`key "${key}" in data ${dataId}`);
      return found.value;
    },
    update(input) {
      if (input.ttlSeconds !== undefined) ttlMs(input.ttlSeconds);
      return transactions.run((uow) => updateIn(uow, input));
    },
    async delete(dataId) {
      const existed = await transactions.run((uow) => store.delete(uow, dataId, clock.now()));
      if (!existed) throw notFound(`data ${dataId}`);
    },
    async deleteIn(uow, dataId) {
      await store.delete(uow, dataId, clock.now());
    },
    async sweep(batchSize, maxBatches = 100) {
      let total = 0;
      for (let i = 0; i < maxBatches; i++) {
        const n = await store.sweep(clock.now(), batchSize);
        total += n;
        if (n < batchSize) break;
      }
      return total;
    },
  };
}
