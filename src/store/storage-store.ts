import type { DataEntries, DataValue } from "../domain/value.js";
import { lockForUpdate, type Dialect, type Queryable } from "./database.js";

/** DataRow is a storage_data row. */
export interface DataRow {
  id: string;
  version: number;
  createdAt: number;
  expiresAt: number;
}

/** DataRecord is a live record with its entries. */
export interface DataRecord extends DataRow {
  entries: DataEntries;
}

/** LockedData is a record locked for update, with the size of each entry (not the values). */
export interface LockedData extends DataRow {
  sizes: Map<string, number>;
}

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

function toDataRow(r: DataRowSql): DataRow {
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

/** insertData stores a new record and its entries. */
export async function insertData(q: Queryable, row: DataRow, entries: DataEntries): Promise<void> {
  await q("storage_data").insert({ id: row.id, version: row.version, created_at: row.createdAt, expires_at: row.expiresAt });
  await writeEntries(q, row.id, entries);
}

/** writeEntries adds entries to a record, replacing those with the same keys. */
export async function writeEntries(q: Queryable, dataId: string, entries: DataEntries): Promise<void> {
  if (entries.size === 0) return;
  await q("storage_entries").where("data_id", dataId).whereIn("entry_key", [...entries.keys()]).delete();
  let chunk: EntryRow[] = [];
  let bytes = 0;
  for (const [key, value] of entries) {
    const row = toEntryRow(dataId, key, value);
    if (chunk.length > 0 && bytes + row.size > INSERT_CHUNK_BYTES) {
      await q("storage_entries").insert(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(row);
    bytes += row.size;
  }
  await q("storage_entries").insert(chunk);
}

/** removeEntries deletes entries of a record by key. */
export async function removeEntries(q: Queryable, dataId: string, keys: readonly string[]): Promise<void> {
  if (keys.length === 0) return;
  await q("storage_entries").where("data_id", dataId).whereIn("entry_key", keys).delete();
}

/** readData returns a record that is live at `now`, with every entry. */
export async function readData(q: Queryable, id: string, now: number): Promise<DataRecord | undefined> {
  const row = (await q("storage_data").where("id", id).andWhere("expires_at", ">", now).first()) as DataRowSql | undefined;
  if (row === undefined) return undefined;
  const entries = (await q("storage_entries").where("data_id", id)) as EntryRow[];
  return { ...toDataRow(row), entries: new Map(entries.map((e) => [e.entry_key, fromEntryRow(e)])) };
}

/** readEntry returns one entry of a record live at `now`: undefined when there is no such record. */
export async function readEntry(q: Queryable, id: string, key: string, now: number): Promise<{ value: DataValue | undefined } | undefined> {
  const rows = (await q("storage_data as d")
    .leftJoin("storage_entries as e", function () {
      this.on("e.data_id", "=", "d.id").andOn("e.entry_key", "=", q.raw("?", [key]));
    })
    .where("d.id", id)
    .andWhere("d.expires_at", ">", now)
    .select("d.id", "e.entry_key", "e.kind", "e.value", "e.filename", "e.content_type", "e.size")) as (Omit<EntryRow, "data_id"> & { id: string })[];
  const row = rows[0];
  if (row === undefined) return undefined;
  return { value: row.entry_key === null ? undefined : fromEntryRow({ ...row, data_id: id }) };
}

/** lockData locks a record live at `now` for an update and returns its version and entry sizes. */
export async function lockData(q: Queryable, dialect: Dialect, id: string, now: number): Promise<LockedData | undefined> {
  const row = (await lockForUpdate(q("storage_data").where("id", id).andWhere("expires_at", ">", now), dialect).first()) as DataRowSql | undefined;
  if (row === undefined) return undefined;
  const sizes = (await q("storage_entries").where("data_id", id).select("entry_key", "size")) as { entry_key: string; size: number }[];
  return { ...toDataRow(row), sizes: new Map(sizes.map((s) => [s.entry_key, Number(s.size)])) };
}

/** setDataVersion records a record's new version and expiry after an update. */
export async function setDataVersion(q: Queryable, id: string, version: number, expiresAt: number): Promise<void> {
  await q("storage_data").where("id", id).update({ version, expires_at: expiresAt });
}

/** deleteData deletes a record (live or not) with its entries; false when there was none live. */
export async function deleteData(q: Queryable, id: string, now: number): Promise<boolean> {
  const live = await q("storage_data").where("id", id).andWhere("expires_at", ">", now).first("id");
  await q("storage_entries").where("data_id", id).delete();
  await q("storage_data").where("id", id).delete();
  return live !== undefined;
}

/**
 * sweepExpiredData deletes up to `batch` records that expired before `now`. Rows another node is
 * already deleting are skipped (SKIP LOCKED), so several sweepers never wait on each other.
 */
export async function sweepExpiredData(q: Queryable, dialect: Dialect, now: number, batch: number): Promise<number> {
  return q.transaction(async (trx) => {
    const rows = (await lockForUpdate(trx("storage_data").where("expires_at", "<=", now).select("id").limit(batch), dialect, true)) as { id: string }[];
    if (rows.length === 0) return 0;
    const ids = rows.map((r) => r.id);
    await trx("storage_entries").whereIn("data_id", ids).delete();
    await trx("storage_data").whereIn("id", ids).delete();
    return ids.length;
  });
}
