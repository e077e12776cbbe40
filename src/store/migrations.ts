import type { Knex } from "knex";
import type { Dialect } from "./dialect.js";

/** Migration is one step of the schema, written as code so it runs the same on both dialects. */
interface Migration {
  name: string;
  up(knex: Knex, dialect: Dialect): Promise<void>;
  down(knex: Knex, dialect: Dialect): Promise<void>;
}

/** binaryCollation makes a MySQL table compare strings byte for byte: ids and keys are case-sensitive. */
function binaryCollation(t: Knex.CreateTableBuilder, dialect: Dialect): void {
  if (dialect === "mysql") {
    t.charset("utf8mb4");
    t.collate("utf8mb4_bin");
    t.engine("InnoDB");
  }
}

const migrations: Migration[] = [
  {
    name: "001_storage",
    async up(knex, dialect) {
      await knex.schema.createTable("storage_data", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.bigInteger("version").notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("expires_at").notNullable().index("storage_data_expires_at");
      });
      await knex.schema.createTable("storage_entries", (t) => {
        binaryCollation(t, dialect);
        // No foreign key: entries are deleted with their record explicitly, and a cascade would take
        // gap locks on MySQL that make concurrent sweepers deadlock.
        t.string("data_id", 36).notNullable();
        t.string("entry_key", 512).notNullable();
        t.string("kind", 8).notNullable();
        t.specificType("value", dialect === "mysql" ? "longblob" : "blob").notNullable();
        t.string("filename", 255);
        t.string("content_type", 255);
        t.integer("size").notNullable();
        t.primary(["data_id", "entry_key"]);
      });
      await knex.schema.createTable("idempotency_keys", (t) => {
        binaryCollation(t, dialect);
        t.string("scope", 200).notNullable();
        t.string("request_id", 128).notNullable();
        t.text("result", "mediumtext").notNullable();
        t.bigInteger("expires_at").notNullable().index("idempotency_keys_expires_at");
        t.primary(["scope", "request_id"]);
      });
    },
    async down(knex) {
      await knex.schema.dropTable("idempotency_keys");
      await knex.schema.dropTable("storage_entries");
      await knex.schema.dropTable("storage_data");
    },
  },
  {
    name: "002_access",
    async up(knex, dialect) {
      await knex.schema.createTable("sessions", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.string("service", 128).notNullable();
        t.string("builtin", 32).notNullable();
        t.string("state", 16).notNullable();
        t.string("phone_number", 32).notNullable();
        t.string("data_id", 36).notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("expires_at").notNullable().index("sessions_expires_at");
      });
      // One row per configured number. available_at is the moment a number of a locking group is
      // free again (its reservation's expiry, or its release plus the cool-down), so whether it is
      // free is decided by a predicate at claim time, never by a sweeper.
      await knex.schema.createTable("access_numbers", (t) => {
        binaryCollation(t, dialect);
        t.string("resource_group", 128).notNullable();
        t.string("number", 32).notNullable();
        t.boolean("retired").notNullable().defaultTo(false);
        t.bigInteger("available_at").notNullable().defaultTo(0);
        t.bigInteger("last_used_at").notNullable().defaultTo(0);
        t.double("rand_key").notNullable();
        t.primary(["resource_group", "number"]);
        t.index(["resource_group", "retired", "available_at"], "access_numbers_round_robin");
        t.index(["resource_group", "retired", "rand_key"], "access_numbers_random");
        t.index(["resource_group", "retired", "last_used_at"], "access_numbers_least_used");
      });
      await knex.schema.createTable("reservations", (t) => {
        binaryCollation(t, dialect);
        t.bigIncrements("id").primary();
        t.string("session_id", 36).notNullable().index("reservations_session");
        t.string("resource_group", 128).notNullable();
        t.string("access_number", 32).notNullable();
        t.string("access_code", 12);
        t.string("phone_number", 32).notNullable();
        t.boolean("locking").notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("expires_at").notNullable().index("reservations_expires_at");
        t.bigInteger("released_at");
        t.index(["access_number", "released_at", "expires_at"], "reservations_live_by_number");
      });
      await knex.schema.createTable("code_failures", (t) => {
        binaryCollation(t, dialect);
        t.bigIncrements("id").primary();
        t.string("access_number", 32).notNullable();
        t.bigInteger("failed_at").notNullable();
        t.index(["access_number", "failed_at"], "code_failures_by_number");
      });
    },
    async down(knex) {
      await knex.schema.dropTable("code_failures");
      await knex.schema.dropTable("reservations");
      await knex.schema.dropTable("access_numbers");
      await knex.schema.dropTable("sessions");
    },
  },
  {
    name: "003_chat",
    async up(knex, dialect) {
      await knex.schema.createTable("chats", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.string("session_id", 36).notNullable();
        t.string("service", 128).notNullable();
        t.string("endpoint", 128).notNullable();
        t.string("state", 16).notNullable();
        t.string("subject", 1024).notNullable();
        t.string("email_address", 254).notNullable();
        t.text("user_data", "mediumtext").notNullable();
        t.string("secure_key_hash", 64).notNullable();
        t.string("customer_participant_id", 36).notNullable();
        t.bigInteger("last_position").notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("queued_at").notNullable();
        t.bigInteger("expires_at").notNullable().index("chats_expires_at");
        // AcceptChat takes the oldest waiting chat of an endpoint: this index finds and locks just it.
        t.index(["endpoint", "state", "queued_at"], "chats_queue");
      });
      await knex.schema.createTable("chat_participants", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.string("chat_id", 36).notNullable().index("chat_participants_chat");
        t.string("kind", 16).notNullable();
        t.string("nickname", 128).notNullable();
        t.string("identity", 128).notNullable();
        t.bigInteger("joined_at").notNullable();
        t.bigInteger("left_at");
      });
      await knex.schema.createTable("chat_events", (t) => {
        binaryCollation(t, dialect);
        t.string("chat_id", 36).notNullable();
        t.bigInteger("position").notNullable();
        t.string("kind", 32).notNullable();
        t.string("participant_id", 64).notNullable();
        t.string("nickname", 128).notNullable();
        t.string("participant_kind", 16).notNullable();
        t.text("text", "mediumtext");
        t.string("message_type", 64);
        t.text("user_data", "mediumtext");
        t.string("client_message_id", 128);
        t.string("file_id", 36);
        t.bigInteger("created_at").notNullable();
        t.primary(["chat_id", "position"]);
        t.unique(["chat_id", "participant_id", "client_message_id"], { indexName: "chat_events_client_id" });
      });
    },
    async down(knex) {
      await knex.schema.dropTable("chat_events");
      await knex.schema.dropTable("chat_participants");
      await knex.schema.dropTable("chats");
    },
  },
  {
    name: "004_chat_files_idle_typing",
    async up(knex, dialect) {
      await knex.schema.alterTable("chats", (t) => {
        t.bigInteger("customer_seen_at").notNullable().defaultTo(0);
        t.index(["state", "customer_seen_at"], "chats_idle");
      });
      await knex.schema.alterTable("chat_events", (t) => {
        t.string("file_name", 255);
        t.bigInteger("file_size");
        t.string("file_content_type", 255);
      });
      await knex.schema.createTable("chat_files", (t) => {
        binaryCollation(t, dialect);
        t.string("id", 36).primary();
        t.string("chat_id", 36).notNullable().index("chat_files_chat");
        t.string("participant_id", 64).notNullable();
        t.string("data_id", 36).notNullable();
        t.string("filename", 255).notNullable();
        t.string("content_type", 255).notNullable();
        t.bigInteger("size").notNullable();
        t.bigInteger("created_at").notNullable();
        t.bigInteger("deleted_at");
      });
      // Who is typing, shared by every node; a row lapses at `until` even if its node is gone.
      await knex.schema.createTable("chat_typing", (t) => {
        binaryCollation(t, dialect);
        t.string("chat_id", 36).notNullable();
        t.string("participant_id", 64).notNullable();
        t.string("nickname", 128).notNullable();
        t.string("kind", 16).notNullable();
        t.bigInteger("started_at").notNullable();
        t.bigInteger("until").notNullable();
        t.primary(["chat_id", "participant_id"]);
      });
    },
    async down(knex) {
      await knex.schema.dropTable("chat_typing");
      await knex.schema.dropTable("chat_files");
      await knex.schema.alterTable("chat_events", (t) => {
        t.dropColumn("file_name");
        t.dropColumn("file_size");
        t.dropColumn("file_content_type");
      });
      await knex.schema.alterTable("chats", (t) => {
        t.dropIndex(["state", "customer_seen_at"], "chats_idle");
        t.dropColumn("customer_seen_at");
      });
    },
  },
  {
    name: "005_access_lanes",
    async up(knex) {
      // A round-robin claim takes the number free the longest. With every claim after the same row,
      // concurrent claims pile up at the head of one index, where each skips the rows the others are
      // claiming (on MySQL a costly check of every row another transaction changed). A large group is
      // therefore split into lanes (syncNumbers assigns them): a claim takes the number free the
      // longest in a random lane, through this index, and falls back to the whole group.
      await knex.schema.alterTable("access_numbers", (t) => {
        t.integer("lane").notNullable().defaultTo(0);
        t.index(["resource_group", "retired", "lane", "available_at"], "access_numbers_lane");
      });
    },
    async down(knex) {
      await knex.schema.alterTable("access_numbers", (t) => {
        t.dropIndex(["resource_group", "retired", "lane", "available_at"], "access_numbers_lane");
        t.dropColumn("lane");
      });
    },
  },
  {
    name: "006_claim_procedure",
    async up(knex, dialect) {
      if (dialect === "mysql") await knex.raw(CLAIM_PROCEDURE_V1);
    },
    async down(knex, dialect) {
      if (dialect === "mysql") await knex.raw("DROP PROCEDURE IF EXISTS gms_claim_v1");
    },
  },
  {
    name: "007_claim_session_procedure",
    async up(knex, dialect) {
      if (dialect === "mysql") await knex.raw(CLAIM_SESSION_PROCEDURE_V1);
    },
    async down(knex, dialect) {
      if (dialect === "mysql") await knex.raw("DROP PROCEDURE IF EXISTS gms_claim_session_v1");
    },
  },
  {
    name: "008_match_procedures",
    async up(knex, dialect) {
      if (dialect !== "mysql") return;
      await knex.raw(MATCH_LOCK_PROCEDURE_V1);
      await knex.raw(RELEASE_PROCEDURE_V1);
    },
    async down(knex, dialect) {
      if (dialect !== "mysql") return;
      await knex.raw("DROP PROCEDURE IF EXISTS gms_release_v1");
      await knex.raw("DROP PROCEDURE IF EXISTS gms_match_lock_v1");
    },
  },
  {
    name: "009_claim_and_match_v2",
    async up(knex, dialect) {
      if (dialect !== "mysql") return;
      await knex.raw(CLAIM_PROCEDURE_V2);
      await knex.raw(CLAIM_SESSION_PROCEDURE_V2);
      await knex.raw(MATCH_LOCK_PROCEDURE_V2);
    },
    async down(knex, dialect) {
      if (dialect !== "mysql") return;
      await knex.raw("DROP PROCEDURE IF EXISTS gms_match_lock_v2");
      await knex.raw("DROP PROCEDURE IF EXISTS gms_claim_session_v2");
      await knex.raw("DROP PROCEDURE IF EXISTS gms_claim_v2");
    },
  },
  {
    name: "010_storage_custom_ids",
    async up(knex, dialect) {
      // A user's custom id for a record (GMS `/storage/custom/{customId}/{ttl}` with `gms_user`).
      // No foreign key, as for entries: the row is deleted with its record, by delete and sweep.
      await knex.schema.createTable("storage_custom_ids", (t) => {
        binaryCollation(t, dialect);
        t.string("owner", 128).notNullable();
        t.string("custom_id", 128).notNullable();
        t.string("data_id", 36).notNullable().index("storage_custom_ids_data_id");
        t.primary(["owner", "custom_id"]);
      });
    },
    async down(knex) {
      await knex.schema.dropTable("storage_custom_ids");
    },
  },
  {
    name: "011_sessions_listing",
    async up(knex) {
      // An operator lists sessions newest first, of every service or of one (AdminService.ListSessions,
      // a keyset on created_at and id). Both grow at their right edge as sessions are created, so an
      // insert costs each a leaf page it most likely has in memory.
      await knex.schema.alterTable("sessions", (t) => {
        t.index(["created_at", "id"], "sessions_listing");
        t.index(["service", "created_at", "id"], "sessions_by_service");
      });
    },
    async down(knex) {
      await knex.schema.alterTable("sessions", (t) => {
        t.dropIndex(["service", "created_at", "id"], "sessions_by_service");
        t.dropIndex(["created_at", "id"], "sessions_listing");
      });
    },
  },
];

/**
 * CLAIM_PROCEDURE_V1 is the claim of a number and its reservation as one stored procedure (MySQL
 * only; claimAndReserve calls it): the statements claimQueries, insertReservation and
 * markNumberUsed run on SQLite, the same SELECTs on the same (named) indexes, with their rules
 * decided by IF branches in the database. Called inside the caller's transaction (it starts and
 * commits none), it leaves the number it claimed, or NULL, in the session variable
 * @gms_claimed_number, which the caller's later statements of the same batch read. A batch of a dozen statements cost the database a parse, an
 * optimisation and a reply packet each; a CALL costs one, and the procedure's statements stay parsed
 * per connection. Frozen as written: a change is a new procedure (gms_claim_v2) in a new migration.
 *
 * - random (p_random): the first number from a random pivot up by rand_key, else below it;
 * - locking round-robin: the number free the longest (available_at) in lane p_lane when one is
 *   given, else (or when that lane has none) in the whole group;
 * - shared round-robin: the number used the longest ago (last_used_at).
 * A locking group takes only a free number (available_at <= p_now) and skips the rows other claims
 * hold (SKIP LOCKED); a shared number is waited for (FOR UPDATE). The claimed number is busy until
 * the reservation expires (locking) or was used now (shared).
 */
const CLAIM_PROCEDURE_V1 = `CREATE PROCEDURE gms_claim_v1(
  IN p_group VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_locking BOOLEAN,
  IN p_random BOOLEAN,
  IN p_lane INT,
  IN p_pivot DOUBLE,
  IN p_now BIGINT,
  IN p_session_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_access_code VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_phone_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_expires_at BIGINT)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE v_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
  IF p_random AND p_locking THEN
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND rand_key >= p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND rand_key < p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
  ELSEIF p_random THEN
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND rand_key >= p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND rand_key < p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE;
    END IF;
  ELSEIF p_locking THEN
    IF p_lane IS NOT NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_lane) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND lane = p_lane ORDER BY available_at, number LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_round_robin) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now ORDER BY available_at, number LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
  ELSE
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_least_used) WHERE resource_group = p_group AND retired = 0 ORDER BY last_used_at, number LIMIT 1 FOR UPDATE;
  END IF;
  IF v_number IS NOT NULL THEN
    INSERT INTO reservations (session_id, resource_group, access_number, access_code, phone_number, locking, created_at, expires_at)
      VALUES (p_session_id, p_group, v_number, p_access_code, p_phone_number, p_locking, p_now, p_expires_at);
    IF p_locking THEN
      UPDATE access_numbers SET available_at = p_expires_at WHERE resource_group = p_group AND number = v_number;
    ELSE
      UPDATE access_numbers SET last_used_at = p_now WHERE resource_group = p_group AND number = v_number;
    END IF;
  END IF;
  SET @gms_claimed_number = v_number;
END`;

/**
 * CLAIM_SESSION_PROCEDURE_V1 is RequestInteraction's whole transaction (MySQL only; claimSession
 * calls it): it starts a transaction, claims a number and reserves it for the new session
 * (gms_claim_v1), stores the session, its data record and the record's entries (p_entries, a JSON
 * array as entriesJson writes it, or NULL) only when it got one, and commits. With a request id
 * (p_request_id) it first claims the id as claimRequestId does: a retry gets the first call's
 * result (prior) and nothing is claimed or stored; a first call stores its result (p_result, with
 * every p_placeholder replaced by the number) under the id until p_keep_until. It answers with one
 * row: the number and the prior result; both NULL when no number was free, and then nothing is kept
 * (not the request id either). One CALL, sent as a prepared statement: the database parses nothing
 * per call, where the same batch as a compound statement (BEGIN NOT ATOMIC … END) cost it a parse
 * and a block of its own each time (a tenth of its CPU per claim, and of the client's). Any error
 * rolls the transaction back before it is raised. Frozen as written: a change to the tables it
 * writes is a new procedure (gms_claim_session_v2).
 */
const CLAIM_SESSION_PROCEDURE_V1 = `CREATE PROCEDURE gms_claim_session_v1(
  IN p_group VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_locking BOOLEAN,
  IN p_random BOOLEAN,
  IN p_lane INT,
  IN p_pivot DOUBLE,
  IN p_now BIGINT,
  IN p_session_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_access_code VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_phone_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_booking_expires_at BIGINT,
  IN p_service VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_builtin VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_data_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_session_expires_at BIGINT,
  IN p_entries LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_scope VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_request_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_keep_until BIGINT,
  IN p_result MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_placeholder VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE v_prior MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    RESIGNAL;
  END;
  SET @gms_claimed_number = NULL;
  START TRANSACTION;
  IF p_request_id IS NOT NULL THEN
    DELETE FROM idempotency_keys WHERE scope = p_scope AND request_id = p_request_id AND expires_at <= p_now;
    -- A concurrent first call holds the key's row lock until it commits: this waits, then finds its result.
    INSERT INTO idempotency_keys (scope, request_id, result, expires_at) VALUES (p_scope, p_request_id, '', p_keep_until)
      ON DUPLICATE KEY UPDATE request_id = request_id;
    SELECT NULLIF(result, '') INTO v_prior FROM idempotency_keys WHERE scope = p_scope AND request_id = p_request_id;
  END IF;
  IF v_prior IS NULL THEN
    CALL gms_claim_v1(p_group, p_locking, p_random, p_lane, p_pivot, p_now, p_session_id, p_access_code, p_phone_number, p_booking_expires_at);
    IF @gms_claimed_number IS NOT NULL THEN
      INSERT INTO storage_data (id, version, created_at, expires_at) VALUES (p_data_id, 1, p_now, p_session_expires_at);
      IF p_entries IS NOT NULL THEN
        INSERT INTO storage_entries (data_id, entry_key, kind, value, filename, content_type, size)
          SELECT p_data_id, j.k, j.kind, FROM_BASE64(j.v), j.f, j.t, j.n
          FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
            k VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.k' ERROR ON EMPTY ERROR ON ERROR,
            kind VARCHAR(8) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.kind' ERROR ON EMPTY ERROR ON ERROR,
            v LONGTEXT CHARACTER SET ascii PATH '$.v' ERROR ON EMPTY ERROR ON ERROR,
            f VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.f',
            t VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.t',
            n INT PATH '$.n' ERROR ON EMPTY ERROR ON ERROR)) AS j;
      END IF;
      INSERT INTO sessions (id, service, builtin, state, phone_number, data_id, created_at, expires_at)
        VALUES (p_session_id, p_service, p_builtin, 'active', p_phone_number, p_data_id, p_now, p_session_expires_at);
      IF p_request_id IS NOT NULL THEN
        UPDATE idempotency_keys SET result = REPLACE(p_result, p_placeholder, @gms_claimed_number), expires_at = p_keep_until
          WHERE scope = p_scope AND request_id = p_request_id;
      END IF;
    END IF;
  END IF;
  IF v_prior IS NULL AND @gms_claimed_number IS NULL THEN
    ROLLBACK;
  ELSE
    COMMIT;
  END IF;
  SELECT @gms_claimed_number AS number, v_prior AS prior;
END`;

/**
 * MATCH_LOCK_PROCEDURE_V1 is the first step of MatchInteraction (MySQL only; lockNumberForMatch
 * calls it): it begins the transaction and answers with the code failures on the number since
 * p_since (count and oldest) and the number's live reservations with their active sessions,
 * newest first, locked: the SELECTs lockNumberForMatch runs on SQLite. The transaction stays open
 * for the rules to decide and the release (gms_release_v1) to commit; an error rolls it back.
 * Prepared once per connection, as gms_claim_session_v1. Frozen as written.
 */
const MATCH_LOCK_PROCEDURE_V1 = `CREATE PROCEDURE gms_match_lock_v1(
  IN p_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_now BIGINT,
  IN p_since BIGINT)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    RESIGNAL;
  END;
  START TRANSACTION;
  SELECT COUNT(*) AS n, MIN(failed_at) AS oldest FROM code_failures WHERE access_number = p_number AND failed_at > p_since;
  SELECT r.*, s.service AS s_service, s.builtin AS s_builtin, s.state AS s_state, s.phone_number AS s_phone_number, s.data_id AS s_data_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at
    FROM reservations r JOIN sessions s ON s.id = r.session_id
    WHERE r.access_number = p_number AND r.released_at IS NULL AND r.expires_at > p_now AND s.expires_at > p_now AND s.state = 'active'
    ORDER BY r.created_at DESC, r.id DESC FOR UPDATE;
END`;

/**
 * RELEASE_PROCEDURE_V1 releases one reservation and commits (MySQL only; releaseAndCommit calls it
 * for the common match of one reservation): released now, and its number, when locking, free at
 * p_free_at (the release plus the group's cool-down), as releaseStatements write it. An error rolls
 * the transaction back. Frozen as written.
 */
const RELEASE_PROCEDURE_V1 = `CREATE PROCEDURE gms_release_v1(
  IN p_id BIGINT,
  IN p_now BIGINT,
  IN p_locking BOOLEAN,
  IN p_group VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_free_at BIGINT)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    RESIGNAL;
  END;
  UPDATE reservations SET released_at = p_now WHERE id = p_id;
  IF p_locking THEN
    UPDATE access_numbers SET available_at = p_free_at WHERE resource_group = p_group AND number = p_number;
  END IF;
  COMMIT;
END`;

/**
 * CLAIM_PROCEDURE_V2 is gms_claim_v1 (which see) with a shared number's access code kept unique
 * (MySQL only; the access store's claims call it, gms_claim_session_v2 among them). A code drawn
 * before the number was known (p_access_code, on a non-locking group) that a live reservation on
 * the claimed number already holds claims nothing: no reservation, the number untouched,
 * @gms_claimed_number NULL, and @gms_code_taken_on set to the number, for the caller to draw again
 * avoiding its codes. The codes are the latest committed (the store's connections run READ
 * COMMITTED), and no claim adds one meanwhile: claims of a shared number queue on its row lock.
 * A release not yet committed still counts its code as taken. Produces no result set, so it can
 * be CALLed inside a batch. Frozen as written.
 */
const CLAIM_PROCEDURE_V2 = `CREATE PROCEDURE gms_claim_v2(
  IN p_group VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_locking BOOLEAN,
  IN p_random BOOLEAN,
  IN p_lane INT,
  IN p_pivot DOUBLE,
  IN p_now BIGINT,
  IN p_session_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_access_code VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_phone_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_expires_at BIGINT)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE v_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
  DECLARE v_taken INT DEFAULT 0;
  SET @gms_code_taken_on = NULL;
  IF p_random AND p_locking THEN
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND rand_key >= p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND rand_key < p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
  ELSEIF p_random THEN
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND rand_key >= p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_random) WHERE resource_group = p_group AND retired = 0 AND rand_key < p_pivot ORDER BY rand_key LIMIT 1 FOR UPDATE;
    END IF;
  ELSEIF p_locking THEN
    IF p_lane IS NOT NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_lane) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now AND lane = p_lane ORDER BY available_at, number LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF v_number IS NULL THEN
      SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_round_robin) WHERE resource_group = p_group AND retired = 0 AND available_at <= p_now ORDER BY available_at, number LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
  ELSE
    SELECT number INTO v_number FROM access_numbers FORCE INDEX (access_numbers_least_used) WHERE resource_group = p_group AND retired = 0 ORDER BY last_used_at, number LIMIT 1 FOR UPDATE;
  END IF;
  IF v_number IS NOT NULL AND p_access_code IS NOT NULL AND NOT p_locking THEN
    SELECT COUNT(*) INTO v_taken FROM reservations
      WHERE access_number = v_number AND access_code = p_access_code AND released_at IS NULL AND expires_at > p_now;
    IF v_taken > 0 THEN
      SET @gms_code_taken_on = v_number;
      SET v_number = NULL;
    END IF;
  END IF;
  IF v_number IS NOT NULL THEN
    INSERT INTO reservations (session_id, resource_group, access_number, access_code, phone_number, locking, created_at, expires_at)
      VALUES (p_session_id, p_group, v_number, p_access_code, p_phone_number, p_locking, p_now, p_expires_at);
    IF p_locking THEN
      UPDATE access_numbers SET available_at = p_expires_at WHERE resource_group = p_group AND number = v_number;
    ELSE
      UPDATE access_numbers SET last_used_at = p_now WHERE resource_group = p_group AND number = v_number;
    END IF;
  END IF;
  SET @gms_claimed_number = v_number;
END`;

/**
 * CLAIM_SESSION_PROCEDURE_V2 is gms_claim_session_v1 (which see: RequestInteraction's whole
 * transaction in one prepared CALL) claiming through gms_claim_v2, so a shared number's code is
 * unique too: a code already taken there claims and stores nothing, rolls back (the request id is
 * not kept either) and answers with the number in taken_on, for the caller to draw another code
 * and call again. Its row: the number, the prior result, taken_on. The access store sends every
 * record's entries as JSON (p_entries), whatever their size. Frozen as written.
 */
const CLAIM_SESSION_PROCEDURE_V2 = `CREATE PROCEDURE gms_claim_session_v2(
  IN p_group VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_locking BOOLEAN,
  IN p_random BOOLEAN,
  IN p_lane INT,
  IN p_pivot DOUBLE,
  IN p_now BIGINT,
  IN p_session_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_access_code VARCHAR(12) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_phone_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_booking_expires_at BIGINT,
  IN p_service VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_builtin VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_data_id VARCHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_session_expires_at BIGINT,
  IN p_entries LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_scope VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_request_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_keep_until BIGINT,
  IN p_result MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_placeholder VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE v_prior MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    RESIGNAL;
  END;
  SET @gms_claimed_number = NULL;
  SET @gms_code_taken_on = NULL;
  START TRANSACTION;
  IF p_request_id IS NOT NULL THEN
    DELETE FROM idempotency_keys WHERE scope = p_scope AND request_id = p_request_id AND expires_at <= p_now;
    -- A concurrent first call holds the key's row lock until it commits: this waits, then finds its result.
    INSERT INTO idempotency_keys (scope, request_id, result, expires_at) VALUES (p_scope, p_request_id, '', p_keep_until)
      ON DUPLICATE KEY UPDATE request_id = request_id;
    SELECT NULLIF(result, '') INTO v_prior FROM idempotency_keys WHERE scope = p_scope AND request_id = p_request_id;
  END IF;
  IF v_prior IS NULL THEN
    CALL gms_claim_v2(p_group, p_locking, p_random, p_lane, p_pivot, p_now, p_session_id, p_access_code, p_phone_number, p_booking_expires_at);
    IF @gms_claimed_number IS NOT NULL THEN
      INSERT INTO storage_data (id, version, created_at, expires_at) VALUES (p_data_id, 1, p_now, p_session_expires_at);
      IF p_entries IS NOT NULL THEN
        INSERT INTO storage_entries (data_id, entry_key, kind, value, filename, content_type, size)
          SELECT p_data_id, j.k, j.kind, FROM_BASE64(j.v), j.f, j.t, j.n
          FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
            k VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.k' ERROR ON EMPTY ERROR ON ERROR,
            kind VARCHAR(8) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.kind' ERROR ON EMPTY ERROR ON ERROR,
            v LONGTEXT CHARACTER SET ascii PATH '$.v' ERROR ON EMPTY ERROR ON ERROR,
            f VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.f',
            t VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$.t',
            n INT PATH '$.n' ERROR ON EMPTY ERROR ON ERROR)) AS j;
      END IF;
      INSERT INTO sessions (id, service, builtin, state, phone_number, data_id, created_at, expires_at)
        VALUES (p_session_id, p_service, p_builtin, 'active', p_phone_number, p_data_id, p_now, p_session_expires_at);
      IF p_request_id IS NOT NULL THEN
        UPDATE idempotency_keys SET result = REPLACE(p_result, p_placeholder, @gms_claimed_number), expires_at = p_keep_until
          WHERE scope = p_scope AND request_id = p_request_id;
      END IF;
    END IF;
  END IF;
  IF v_prior IS NULL AND @gms_claimed_number IS NULL THEN
    ROLLBACK;
  ELSE
    COMMIT;
  END IF;
  SELECT @gms_claimed_number AS number, v_prior AS prior, @gms_code_taken_on AS taken_on;
END`;

/**
 * MATCH_LOCK_PROCEDURE_V2 is gms_match_lock_v1 (which see) with its two SELECTs the other way
 * round: the number's live reservations with their active sessions, newest first, locked; then the
 * code failures since p_since, counted once those locks are held. A guess (or any match) that
 * waited for the candidates behind another guess counts that guess's failure, committed before it
 * let them go: guesses at one number are weighed one after another, with no second count (v1's
 * count, read before the locks were granted, had to be read again). Answers with the locked rows,
 * then the count (n, oldest). Frozen as written.
 */
const MATCH_LOCK_PROCEDURE_V2 = `CREATE PROCEDURE gms_match_lock_v2(
  IN p_number VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  IN p_now BIGINT,
  IN p_since BIGINT)
MODIFIES SQL DATA
SQL SECURITY INVOKER
BEGIN
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    RESIGNAL;
  END;
  START TRANSACTION;
  SELECT r.*, s.service AS s_service, s.builtin AS s_builtin, s.state AS s_state, s.phone_number AS s_phone_number, s.data_id AS s_data_id, s.created_at AS s_created_at, s.expires_at AS s_expires_at
    FROM reservations r JOIN sessions s ON s.id = r.session_id
    WHERE r.access_number = p_number AND r.released_at IS NULL AND r.expires_at > p_now AND s.expires_at > p_now AND s.state = 'active'
    ORDER BY r.created_at DESC, r.id DESC FOR UPDATE;
  SELECT COUNT(*) AS n, MIN(failed_at) AS oldest FROM code_failures WHERE access_number = p_number AND failed_at > p_since;
END`;

/** migrationSource hands knex the migrations above, bound to a dialect. */
export function migrationSource(dialect: Dialect): Knex.MigrationSource<Migration> {
  return {
    getMigrations: () => Promise.resolve(migrations),
    getMigrationName: (m) => m.name,
    getMigration: (m) => Promise.resolve({ ...m, up: (knex: Knex) => m.up(knex, dialect), down: (knex: Knex) => m.down(knex, dialect) }),
  };
}
