// bench/access.ts measures allocation (RequestInteraction) and matching (MatchInteraction) on MySQL:
// opengms as a server process of its own, called over gRPC, against the bare SQL transactions
// written with mysql2 directly, and the same rules called in process (where the cost goes).
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import mysql from "mysql2/promise";
import { pino } from "pino";
import {
  MatchInteractionRequestSchema,
  MatchInteractionResponseSchema,
  RequestInteractionRequestSchema,
  RequestInteractionResponseSchema,
} from "../gen/gms/v1/access_pb.js";
import type { Clock } from "../src/clock.js";
import { expandNumbers, parseConfig } from "../src/config.js";
import type { Access } from "../src/domain/access.js";
import { createApp } from "../src/server.js";
import { claimQueries, lanesFor } from "../src/store/access-store.js";
import { openDatabase, redactUrl, type Database } from "../src/store/database.js";
import { type SqlText } from "../src/store/batch.js";
import { GRPC_DRIVE, GRPC_DRIVE_MISSING, grpcDriveUnary, grpcDriveVersion } from "./grpc-drive.js";
import { createGrpcLoadClient, type GrpcLoadClient } from "./grpc-load.js";
import { H2LOAD, h2loadUnary, h2loadVersion } from "./h2load.js";
import { compare, MYSQL_URL, mysqlVersion, rowsOf, scaledClock, type BenchContext, type BenchModule, type Load, type Op, type Report, type Row, type Subject } from "./lib.js";
import { cpuSecondsOf, startServerProcess, type ServerProcess } from "./server-process.js";

/** TARGETS are the issue's floors for the server, end to end, against the bare transactions. */
const TARGETS = { allocateVsSkipLocked: 0.7, allocateVsNaive: 2, match: 0.6 } as const;

/** POOL_MAX is the connection pool of the mysql2 baselines and the in-process rules: the server's default (src/store/database.ts). */
const POOL_MAX = 20;
/**
 * ALLOCATE_WARMUP_MS is the least warm-up of every allocation subject: a freshly forked server
 * process needs about ten seconds of calls before V8 has optimised its hot paths (in an A/B run of
 * two fresh servers, 1,400-1,500 calls/s in the first three seconds, ~2,000 from the tenth on),
 * and the default second measured mostly that.
 */
const ALLOCATE_WARMUP_MS = 10_000;
/** CONNECTIONS is the number of HTTP/2 connections the gRPC load is spread over. */
const CONNECTIONS = 4;
/** ALLOC_GROUP is the 1,000-number locking group RequestInteraction allocates from. */
const ALLOC_GROUP = "alloc";
const ALLOC_NUMBERS = "+18009000000..+18009000999";
/** ALLOC_LANES is the allocation group's lane count, as the server computes it. */
const ALLOC_LANES = lanesFor(expandNumbers([ALLOC_NUMBERS]).length);
/** MATCH_GROUP is the locking group MatchInteraction matches on: one live reservation per number. */
const MATCH_GROUP = "match";
/** MATCH_RATE_CEILING sizes the match group: numbers enough for this many matches a second in the longest run. */
const MATCH_RATE_CEILING = 10_000;
/** CALLER is the phone number every benchmark session is created with. */
const CALLER = "+16505550100";
/**
 * CLOCK_SPEED is how fast the clock of the benchmark and of the server runs, so that a 1 s booking
 * frees its number 10 ms later: the 1,000 numbers are recycled by expiry (the claim predicate), as
 * in production, and the pool never runs out however fast a subject is.
 */
const CLOCK_SPEED = 100;
const BOOKING_SECONDS = 1;
const SESSION_TTL_SECONDS = 60;
/** MATCH_HOLD_SECONDS is how long (clock time) the match group's reservations live: longer than any run. */
const MATCH_HOLD_SECONDS = 30 * 24 * 3600;

const SKIP_LOCKED = "bare claim, SKIP LOCKED (mysql2)";
const NAIVE = "naive claim, FOR UPDATE (mysql2)";
/** BARE_LANES is the bare transaction running opengms's own claim SELECTs (lanes), for information. */
const BARE_LANES = "bare claim in lanes, SKIP LOCKED (mysql2)";
const BARE_MATCH = "bare lookup + release (mysql2)";
const DOMAIN = "domain, in process";
const E2E = "gRPC to a server process";
/** E2E_DATA is the same call with app data (two text entries), for information: what most apps send. */
const E2E_DATA = "gRPC, with two app data entries";
/** RPC_ALONE is connect-node answering canned replies in a server process: the ceiling the RPC layer sets. */
const RPC_ALONE = "connect-node alone, canned reply";
/** FLOOR is listen() alone answering a canned gRPC reply, nothing parsed: the least a unary call costs on Node's HTTP/2. */
const FLOOR = "node:http2 alone, canned reply";

/** claimSql is the bare claim's SELECT: the free number longest free, locked. */
const claimSql = (lock: string) =>
  `SELECT number FROM access_numbers WHERE resource_group = ? AND retired = 0 AND available_at <= ? ORDER BY available_at LIMIT 1 ${lock}`;

/** textbookClaim is the bare claim's SELECT, bound: the free number of the group longest free, locked with `lock`. */
const textbookClaim =
  (lock: string) =>
  (now: number): SqlText[] => [{ sql: claimSql(lock), bindings: [ALLOC_GROUP, now] }];

/** lanesClaim is the SELECTs opengms's own claim runs (claimQueries): in a random lane of the group, then in the whole group. */
const lanesClaim = (now: number): SqlText[] =>
  claimQueries("mysql", { group: ALLOC_GROUP, locking: true, allocation: "round-robin", lanes: ALLOC_LANES, now });

/**
 * bareClaim is the allocation baseline: BEGIN; claim the number (the first of `selects` that finds
 * one); mark it busy until the booking lapses; COMMIT. The textbook claim's lock is "FOR UPDATE SKIP
 * LOCKED" or the naive "FOR UPDATE".
 */
function bareClaim(pool: mysql.Pool, clock: Clock, selects: (now: number) => SqlText[]): Op {
  return () =>
    bareTransaction(pool, async (conn) => {
      const now = clock.now();
      let number: string | undefined;
      for (const select of selects(now)) {
        const [rows] = await conn.query<mysql.RowDataPacket[]>(select.sql, [...select.bindings] as (string | number)[]);
        number = rows[0]?.["number"] as string | undefined;
        if (number !== undefined) break;
      }
      if (number === undefined) throw new Error("bare claim found no free number");
      await conn.query("UPDATE access_numbers SET available_at = ? WHERE resource_group = ? AND number = ?", [now + BOOKING_SECONDS * 1000, ALLOC_GROUP, number]);
    });
}

/** bareTransaction runs `fn` between BEGIN and COMMIT on a connection of the mysql2 pool (ROLLBACK when it throws). */
async function bareTransaction(pool: mysql.Pool, fn: (conn: mysql.PoolConnection) => Promise<void>): Promise<void> {
  const conn = await pool.getConnection();
  try {
    await conn.query("BEGIN");
    await fn(conn);
    await conn.query("COMMIT");
  } catch (e) {
    await conn.query("ROLLBACK").catch(() => undefined);
    throw e;
  } finally {
    conn.release();
  }
}

/**
 * bareMatch is the matching baseline: BEGIN; the live reservation on the number with its active
 * session (the reply needs the session and data ids), locked; release it; free the number; COMMIT.
 */
function bareMatch(pool: mysql.Pool, clock: Clock, numbers: readonly string[]): Op {
  return async (n) => {
    const number = numbers[n];
    if (number === undefined) throw new Error(`the match group has ${numbers.length} numbers; run shorter rounds`);
    await bareTransaction(pool, async (conn) => {
      const now = clock.now();
      const [rows] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT r.id, r.session_id, s.data_id FROM reservations r JOIN sessions s ON s.id = r.session_id
         WHERE r.access_number = ? AND r.released_at IS NULL AND r.expires_at > ? AND s.expires_at > ? AND s.state = 'active'
         ORDER BY r.created_at DESC, r.id DESC FOR UPDATE`,
        [number, now, now],
      );
      const row = rows[0];
      if (row === undefined) throw new Error(`bare match found no reservation on ${number}`);
      await conn.query("UPDATE reservations SET released_at = ? WHERE id = ?", [now, row["id"]]);
      await conn.query("UPDATE access_numbers SET available_at = ? WHERE resource_group = ? AND number = ?", [now, MATCH_GROUP, number]);
    });
  };
}

function domainAllocate(access: Access): Op {
  return async () => {
    await access.requestInteraction({
      service: "",
      phoneNumber: CALLER,
      resourceGroup: ALLOC_GROUP,
      ttlSeconds: SESSION_TTL_SECONDS,
      bookingSeconds: BOOKING_SECONDS,
      appData: new Map(),
      request: { scope: "bench", requestId: "", digest: "" },
    });
  };
}

/** E2E_ONCE is the same call with a request id of its own each (safe retries), for information. */
const E2E_ONCE = "gRPC, with a request_id each";
/** ALLOCATE_RATE_CEILING sizes E2E_ONCE's list of request ids: enough for this many calls a second in the longest run. */
const ALLOCATE_RATE_CEILING = 6_000;

/** APP_DATA is the app data of the E2E_DATA calls: two short texts, as an app would send. */
const APP_DATA = { reason: "billing question", customer_id: "C-1029384" };

/** allocateRequest is the RequestInteraction every allocation through a server sends (with APP_DATA when asked). */
const allocateRequest = (withData = false) =>
  create(RequestInteractionRequestSchema, {
    phoneNumber: CALLER,
    resourceGroup: ALLOC_GROUP,
    ttlSeconds: BigInt(SESSION_TTL_SECONDS),
    bookingExpirationTimeoutSeconds: BigInt(BOOKING_SECONDS),
    appData: withData ? Object.fromEntries(Object.entries(APP_DATA).map(([k, v]) => [k, { kind: { case: "text" as const, value: v } }])) : {},
  });

function e2eAllocate(client: GrpcLoadClient, withData = false, requestIds?: readonly string[]): Op {
  const request = allocateRequest(withData);
  return async (n) => {
    if (requestIds !== undefined) request.requestId = requestIds[n] ?? `${requestIds[0]}-${n}`;
    const res = await client.unary("/gms.v1.AccessService/RequestInteraction", RequestInteractionRequestSchema, RequestInteractionResponseSchema, request);
    if (res.access?.accessNumber === undefined || res.access.accessNumber === "") throw new Error("RequestInteraction answered without a number");
  };
}

function domainMatch(access: Access, numbers: readonly string[]): Op {
  return async (n) => {
    const number = numbers[n];
    if (number === undefined) throw new Error(`the match group has ${numbers.length} numbers; run shorter rounds`);
    const found = await access.matchInteraction({ service: "", accessNumber: number, returnMultiple: false, returnData: false });
    if (found.length !== 1) throw new Error(`matched ${found.length} sessions on ${number}`);
  };
}

function e2eMatch(client: GrpcLoadClient, numbers: readonly string[]): Op {
  return async (n) => {
    const number = numbers[n];
    if (number === undefined) throw new Error(`the match group has ${numbers.length} numbers; run shorter rounds`);
    const request = create(MatchInteractionRequestSchema, { accessNumber: number });
    const res = await client.unary("/gms.v1.AccessService/MatchInteraction", MatchInteractionRequestSchema, MatchInteractionResponseSchema, request);
    if (res.matches.length !== 1) throw new Error(`matched ${res.matches.length} sessions on ${number}`);
  };
}

/**
 * h2loadAllocate sends the same RequestInteraction with h2load; `succeeded` counts the calls that
 * succeeded (reservations made, for opengms), since h2load cannot read a gRPC status.
 */
const h2loadAllocate = (server: ServerProcess, dir: string, succeeded?: () => Promise<number>, withData = false): Load =>
  h2loadUnary({
    url: server.url,
    path: "/gms.v1.AccessService/RequestInteraction",
    message: toBinary(RequestInteractionRequestSchema, allocateRequest(withData)),
    connections: CONNECTIONS,
    dir,
    ...(succeeded === undefined ? {} : { succeeded }),
  });

/** reservationsMade counts the allocation group's reservations made since it was last called. */
function reservationsMade(db: Database): () => Promise<number> {
  let last = 0;
  return async () => {
    const [row] = (await db.knex("reservations").where("resource_group", ALLOC_GROUP).count({ n: "*" })) as { n: number | string }[];
    const now = Number(row?.n ?? 0);
    const made = now - last;
    last = now;
    return made;
  };
}

/** onServer makes a subject's CPU per operation the server process's, not the load generator's. */
const onServer = (server: ServerProcess, subject: Subject): Subject => ({ ...subject, cpuSeconds: () => cpuSecondsOf(server.pid) });

/**
 * refillMatches gives every number of the match group that has none a live reservation, with its
 * active session, as RequestInteraction stores them; released reservations and their sessions go.
 * Untimed, between runs, so every run of every subject matches on numbers it has to itself.
 */
async function refillMatches(db: Database, clock: Clock): Promise<void> {
  const knex = db.knex;
  const released = knex("reservations").where("resource_group", MATCH_GROUP).whereNotNull("released_at").select("session_id");
  await knex("sessions").whereIn("id", knex.select("session_id").from(released.as("r"))).delete();
  await knex("reservations").where("resource_group", MATCH_GROUP).whereNotNull("released_at").delete();
  const now = clock.now();
  const expiresAt = now + MATCH_HOLD_SECONDS * 1000;
  const free = (await knex("access_numbers").where({ resource_group: MATCH_GROUP }).andWhere("available_at", "<=", now).pluck("number")) as string[];
  for (let i = 0; i < free.length; i += 1000) {
    const batch = free.slice(i, i + 1000).map((number) => ({ number, sessionId: randomUUID() }));
    await knex.transaction(async (trx) => {
      await trx("sessions").insert(
        batch.map((b) => ({ id: b.sessionId, service: "request-interaction", builtin: "request-interaction", state: "active", phone_number: CALLER, data_id: randomUUID(), created_at: now, expires_at: expiresAt })),
      );
      await trx("reservations").insert(
        batch.map((b) => ({ session_id: b.sessionId, resource_group: MATCH_GROUP, access_number: b.number, access_code: null, phone_number: CALLER, locking: true, created_at: now, expires_at: expiresAt, released_at: null })),
      );
      await trx("access_numbers").where("resource_group", MATCH_GROUP).whereIn("number", batch.map((b) => b.number)).update({ available_at: expiresAt, last_used_at: now });
    });
  }
}

/** clearAllocations deletes what allocation runs created (sessions, their data and its entries, reservations, request ids). */
async function clearAllocations(db: Database): Promise<void> {
  const knex = db.knex;
  // Every run sends the same request ids from the first: kept, they would answer the next run's calls as retries.
  await knex("idempotency_keys").delete();
  await knex.raw(
    "DELETE s, d, e FROM sessions s LEFT JOIN storage_data d ON d.id = s.data_id LEFT JOIN storage_entries e ON e.data_id = s.data_id WHERE s.id IN (SELECT session_id FROM reservations WHERE resource_group = ?)",
    [ALLOC_GROUP],
  );
  await knex("reservations").where("resource_group", ALLOC_GROUP).delete();
}

async function run(ctx: BenchContext): Promise<Report> {
  const name = `gms_bench_${randomBytes(4).toString("hex")}`;
  const url = `${MYSQL_URL}/${name}`;
  ctx.log(`database ${redactUrl(url)}`);
  const db: Database = await openDatabase(url, { poolMax: POOL_MAX });
  const pool = mysql.createPool({ uri: url, connectionLimit: POOL_MAX });
  // The same isolation as the server's pool (src/store/database.ts).
  pool.on("connection", (conn) => void conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"));
  const dir = mkdtempSync(join(tmpdir(), "gms-bench-access-"));
  let server: ServerProcess | undefined;
  let client: GrpcLoadClient | undefined;
  let bare: ServerProcess | undefined;
  let bareClient: GrpcLoadClient | undefined;
  let floor: ServerProcess | undefined;
  let floorClient: GrpcLoadClient | undefined;
  const rows: Row[] = [];
  const longestRunMs = Math.max(ctx.options.roundMs, ctx.options.warmupMs);
  // Every allocation subject warms up at least ALLOCATE_WARMUP_MS: the server process is measured warm.
  const allocateWarmupMs = Math.max(ctx.options.warmupMs, ALLOCATE_WARMUP_MS);
  const matchSize = Math.ceil((MATCH_RATE_CEILING * longestRunMs) / 1000);
  const matchRange = `+1801${"0".repeat(7)}..+1801${String(matchSize - 1).padStart(7, "0")}`;
  const matchNumbers = expandNumbers([matchRange]);
  try {
    // The benchmark and the server process share one fast clock: the same anchor and speed.
    const anchor = Date.now();
    const clock = scaledClock(anchor, CLOCK_SPEED);
    const raw = {
      server: { host: "127.0.0.1", port: 0 },
      log: { level: process.env["GMS_BENCH_LOG"] ?? "warn" },
      database: { url },
      // Rows are cleared between runs; the sweeper would only add work the baselines do not do.
      storage: { sweep_interval_seconds: 24 * 3600 },
      resources: {
        [ALLOC_GROUP]: { numbers: [ALLOC_NUMBERS], allocation: "round-robin", locking: true },
        [MATCH_GROUP]: { numbers: [matchRange], allocation: "round-robin", locking: true },
      },
    };
    // In process, the same rules on a pool of their own, for the "domain" rows.
    const app = createApp({ config: parseConfig(raw, "benchmark configuration"), db, log: pino({ level: "silent" }), clock });
    await app.access.syncNumbers();
    server = await startServerProcess("opengms", { dir, config: raw, log: (line) => ctx.log(line), env: { GMS_BENCH_CLOCK: `${anchor}:${CLOCK_SPEED}` } });
    client = createGrpcLoadClient(server.url, CONNECTIONS);
    bare = await startServerProcess("connect-node alone", { dir, config: raw, args: ["bare"], log: (line) => ctx.log(line) });
    bareClient = createGrpcLoadClient(bare.url, CONNECTIONS);
    floor = await startServerProcess("node:http2 alone", { dir, config: raw, args: ["floor"], log: (line) => ctx.log(line) });
    floorClient = createGrpcLoadClient(floor.url, CONNECTIONS);
    const access = app.access;

    if (ctx.wants("allocate")) {
      // Calls to the servers go through h2load where it is installed (bench/h2load.ts), else the Node generator.
      ctx.log(`allocate: calls to the servers sent by ${H2LOAD ?? "bench/grpc-load.ts (h2load is not installed)"}`);
      // A request id of its own per call: sent by grpc-drive where it could be built (h2load sends one body).
      const requestIds = Array.from({ length: Math.ceil((ALLOCATE_RATE_CEILING * Math.max(longestRunMs, allocateWarmupMs)) / 1000) }, (_, i) => `bench-request-id-${String(i).padStart(8, "0")}`);
      const onceMessages = () => requestIds.map((requestId) => toBinary(RequestInteractionRequestSchema, create(RequestInteractionRequestSchema, { ...allocateRequest(), requestId })));
      const throughServer = (s: ServerProcess, c: GrpcLoadClient, succeeded?: () => Promise<number>, withData = false) =>
        H2LOAD === undefined ? { op: e2eAllocate(c, withData) } : { op: e2eAllocate(c, withData), load: h2loadAllocate(s, dir, succeeded, withData) };
      const subjects: Subject[] = [
        { name: SKIP_LOCKED, op: bareClaim(pool, clock, textbookClaim("FOR UPDATE SKIP LOCKED")) },
        { name: BARE_LANES, op: bareClaim(pool, clock, lanesClaim) },
        { name: NAIVE, op: bareClaim(pool, clock, textbookClaim("FOR UPDATE")) },
        { name: DOMAIN, op: domainAllocate(access) },
        onServer(server, { name: E2E, ...throughServer(server, client, reservationsMade(db)) }),
        onServer(server, { name: E2E_DATA, ...throughServer(server, client, reservationsMade(db), true) }),
        onServer(server, {
          name: E2E_ONCE,
          op: e2eAllocate(client, false, requestIds),
          ...(GRPC_DRIVE === undefined ? {} : { load: grpcDriveUnary({ url: server.url, path: "/gms.v1.AccessService/RequestInteraction", messages: onceMessages(), connections: CONNECTIONS, dir }) }),
        }),
        onServer(bare, { name: RPC_ALONE, ...throughServer(bare, bareClient) }),
        onServer(floor, { name: FLOOR, ...throughServer(floor, floorClient) }),
      ];
      const results = await compare(subjects, { ...ctx.options, warmupMs: allocateWarmupMs, afterRun: () => clearAllocations(db), progress: (l) => ctx.log(`allocate: ${l}`) });
      const byName = new Map(results.map((r) => [r.name, r]));
      const pick = (...names: string[]) => names.map((n) => byName.get(n)!);
      rows.push(...rowsOf("allocate", pick(SKIP_LOCKED, BARE_LANES, DOMAIN, E2E, E2E_DATA, E2E_ONCE, RPC_ALONE, FLOOR), { [E2E]: TARGETS.allocateVsSkipLocked }));
      rows.push(...rowsOf("allocate vs naive lock", pick(NAIVE, DOMAIN, E2E, E2E_DATA, E2E_ONCE), { [E2E]: TARGETS.allocateVsNaive }));
    }

    if (ctx.wants("match")) {
      ctx.log(`match: ${matchNumbers.length} numbers, one live reservation each`);
      await refillMatches(db, clock);
      // Calls to the servers go through grpc-drive where it could be built (bench/grpc-drive.ts), else the Node generator.
      ctx.log(`match: calls to the servers sent by ${GRPC_DRIVE ?? `bench/grpc-load.ts (${GRPC_DRIVE_MISSING ?? "grpc-drive is not built"})`}`);
      const messages = GRPC_DRIVE === undefined ? [] : matchNumbers.map((accessNumber) => toBinary(MatchInteractionRequestSchema, create(MatchInteractionRequestSchema, { accessNumber })));
      const throughServer = (s: ServerProcess, c: GrpcLoadClient) =>
        GRPC_DRIVE === undefined
          ? { op: e2eMatch(c, matchNumbers) }
          : { op: e2eMatch(c, matchNumbers), load: grpcDriveUnary({ url: s.url, path: "/gms.v1.AccessService/MatchInteraction", messages, connections: CONNECTIONS, dir }) };
      const subjects: Subject[] = [
        { name: BARE_MATCH, op: bareMatch(pool, clock, matchNumbers) },
        { name: DOMAIN, op: domainMatch(access, matchNumbers) },
        onServer(server, { name: E2E, ...throughServer(server, client) }),
        onServer(bare, { name: RPC_ALONE, ...throughServer(bare, bareClient) }),
      ];
      const results = await compare(subjects, { ...ctx.options, afterRun: () => refillMatches(db, clock), progress: (l) => ctx.log(`match: ${l}`) });
      rows.push(...rowsOf("match", results, { [E2E]: TARGETS.match }));
    }

    const version = await mysqlVersion(db.knex);
    return {
      module: "access",
      title: `Access numbers on MySQL (${version ?? "?"}), concurrency ${ctx.options.concurrency}: ratios are throughput over the scenario's first row in the same round (median of ${ctx.options.rounds} rounds); cpu is the Node process doing the work (the server process for gRPC rows)`,
      rows,
      environment: {
        node: process.version,
        mysql: version,
        mysqlUrl: redactUrl(MYSQL_URL),
        options: ctx.options,
        poolMax: POOL_MAX,
        clock: `benchmark and server on one clock running ${CLOCK_SPEED}x real time`,
        allocate: {
          group: `${ALLOC_GROUP}: ${ALLOC_NUMBERS} (1,000 numbers), locking, round-robin`,
          warmUp: `${allocateWarmupMs / 1000} s per subject (at least ${ALLOCATE_WARMUP_MS / 1000} s: the server process is measured warm)`,
          booking: `${BOOKING_SECONDS} s of clock time, so numbers recycle by expiry ${(BOOKING_SECONDS * 1000) / CLOCK_SPEED} ms after each claim`,
          [SKIP_LOCKED]: `mysql2 on its own pool: BEGIN; ${claimSql("FOR UPDATE SKIP LOCKED")}; UPDATE access_numbers SET available_at; COMMIT`,
          [BARE_LANES]: `the same transaction with the SELECTs opengms's claim runs (claimQueries: the free number longest free in a random one of the group's ${ALLOC_LANES} lanes, else in the whole group), for information: how much of opengms's figure is its SQL`,
          [NAIVE]: `the same with ${claimSql("FOR UPDATE")}`,
          [DOMAIN]: "createApp(...).access.requestInteraction in the benchmark's process, no app data: session, empty data record, claim, reservation in one transaction",
          [E2E]: `AccessService.RequestInteraction over gRPC (${H2LOAD === undefined ? "bench/grpc-load.ts" : "h2load, bench/h2load.ts; every call checked by the reservations it made"}, ${CONNECTIONS} HTTP/2 connections) to opengms in its own process (bench/node-process.ts) on 127.0.0.1`,
          [E2E_DATA]: `the same calls with app data: ${Object.keys(APP_DATA).length} text entries (${Object.entries(APP_DATA).map(([k, v]) => `${k}: "${v}"`).join(", ")}), stored with the session in the same transaction`,
          [E2E_ONCE]: `the same calls with a request_id of their own each (${GRPC_DRIVE === undefined ? "bench/grpc-load.ts" : "grpc-drive: h2load sends one body"}; the ids are cleared between runs), the reply kept for retries in the same transaction`,
          loadGenerator: H2LOAD === undefined ? "bench/grpc-load.ts (Node): h2load is not installed" : `${H2LOAD} (${h2loadVersion()})`,
          [RPC_ALONE]: "the same calls to a server process where connect-node answers a canned reply (bench/node-process.ts bare): the most any server on connect-node can do here",
          [FLOOR]: "the same calls to a server process where listen() alone answers a canned reply, the request neither parsed nor validated (bench/node-process.ts floor): the most any server on Node's HTTP/2 can do here",
        },
        match: {
          group: `${MATCH_GROUP}: ${matchRange} (${matchNumbers.length} numbers), locking; every number holds one live reservation, refilled between runs`,
          [BARE_MATCH]: "mysql2: BEGIN; SELECT the live reservation of the number joined with its active session FOR UPDATE; UPDATE reservations SET released_at; UPDATE access_numbers SET available_at; COMMIT",
          [DOMAIN]: "createApp(...).access.matchInteraction in process, by access number only (DNIS)",
          [E2E]: `AccessService.MatchInteraction over gRPC (${GRPC_DRIVE === undefined ? "bench/grpc-load.ts" : "grpc-drive, bench/grpc-drive.c: a number of its own per call; every call checked by its grpc-status"}, ${CONNECTIONS} HTTP/2 connections) to the server process, by access number only`,
          loadGenerator: GRPC_DRIVE === undefined ? `bench/grpc-load.ts (Node): ${GRPC_DRIVE_MISSING ?? "grpc-drive is not built"}` : `bench/grpc-drive.c (${grpcDriveVersion()})`,
          [RPC_ALONE]: "the same calls answered with a canned reply by connect-node alone",
        },
        targets: { [E2E]: TARGETS },
      },
    };
  } finally {
    client?.close();
    bareClient?.close();
    floorClient?.close();
    await server?.stop().catch((e: unknown) => ctx.log(`could not stop the server: ${String(e)}`));
    await bare?.stop().catch((e: unknown) => ctx.log(`could not stop the bare server: ${String(e)}`));
    await floor?.stop().catch((e: unknown) => ctx.log(`could not stop the floor server: ${String(e)}`));
    await pool.end().catch((e: unknown) => ctx.log(`could not close the mysql2 pool: ${String(e)}`));
    await db.knex.raw(`DROP DATABASE IF EXISTS \`${name}\``).catch((e: unknown) => ctx.log(`could not drop ${name}: ${String(e)}`));
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** accessBench is the access-number module of the benchmark. */
const accessBench: BenchModule = { run };
export default accessBench;
