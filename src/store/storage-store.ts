// The data records' store on SQL (the contract: src/domain/storage-store.ts). One path for both
// dialects: plain knex, the lock a FOR UPDATE on MySQL (SQLite serialises its writers); a record
// and its entries are read in one statement. A new session's record is written by the access
// store's claim (on MySQL inside gms_claim_session_v2, its entries as entriesJson gives them).
import type { DataRecord, LockedRecord, RecordChange, RecordHead, StorageStore } from "../domain/storage-store.js";
import type { DataEntries, DataValue } from "../domain/value.js";
import { lockForUpdate, type Database, type Dialect, type Queryable } from "./database.js";
import { insertStatement, type InsertRows } from "./batch.js";
import { trxOf } from "./unit-of-work.js";

interface EntryRow {
  data_id: string;
  entry_key: string;
  kind: string;
  value: Buffer | Uint8Array;
  filename: string | null;
  content_type: string | null;
  size: number;
}

interface DataRowSql {
  id: string;
  version: number | string;
  created_at: number | string;
  expires_at: number | string;
}

/** Largest batch of entry bytes sent in one INSERT, well under MySQL's max_allowed_packet. */
const INSERT_CHUNK_BYTES = 4 * 1024 * 1024;

function toDataRow(r: DataRowSql): RecordHead {
  return { id: r.id, version: Number(r.version), createdAt: Number(r.created_at), expiresAt: Number(r.expires_at) };
}

function toEntryRow(dataId: string, key: string, value: DataValue): EntryRow {
  if (value.kind === "text") {
    const bytes = Buffer.from(value.text, "utf8");
    return { data_id: dataId, entry_key: key, kind: "text", value: bytes, filename: null, content_type: null, size: bytes.byteLength };
  }
  return {
    data_id: dataId,
    entry_key: key,
    kind: "file",
    value: value.content,
    filename: value.filename,
    content_type: value.contentType,
    size: value.content.byteLength,
  };
}

function fromEntryRow(r: EntryRow): DataValue {
  const bytes = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
  if (r.kind === "text") return { kind: "text", text: bytes.toString("utf8") };
  return {
    kind: "file",
    filename: r.filename ?? "",
    contentType: r.content_type ?? "",
    content: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  };
}

/** insertData stores a new record and its entries (one INSERT each; a new record has no entries to replace). */
export async function insertData(q: Queryable, record: DataRecord): Promise<void> {
  await q("storage_data").insert({ id: record.id, version: record.version, created_at: record.createdAt, expires_at: record.expiresAt });
  await insertEntries(q, record.id, record.entries);
}

/**
 * entriesJson is a new record's entries as the JSON array gms_claim_session_v1 and v2 store
 * (migrations 007, 009): per entry its key (k), kind, value in base64 (v), filename (f), content type (t) and size
 * in bytes (n), the columns toEntryRow gives it.
 */
export function entriesJson(entries: DataEntries): string {
  return JSON.stringify(
    [...entries].map(([key, value]) => {
      const row = toEntryRow("", key, value);
      return { k: row.entry_key, kind: row.kind, v: Buffer.from(row.value.buffer, row.value.byteOffset, row.value.byteLength).toString("base64"), f: row.filename, t: row.content_type, n: row.size };
    }),
  );
}

/** writeEntries adds entries to a record, replacing those with the same keys. */
async function writeEntries(q: Queryable, dataId: string, entries: DataEntries): Promise<void> {
  if (entries.size === 0) return;
  await q("storage_entries").where("data_id", dataId).whereIn("entry_key", [...entries.keys()]).delete();
  await insertEntries(q, dataId, entries);
}

/** insertEntries inserts entries whose keys the record does not hold. */
async function insertEntries(q: Queryable, dataId: string, entries: DataEntries): Promise<void> {
  for (const ins of entryChunks(dataId, entries)) await insertStatement(q, ins);
}

/** entryChunks are the rows of entries, in chunks of bounded size (one INSERT each). */
function entryChunks(dataId: string, entries: DataEntries): InsertRows[] {
  const out: InsertRows[] = [];
  let chunk: EntryRow[] = [];
  let bytes = 0;
  for (const [key, value] of entries) {
    const row = toEntryRow(dataId, key, value);
    if (chunk.length > 0 && bytes + row.size > INSERT_CHUNK_BYTES) {
      out.push({ table: "storage_entries", rows: chunk as unknown as Record<string, unknown>[] });
      chunk = [];
      bytes = 0;
    }
    chunk.push(row);
    bytes += row.size;
  }
  if (chunk.length > 0) out.push({ table: "storage_entries", rows: chunk as unknown as Record<string, unknown>[] });
  return out;
}

/** removeEntries deletes entries of a record by key. */
async function removeEntries(q: Queryable, dataId: string, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  await q("storage_entries").where("data_id", dataId).whereIn("entry_key", keys).delete();
}

/** DataWithEntrySql is a storage_data row joined with one of its entries (all null when it has none). */
type DataWithEntrySql = Omit<DataRowSql, "id"> & { [K in keyof Omit<EntryRow, "data_id">]: EntryRow[K] | null };

/**
 * readData returns a record that is live at `now`, with every entry. One statement reads both
 * tables: a single round trip, and the record and its entries come from one consistent read even
 * when an update commits meanwhile.
 */
async function readData(q: Queryable, id: string, now: number): Promise<DataRecord | undefined> {
  const rows = await q("storage_data as d")
    .leftJoin("storage_entries as e", "e.data_id", "d.id")
    .where("d.id", id)
    .andWhere("d.expires_at", ">", now)
    .select<DataWithEntrySql[]>("d.version", "d.created_at", "d.expires_at", "e.entry_key", "e.kind", "e.value", "e.filename", "e.content_type", "e.size");
  const first = rows[0];
  if (first === undefined) return undefined;
  const entries: DataEntries = new Map();
  for (const r of rows) {
    if (r.entry_key === null) continue;
    // An entry's columns are NOT NULL: only a record without entries yields nulls here.
    entries.set(r.entry_key, fromEntryRow({ ...(r as Omit<EntryRow, "data_id">), data_id: id }));
  }
  return { ...toDataRow({ ...first, id }), entries };
}

/** readEntry returns one entry of a record live at `now`: undefined when there is no such record. */
async function readEntry(q: Queryable, id: string, key: string, now: number): Promise<{ value: DataValue | undefined } | undefined> {
  const rows = (await q("storage_data as d")
    .leftJoin("storage_entries as e", function () {
      this.on("e.data_id", "=", "d.id").andOn("e.entry_key", "=", q.raw("?", [key]));
    })
    .where("d.id", id)
    .andWhere("d.expires_at", ">", now)
    .select<(Omit<EntryRow, "data_id"> & { id: string })[]>("d.id", "e.entry_key", "e.kind", "e.value", "e.filename", "e.content_type", "e.size"));
  const row = rows[0];
  if (row === undefined) return undefined;
  return { value: row.entry_key === null ? undefined : fromEntryRow({ ...row, data_id: id }) };
}

/** lockData locks a record live at `now` for an update and returns its version and entry sizes. */
async function lockData(q: Queryable, dialect: Dialect, id: string, now: number): Promise<LockedRecord | undefined> {
  const row = (await lockForUpdate(q("storage_data").where("id", id).andWhere("expires_at", ">", now), dialect).first()) as DataRowSql | undefined;
  if (row === undefined) return undefined;
  const sizes = await q("storage_entries").where("data_id", id).select<{ entry_key: string; size: number }[]>("entry_key", "size");
  return { ...toDataRow(row), sizes: new Map(sizes.map((s) => [s.entry_key, Number(s.size)])) };
}

/** changeData applies a change to a record the caller holds: keys removed, entries set, the new version and expiry. */
async function changeData(q: Queryable, id: string, change: RecordChange): Promise<void> {
  await removeEntries(q, id, change.remove);
  await writeEntries(q, id, change.set);
  await q("storage_data").where("id", id).update({ version: change.version, expires_at: change.expiresAt });
}

/** deleteData deletes a record (live or not) with its entries and custom id; false when there was none live. */
export async function deleteData(q: Queryable, id: string, now: number): Promise<boolean> {
  const live = await q("storage_data").where("id", id).andWhere("expires_at", ">", now).first<{ id: string } | undefined>("id");
  await q("storage_custom_ids").where("data_id", id).delete();
  await q("storage_entries").where("data_id", id).delete();
  await q("storage_data").where("id", id).delete();
  return live !== undefined;
}

/**
 * sweepExpiredData deletes up to `batch` records that expired before `now`. Each statement runs on
 * its own and locks rows in primary-key order, so several sweepers (on several nodes) at once only
 * ever wait for each other, never deadlock; a record lapsed is never revived, so nothing is lost
 * between the statements.
 */
async function sweepExpiredData(q: Queryable, now: number, batch: number): Promise<number> {
  const rows = (await q("storage_data").where("expires_at", "<=", now).select("id").limit(batch)) as { id: string }[];
  if (rows.length === 0) return 0;
  const ids = rows.map((r) => r.id).sort();
  await q("storage_custom_ids").whereIn("data_id", ids).delete();
  await q("storage_entries").whereIn("data_id", ids).delete();
  return q("storage_data").whereIn("id", ids).andWhere("expires_at", "<=", now).delete();
}

/**
 * bindCustom points (user, custom id) at a record and returns the record it pointed at before. Two
 * binds of the same custom id at once both succeed on the upsert, the later winning: the record the
 * earlier one stored is then named by nothing and lapses with its time to live.
 */
async function bindCustom(q: Queryable, dialect: Dialect, user: string, customId: string, dataId: string): Promise<string | undefined> {
  const before = (await lockForUpdate(q("storage_custom_ids").where({ owner: user, custom_id: customId }), dialect).first("data_id")) as { data_id: string } | undefined;
  await q("storage_custom_ids").insert({ owner: user, custom_id: customId, data_id: dataId }).onConflict(["owner", "custom_id"]).merge(["data_id"]);
  return before?.data_id;
}

/** findCustom is the live record a user's custom id names. */
async function findCustom(q: Queryable, user: string, customId: string, now: number): Promise<string | undefined> {
  const row = (await q("storage_custom_ids as c")
    .join("storage_data as d", "d.id", "c.data_id")
    .where({ "c.owner": user, "c.custom_id": customId })
    .andWhere("d.expires_at", ">", now)
    .first("d.id")) as { id: string } | undefined;
  return row?.id;
}

/** createStorageStore keeps data records in the database's storage_data, storage_entries and storage_custom_ids tables. */
export function createStorageStore(db: Database): StorageStore {
  return {
    insert: (uow, record) => insertData(trxOf(uow), record),
    read: (id, now) => readData(db.knex, id, now),
    readEntry: (id, key, now) => readEntry(db.knex, id, key, now),
    lock: (uow, id, now) => lockData(trxOf(uow), db.dialect, id, now),
    change: (uow, id, change) => changeData(trxOf(uow), id, change),
    delete: (uow, id, now) => deleteData(trxOf(uow), id, now),
    sweep: (now, batch) => sweepExpiredData(db.knex, now, batch),
    bindCustom: (uow, user, customId, dataId) => bindCustom(trxOf(uow), db.dialect, user, customId, dataId),
    findCustom: (user, customId, now) => findCustom(db.knex, user, customId, now),
  };
}
