import { randomFillSync } from "node:crypto";
import { v7 } from "uuid";

/** POOL_IDS is how many ids' worth of random bytes one call to the RNG fetches. */
const POOL_IDS = 256;
const pool = Buffer.alloc(16 * POOL_IDS);
let used = POOL_IDS;

/**
 * randomForId is 16 fresh bytes from a cryptographic RNG, read from a pool refilled 256 ids at a
 * time, as node:crypto's randomUUID does: one RNG call per id cost more than the rest of the id.
 * The bytes are a view of the pool, good until the next call.
 */
function randomForId(): Uint8Array {
  if (used === POOL_IDS) {
    randomFillSync(pool);
    used = 0;
  }
  return pool.subarray(16 * used, 16 * ++used);
}

/**
 * newId is the id of a row the rules create (a session, a data record, a chat, a participant, a
 * file): a UUID version 7, whose first 48 bits are the time in milliseconds. Rows created one after
 * the other then sit side by side in the table's primary key, where MySQL (whose rows live in that
 * index) appends them to its last page instead of writing into a random page of the whole table
 * for each (5-10% of an allocation's database CPU here, more once a table outgrows memory). The
 * rest is 73 bits from a cryptographic RNG (given `random`, uuid's v7 does not count up within a
 * millisecond), so an id, which callers use to name what they hold, stays out of reach of guessing.
 */
export const newId = (): string => v7({ random: randomForId() });
