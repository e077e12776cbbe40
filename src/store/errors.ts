// The store's errors: what a database error means for a caller (a duplicate key, the database
// unavailable) and what of it a log may hold (describeError: never SQL or values).

/** QUERY_TIMEOUT is the code of a QueryTimeoutError. */
export const QUERY_TIMEOUT = "GMS_QUERY_TIMEOUT";

/**
 * QueryTimeoutError is a MySQL statement the database did not answer within the query timeout. The
 * connection that ran it has been closed: the server may still run the statement (and commit it, in
 * autocommit), but no later statement can queue behind it on that connection.
 */
export class QueryTimeoutError extends Error {
  override name = "QueryTimeoutError";
  readonly code = QUERY_TIMEOUT;
  constructor(ms: number) {
    super(`the database did not answer within ${ms} ms (query timeout); the connection was closed`);
  }
}

/** isDuplicateKey tells whether an error is a unique-key violation on either dialect. */
export function isDuplicateKey(e: unknown): boolean {
  const err = e as { code?: string; errno?: number };
  return err.code === "ER_DUP_ENTRY" || err.code === "SQLITE_CONSTRAINT_PRIMARYKEY" || err.code === "SQLITE_CONSTRAINT_UNIQUE";
}

/** isDeadlock tells whether MySQL chose the transaction as a deadlock's victim (it rolled it back). */
export function isDeadlock(e: unknown): boolean {
  const err = e as { code?: string; errno?: number };
  return err.code === "ER_LOCK_DEADLOCK" || err.errno === 1213;
}

/** DEADLOCK_ATTEMPTS is how many times retryDeadlocks runs a transaction the database keeps choosing as a deadlock's victim. */
const DEADLOCK_ATTEMPTS = 5;

/**
 * retryDeadlocks runs a transaction again when MySQL rolled it back as a deadlock's victim. A match
 * locks a number's reservations, then their sessions; CancelSession and ExtendSession lock the
 * session, then write its reservations: run together on one session they can deadlock, and the
 * victim, rolled back whole, is safe to run again. SQLite never deadlocks (one writer at a time).
 */
export async function retryDeadlocks<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (e) {
      if (!isDeadlock(e) || attempt >= DEADLOCK_ATTEMPTS) throw e;
      // A short random pause, so that the two do not meet again at once.
      await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
    }
  }
}

/**
 * UNAVAILABLE_CODES are the error codes that say the database cannot serve now, though the request
 * was fine: it is unreachable, the connection broke (inside a transaction too), it timed out, a
 * lock could not be had in time, an operator killed the statement, the server is going down.
 */
const UNAVAILABLE_CODES = new Set([
  // network and connection
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "ER_CON_COUNT_ERROR",
  "ER_TOO_MANY_USER_CONNECTIONS",
  QUERY_TIMEOUT,
  // the server: shutting down, killing or timing out a statement, lock waits and deadlocks
  "ER_SERVER_SHUTDOWN",
  "ER_CONNECTION_KILLED",
  "ER_QUERY_INTERRUPTED",
  "ER_STATEMENT_TIMEOUT",
  "ER_QUERY_TIMEOUT",
  "ER_CLIENT_INTERACTION_TIMEOUT",
  "ER_LOCK_WAIT_TIMEOUT",
  "ER_LOCK_DEADLOCK",
  "ER_NET_READ_INTERRUPTED",
  "ER_NET_WRITE_INTERRUPTED",
  "ER_NET_READ_ERROR",
  "ER_NET_ERROR_ON_WRITE",
]);

/**
 * isUnavailable tells whether an error means the database cannot serve now (UNAVAILABLE, for the
 * caller to retry): unreachable, a connection lost (mysql2 marks it `fatal`, and a transaction's
 * next statement on it fails "Can't add new command when connection is in closed state"), a
 * timeout (query, pool, connect), a killed statement, a lock wait, or a busy SQLite database.
 */
export function isUnavailable(e: unknown): boolean {
  if (typeof e !== "object" || e === null) return false;
  const err = e as { code?: unknown; name?: unknown; message?: unknown; fatal?: unknown };
  const code = typeof err.code === "string" ? err.code : "";
  const message = typeof err.message === "string" ? err.message : "";
  return (
    err.name === "KnexTimeoutError" ||
    err.name === "QueryTimeoutError" ||
    UNAVAILABLE_CODES.has(code) ||
    // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED, SQLITE_LOCKED_SHAREDCACHE …
    /^SQLITE_(BUSY|LOCKED)/.test(code) ||
    err.fatal === true ||
    /Connection lost|connect ECONNREFUSED|connection is in closed state|Pool is closed|pool is probably full/i.test(message)
  );
}

/** SafeError is what of an error may be logged: never its message when it could quote SQL or values. */
export interface SafeError {
  /** type is the error's class name (QueryTimeoutError, KnexTimeoutError, SqliteError, Error …). */
  type: string;
  code?: string;
  errno?: number;
  sqlState?: string;
  /** operation is the failed statement's kind and table, e.g. "insert storage_entries", when known. */
  operation?: string;
  /** message is kept only for errors that cannot carry SQL or values (not from the database). */
  message?: string;
  stack?: string;
  cause?: SafeError;
  /** summary is one line: what a log message may say about the error. */
  summary: string;
}

/** looksLikeSql tells whether a text seems to quote a statement. */
export function looksLikeSql(text: string): boolean {
  return /\b(select|insert|update|delete|replace|call|begin|set|with)\b[\s\S]*\b(from|into|set|values|where|not atomic|@)\b|\bcall\s+\w+\s*\(|\binsert\s+into\b/i.test(text);
}

/** operationOf names a statement by its verb and table, e.g. "delete storage_entries" (no values). */
function operationOf(sql: string): string | undefined {
  const verb = /^\s*(?:\/\*[\s\S]*?\*\/\s*)?(\w+)/.exec(sql)?.[1]?.toLowerCase();
  if (verb === undefined) return undefined;
  const table = /\b(?:into|from|update|call|table)\s+[`"]?([A-Za-z0-9_$]+)/i.exec(sql)?.[1];
  return table === undefined ? verb : `${verb} ${table}`;
}

/** isDatabaseError tells whether an error comes from the database or its driver (and may quote SQL or values). */
function isDatabaseError(err: Record<string, unknown>, message: string): boolean {
  const code = typeof err["code"] === "string" ? err["code"] : "";
  return (
    "sql" in err ||
    "sqlMessage" in err ||
    "sqlState" in err ||
    "errno" in err ||
    /^(ER_|SQLITE_|PROTOCOL_|HA_)/.test(code) ||
    err["name"] === "SqliteError" ||
    looksLikeSql(message)
  );
}

/**
 * describeError is what of an error a log may hold (as `err`): its type, code, errno, SQL state and
 * the failed statement's kind and table; for an error from the database or its driver never its
 * message, SQL, values or stack, which quote the statement and its values (knex prefixes the
 * message with the SQL; a MySQL message quotes a duplicate key's value). Other errors keep their
 * message and stack.
 */
export function describeError(e: unknown, depth = 0): SafeError {
  if (typeof e !== "object" || e === null) return { type: typeof e, summary: `a thrown ${typeof e}` };
  const err = e as Record<string, unknown>;
  const type = typeof err["name"] === "string" ? err["name"] : (e.constructor?.name ?? "Object");
  const message = typeof err["message"] === "string" ? err["message"] : "";
  const out: SafeError = { type, summary: type };
  if (typeof err["code"] === "string" || typeof err["code"] === "number") out.code = String(err["code"]);
  if (typeof err["errno"] === "number") out.errno = err["errno"];
  if (typeof err["sqlState"] === "string") out.sqlState = err["sqlState"];
  if (typeof err["sql"] === "string") {
    const op = operationOf(err["sql"]);
    if (op !== undefined) out.operation = op;
  } else if (looksLikeSql(message)) {
    const op = operationOf(message);
    if (op !== undefined) out.operation = op;
  }
  const fromDatabase = isDatabaseError(err, message);
  if (!fromDatabase || type === "QueryTimeoutError" || type === "KnexTimeoutError") {
    if (!looksLikeSql(message)) out.message = message.split("\n", 1)[0]?.slice(0, 300) ?? "";
    if (!fromDatabase && typeof err["stack"] === "string") out.stack = err["stack"].split("\n").slice(1).join("\n");
  }
  if (err["cause"] !== undefined && depth < 3) out.cause = describeError(err["cause"], depth + 1);
  out.summary = [type, out.code, out.errno, out.sqlState, out.operation, out.message].filter((x) => x !== undefined && x !== "").join(" ");
  return out;
}
