// bench/storage.ts measures GMS Storage get and put on MySQL against raw knex doing the same rows.
import { randomBytes, randomUUID } from "node:crypto";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Knex } from "knex";
import { pino } from "pino";
import { StorageService } from "../gen/gms/v1/storage_pb.js";
import { parseConfig } from "../src/config.js";
import type { Storage } from "../src/domain/storage.js";
import type { DataValue } from "../src/domain/value.js";
import { toValue } from "../src/rpc/convert.js";
import { startServer, type RunningServer } from "../src/server.js";
import { openDatabase, redactUrl, type Database } from "../src/store/database.js";
import { compare, MYSQL_URL, mysqlVersion, rowsOf, type BenchContext, type BenchModule, type Op, type Report, type Row, type Subject } from "./lib.js";

/** TARGETS are the floors for the storage module against raw knex. */
const TARGETS = { get: 0.7, put: 0.6 } as const;

const BASELINE = "raw knex";
const DOMAIN = "storage module";
const E2E = "gRPC end to end";

/** Size is a value size under test: 1 KiB as text (the common case), 256 KiB as a file. */
interface Size {
  label: string;
  value: DataValue;
  /** rowValue is the value column as stored, what the raw baseline writes. */
  rowValue: Buffer;
  /** fixtures is how many records the gets read, in turn. */
  fixtures: number;
}

function sizes(): Size[] {
  const text = "x".repeat(1024);
  const file = randomBytes(256 * 1024);
  return [
    { label: "1 KiB text", value: { kind: "text", text }, rowValue: Buffer.from(text, "utf8"), fixtures: 2000 },
    {
      label: "256 KiB file",
      value: { kind: "file", filename: "blob.bin", contentType: "application/octet-stream", content: new Uint8Array(file) },
      rowValue: file,
      fixtures: 200,
    },
  ];
}

/** POOL_MAX is the MySQL pool size, openDatabase's default (what the server runs with). */
const POOL_MAX = 20;
const KEY = "value";
const TTL_SECONDS = 3600;
/** Fixtures carry created_at 0, so what the puts inserted can be told apart and deleted between runs. */
const FIXTURE_CREATED_AT = 0;

function entryRow(dataId: string, size: Size, content: Buffer) {
  const v = size.value;
  return {
    data_id: dataId,
    entry_key: KEY,
    kind: v.kind,
    value: content,
    filename: v.kind === "file" ? v.filename : null,
    content_type: v.kind === "file" ? v.contentType : null,
    size: content.byteLength,
  };
}

/** rawPut is the baseline put: the same two rows the storage module writes, in one transaction. */
function rawPut(knex: Knex, size: Size): Op {
  return async () => {
    const now = Date.now();
    const id = randomUUID();
    const v = size.value;
    // Raw code storing a text has to encode it too; a file's bytes go as they are.
    const content = v.kind === "text" ? Buffer.from(v.text, "utf8") : size.rowValue;
    await knex.transaction(async (trx) => {
      await trx("storage_data").insert({ id, version: 1, created_at: now, expires_at: now + TTL_SECONDS * 1000 });
      await trx("storage_entries").insert(entryRow(id, size, content));
    });
  };
}

interface RawEntry {
  version: number;
  expires_at: number;
  entry_key: string | null;
  kind: string | null;
  value: Buffer | null;
  filename: string | null;
  content_type: string | null;
}

/** rawGet is the baseline get: the live record and its entries in one query, decoded as the API would. */
function rawGet(knex: Knex, ids: readonly string[], size: Size): Op {
  return async (n) => {
    const rows = await knex("storage_data as d")
      .leftJoin("storage_entries as e", "e.data_id", "d.id")
      .where("d.id", ids[n % ids.length])
      .andWhere("d.expires_at", ">", Date.now())
      .select<RawEntry[]>("d.version", "d.expires_at", "e.entry_key", "e.kind", "e.value", "e.filename", "e.content_type");
    const row = rows[0];
    if (row?.value === null || row?.value === undefined) throw new Error("raw get found no entry");
    const got = row.kind === "text" ? Buffer.byteLength(row.value.toString("utf8")) : row.value.byteLength;
    if (got !== size.rowValue.byteLength) throw new Error(`raw get read ${got} bytes`);
  };
}

function domainGet(storage: Storage, ids: readonly string[]): Op {
  return async (n) => {
    const record = await storage.get(ids[n % ids.length]);
    if (record.entries.size !== 1) throw new Error("storage get found no entry");
  };
}

function domainPut(storage: Storage, size: Size): Op {
  return async () => {
    await storage.create({ ttlSeconds: TTL_SECONDS, entries: new Map([[KEY, size.value]]), request: { scope: "bench", requestId: "", digest: "" } });
  };
}

function e2eGet(client: Client<typeof StorageService>, ids: readonly string[]): Op {
  return async (n) => {
    const res = await client.getData({ dataId: ids[n % ids.length] });
    if (res.entries[KEY] === undefined) throw new Error("GetData returned no entry");
  };
}

function e2ePut(client: Client<typeof StorageService>, size: Size): Op {
  const entries = { [KEY]: toValue(size.value) };
  return async () => {
    await client.createData({ ttlSeconds: BigInt(TTL_SECONDS), entries });
  };
}

/** insertFixtures stores the records the gets read, the way the storage module stores them. */
async function insertFixtures(knex: Knex, size: Size): Promise<string[]> {
  const ids = Array.from({ length: size.fixtures }, () => randomUUID());
  const expiresAt = Date.now() + 24 * 3600 * 1000;
  // Batches small enough for max_allowed_packet even with 256 KiB values.
  for (let i = 0; i < ids.length; i += 20) {
    const batch = ids.slice(i, i + 20);
    await knex.transaction(async (trx) => {
      await trx("storage_data").insert(batch.map((id) => ({ id, version: 1, created_at: FIXTURE_CREATED_AT, expires_at: expiresAt })));
      await trx("storage_entries").insert(batch.map((id) => entryRow(id, size, size.rowValue)));
    });
  }
  return ids;
}

async function run(ctx: BenchContext): Promise<Report> {
  const name = `gms_bench_${randomBytes(4).toString("hex")}`;
  const url = `${MYSQL_URL}/${name}`;
  ctx.log(`database ${redactUrl(url)}`);
  const db: Database = await openDatabase(url, { poolMax: POOL_MAX });
  let server: RunningServer | undefined;
  const rows: Row[] = [];
  try {
    const config = parseConfig({ server: { host: "127.0.0.1", port: 0 } }, "benchmark configuration");
    const log = pino({ level: process.env["GMS_BENCH_LOG"] ?? "silent" });
    server = await startServer({ config, db, log, sweep: false });
    // The storage module as the server wired it (createStorage), called in process.
    const domain = server.app.storage;
    const client = createClient(StorageService, createGrpcTransport({ baseUrl: server.url }));
    const knex = db.knex;
    const deletePuts = async () => {
      await knex("storage_data").where("created_at", ">", FIXTURE_CREATED_AT).delete();
    };

    for (const size of sizes()) {
      const get = `get ${size.label}`;
      if (ctx.wants(get)) {
        ctx.log(`${get}: inserting ${size.fixtures} records`);
        const ids = await insertFixtures(knex, size);
        const subjects: Subject[] = [
          { name: BASELINE, op: rawGet(knex, ids, size) },
          { name: DOMAIN, op: domainGet(domain, ids) },
          { name: E2E, op: e2eGet(client, ids) },
        ];
        const results = await compare(subjects, { ...ctx.options, progress: (l) => ctx.log(`${get}: ${l}`) });
        rows.push(...rowsOf(get, results, { [DOMAIN]: TARGETS.get }));
        await knex("storage_data").whereIn("id", ids).delete();
      }
      const put = `put ${size.label}`;
      if (ctx.wants(put)) {
        const subjects: Subject[] = [
          { name: BASELINE, op: rawPut(knex, size) },
          { name: DOMAIN, op: domainPut(domain, size) },
          { name: E2E, op: e2ePut(client, size) },
        ];
        const results = await compare(subjects, { ...ctx.options, afterRun: deletePuts, progress: (l) => ctx.log(`${put}: ${l}`) });
        rows.push(...rowsOf(put, results, { [DOMAIN]: TARGETS.put }));
      }
    }

    const version = await mysqlVersion(knex);
    return {
      module: "storage",
      title: `Storage on MySQL (${version ?? "?"}), concurrency ${ctx.options.concurrency}: ratios are throughput over raw knex in the same round (median of ${ctx.options.rounds} rounds)`,
      rows,
      environment: {
        node: process.version,
        mysql: version,
        mysqlUrl: redactUrl(MYSQL_URL),
        options: ctx.options,
        poolMax: POOL_MAX,
        cpuUsPerOp: "CPU time of this Node process per operation (MariaDB's excluded); for the end-to-end rows it holds client and server",
        baseline: "raw knex on the same pool: get = one select joining storage_data and storage_entries; put = a transaction inserting the two rows",
        subjects: {
          [DOMAIN]: "createStorage(...).get / .create, in process",
          [E2E]: "StorageService GetData / CreateData over gRPC (connect-node client) to startServer on 127.0.0.1:0, client and server in this process",
        },
        targets: { [DOMAIN]: TARGETS },
      },
    };
  } finally {
    await db.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``).catch((e: unknown) => ctx.log(`could not drop ${name}: ${String(e)}`));
    // Shutting the server down closes the database too.
    if (server !== undefined) await server.shutdown();
    else await db.close();
  }
}

/** storageBench is the storage module of the benchmark. */
const storageBench: BenchModule = { run };
export default storageBench;
