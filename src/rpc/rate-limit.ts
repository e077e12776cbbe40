// The rate limit: token buckets per API key, per peer address and per chat's messages, one policy
// of the serving list (src/rpc/policy.ts), so it holds for every RPC on every path.
import { isIPv4, isIPv6, type BlockList } from "node:net";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Clock } from "../clock.js";
import type { Role } from "../config.js";
import { blockListOf, peerOf } from "../listen.js";
import { identityKey } from "./auth.js";
import { rateLimitedDetails } from "./errors.js";
import { peerKey } from "./peer.js";

/** Rate is one bucket's refill rate (tokens per second) and size (the burst it allows). */
export interface Rate {
  readonly rate_per_second: number;
  readonly burst: number;
}

/** RateLimits are the limits in effect (config `rate_limits`). */
export interface RateLimits {
  readonly enabled: boolean;
  /** roles: a key's bucket is its most generous role's. */
  readonly roles: Readonly<Record<Role, Rate>>;
  readonly peer: Rate;
  readonly chat_messages: Rate;
  /** exempt_peers are the addresses and CIDR ranges no per-peer bucket applies to (a trusted proxy in front, the host itself). */
  readonly exempt_peers: readonly string[];
  /** max_buckets bounds each table of buckets; the least recently used bucket makes room. */
  readonly max_buckets: number;
}

/** LimitName names the limit that refused a call, as the metrics count it. */
export type LimitName = "peer" | "key" | "chat_messages" | "streams_per_chat";

/** RateLimitOptions configure the rate limit. */
export interface RateLimitOptions {
  readonly clock: Clock;
  /**
   * limits are the limits in effect, read at every call: a reload that replaces them takes effect
   * at the next call, and the buckets (what callers have spent) are kept.
   */
  readonly limits: () => RateLimits;
  /** refused hears every call refused, by the limit that refused it (the metrics count them). */
  readonly refused?: ((limit: LimitName) => void) | undefined;
}

/** SEND_MESSAGE are the RPCs the per-chat message rate counts, by their path. */
const SEND_MESSAGE = new Set(["/gms.v1.ChatService/SendMessage", "/gms.v1.AgentService/SendMessage"]);

/**
 * Buckets is a bounded table of token buckets. A Map keeps insertion order: a bucket used is moved
 * to the end, so the first is the least recently used, the one dropped when the table is full. A
 * dropped bucket comes back full, which is what an idle one would have become anyway; a flood of
 * distinct peers can therefore only make the limit forget, never grow memory past maxBuckets.
 */
export class Buckets {
  private readonly table = new Map<string, { tokens: number; at: number }>();

  /** max is the most buckets the table holds; lowered, the least recently used go as new ones come. */
  constructor(public max: number) {}

  /** take spends a token of `key`'s bucket: 0 when it had one, else the milliseconds until it will. */
  take(key: string, { rate_per_second: rate, burst }: Rate, now: number): number {
    let bucket = this.table.get(key);
    if (bucket === undefined) {
      while (this.table.size >= this.max) this.table.delete(this.table.keys().next().value as string);
      bucket = { tokens: burst, at: now };
    } else {
      this.table.delete(key);
      // A clock set back refills nothing rather than draining the bucket.
      bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) * rate) / 1000);
      bucket.at = now;
    }
    this.table.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - bucket.tokens) / rate) * 1000);
  }

  /** size is how many buckets the table holds. */
  get size(): number {
    return this.table.size;
  }
}

/**
 * rateLimited is the refusal of a call over a limit: RESOURCE_EXHAUSTED with a gms.v1.RateLimited
 * detail (until when, in whole seconds) and a google.rpc.RetryInfo (the delay, to the millisecond).
 */
function rateLimited(what: string, waitMs: number, now: number): ConnectError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new ConnectError(`rate limit: too many ${what}; retry in ${seconds} s`, Code.ResourceExhausted, undefined, rateLimitedDetails(now + waitMs, now));
}

/**
 * createRateLimitInterceptor refuses a call when its peer's bucket, its API key's bucket or, for a
 * SendMessage, its chat's message bucket is empty. It runs after auth (it reads the caller's
 * identity) and takes its time from the server's clock. Callers without a key of their own
 * (anonymous, or every caller of an open server) share a name, so only their peer's bucket applies;
 * a delegating key's agents share the key's bucket. A call refused by a later bucket has spent its
 * token of the earlier ones: a caller that keeps calling stays refused.
 */
export function createRateLimitInterceptor(options: RateLimitOptions): Interceptor {
  const { clock, refused = () => undefined } = options;
  const peers = new Buckets(options.limits().max_buckets);
  const keys = new Buckets(peers.max);
  const chats = new Buckets(peers.max);
  // What is made of the limits (the exempt list) is made again only when a reload replaced them.
  let seen: RateLimits | undefined;
  let exempt: BlockList | undefined;
  const current = (): RateLimits => {
    const limits = options.limits();
    if (limits !== seen) {
      seen = limits;
      exempt = limits.exempt_peers.length === 0 ? undefined : blockListOf(limits.exempt_peers);
      peers.max = keys.max = chats.max = limits.max_buckets;
    }
    return limits;
  };
  const rateOf = (limits: RateLimits, roles: ReadonlySet<Role>): Rate | undefined => {
    let best: Rate | undefined;
    for (const role of roles) {
      const r = limits.roles[role];
      if (best === undefined || r.rate_per_second > best.rate_per_second) best = r;
    }
    return best;
  };
  const isExempt = (address: string): boolean => {
    if (exempt === undefined) return false;
    const v4 = address.toLowerCase().startsWith("::ffff:") ? address.slice(7) : address;
    return isIPv4(v4) ? exempt.check(v4, "ipv4") : isIPv6(address) && exempt.check(address, "ipv6");
  };
  const refuse = (limit: LimitName, what: string, wait: number, now: number) => {
    refused(limit);
    return Promise.reject(rateLimited(what, wait, now));
  };
  return (next) => (req) => {
    const limits = current();
    if (!limits.enabled) return next(req);
    const now = clock.now();
    const address = req.contextValues.get(peerKey);
    if (address !== undefined && !isExempt(address)) {
      const wait = peers.take(peerOf(address), limits.peer, now);
      if (wait > 0) return refuse("peer", "calls from this address", wait, now);
    }
    const identity = req.contextValues.get(identityKey);
    if (identity.keyed) {
      const rate = rateOf(limits, identity.roles);
      const key = identity.via ?? identity.name;
      const wait = rate === undefined ? 0 : keys.take(key, rate, now);
      if (wait > 0) return refuse("key", `calls with key ${key}`, wait, now);
    }
    if (!req.stream && SEND_MESSAGE.has(`/${req.method.parent.typeName}/${req.method.name}`)) {
      const chatId = (req.message as { chatId?: unknown }).chatId;
      if (typeof chatId === "string" && chatId !== "") {
        // One bucket per sender in the chat (its key's identity, else its address): whoever learns
        // a chat's id cannot spend the customer's or the agent's messages.
        const sender = identity.keyed ? identity.name : (address ?? identity.name);
        const wait = chats.take(`${chatId}\u0000${sender}`, limits.chat_messages, now);
        if (wait > 0) return refuse("chat_messages", "messages in this chat", wait, now);
      }
    }
    return next(req);
  };
}
