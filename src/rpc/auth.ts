import { createHash, timingSafeEqual } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { ROLES, type Role } from "../config.js";

/** Identity is who is calling: the API key's name and roles, or an anonymous public caller. */
export interface Identity {
  /** name is the API key's configured name; "anonymous" without a key; "open" when no keys are configured. */
  readonly name: string;
  /** roles are the caller's roles. */
  readonly roles: ReadonlySet<Role>;
  /**
   * keyed tells whether the caller presented an API key of its own. Callers without one (anonymous,
   * or every caller of an open server) share a name, so nothing may be scoped to their name alone.
   */
  readonly keyed: boolean;
  /**
   * via is the key a delegated agent called through (a key with acts_for_agents): the identity's
   * name is then "<key>/<agent id>", so agents of different keys never meet, and logs name both.
   */
  readonly via?: string;
  /** supervisor marks a delegated agent its key vouches is a supervisor: it may read and act in every chat, as an admin. */
  readonly supervisor?: boolean;
}

/** identityKey carries the caller's Identity from the auth interceptor to the handlers. */
export const identityKey = createContextKey<Identity>({ name: "anonymous", roles: new Set(), keyed: false }, { description: "caller identity" });

/** callerOf returns the identity the auth interceptor established for this call. */
export function callerOf(ctx: HandlerContext): Identity {
  return ctx.values.get(identityKey);
}

/** hasRole tells whether the caller holds one of the roles. */
export function hasRole(identity: Identity, ...roles: Role[]): boolean {
  return roles.some((r) => identity.roles.has(r));
}

/** PUBLIC marks an RPC anyone may call without a key (health, reflection). */
export const PUBLIC = "public" as const;
/** Access is who may call one RPC: a list of roles (admin is always added) or PUBLIC. */
export type Access = readonly Role[] | typeof PUBLIC;
/** AccessPolicy maps an RPC's path ("/gms.v1.StorageService/CreateData") to who may call it. */
export type AccessPolicy = ReadonlyMap<string, Access>;

/** ApiKey is one configured key: plain `key` or its `key_sha256`. */
export interface ApiKey {
  name: string;
  key?: string | undefined;
  key_sha256?: string | undefined;
  roles: readonly Role[];
  acts_for_agents?: boolean | undefined;
  agent_supervisors?: boolean | undefined;
}

/** AuthOptions configure the access decision (createAuthorizer). */
export interface AuthOptions {
  apiKeys: readonly ApiKey[];
  publicRoles: readonly Role[];
  policy: AccessPolicy;
}

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest();

/**
 * Authorizer decides who calls an RPC, from its method and the request's `authorization` header:
 * the caller's Identity, or undefined for a PUBLIC RPC (the caller stays anonymous). A refusal is
 * thrown as UNAUTHENTICATED or PERMISSION_DENIED. The auth interceptor asks it, for every call on
 * either path (src/rpc/policy.ts).
 */
export type Authorizer = (method: DescMethod, header: RequestHeader) => Identity | undefined;

/** RequestHeader is what the authorizer reads of a request's headers. */
export interface RequestHeader {
  get(name: string): string | null;
}

/** AGENT_ID is what a `gms-agent-id` may be: 1 to 128 letters, digits, ".", "_", "@" or "-". */
const AGENT_ID = /^[A-Za-z0-9._@-]{1,128}$/;

/** KnownKey is a configured key as the authorizer compares it. */
interface KnownKey {
  name: string;
  digest: Buffer;
  roles: ReadonlySet<Role>;
}

/**
 * identifier is who an `authorization` header names: the key's identity, the anonymous caller
 * without one (holding the public roles), or undefined for a key that is no configured one.
 */
function identifier(keys: readonly KnownKey[], publicRoles: readonly Role[]): (header: string | null) => Identity | undefined {
  const anonymous: Identity = { name: "anonymous", roles: new Set(publicRoles), keyed: false };
  return (header) => {
    if (header === null) return anonymous;
    const presented = presentedKey(header);
    if (presented === undefined) return undefined;
    const digest = sha256(presented.key);
    let found: Identity | undefined;
    // Every key is compared, found or not, so timing says nothing about which one matched.
    for (const k of keys) {
      if (timingSafeEqual(digest, k.digest) && found === undefined) found = { name: k.name, roles: k.roles, keyed: true };
    }
    // Basic's user part must name the key it presents: GMS checked a user and a password, and an
    // app configured with the wrong user is told so rather than let in under another name.
    if (found !== undefined && presented.user !== undefined && presented.user !== found.name) return undefined;
    return found;
  };
}

/**
 * createRoleCheck tells whether an `authorization` header presents a configured key with `role` (or admin),
 * for the plain HTTP endpoints that are no RPC (/metrics). With no keys configured, every caller
 * holds every role, as for the RPCs.
 */
export function createRoleCheck(apiKeys: readonly ApiKey[], publicRoles: readonly Role[]): (authorization: string | null, role: Role) => boolean {
  if (apiKeys.length === 0) return () => true;
  const identify = identifier(apiKeys.map(knownKey), publicRoles);
  return (authorization, role) => {
    const identity = identify(authorization);
    return identity !== undefined && hasRole(identity, role, "admin");
  };
}

const knownKey = (k: ApiKey): KnownKey => ({ name: k.name, digest: k.key !== undefined ? sha256(k.key) : Buffer.from(k.key_sha256 ?? "", "hex"), roles: new Set(k.roles) });

/**
 * createAuthorizer authenticates the presented key, `Bearer <key>` or HTTP Basic with the key as
 * the password and its name as the user (compared in constant time against every configured key),
 * and enforces the RPC's access. With no keys configured every caller holds every role (an open
 * server, warned about at start).
 */
export function createAuthorizer(options: AuthOptions): Authorizer {
  const keys = options.apiKeys.map((k) => ({ ...knownKey(k), actsForAgents: k.acts_for_agents === true, agentSupervisors: k.agent_supervisors === true }));
  const delegates = new Set(keys.filter((k) => k.actsForAgents).map((k) => k.name));
  const supervising = new Set(keys.filter((k) => k.agentSupervisors).map((k) => k.name));
  const open = keys.length === 0;
  const everyRole: Identity = { name: "open", roles: new Set(ROLES), keyed: false };
  const identify = identifier(keys, options.publicRoles);

  /**
   * actingFor is the identity of the agent a delegating key names (gms-agent-id): "<key>/<agent>",
   * a supervisor if the key may say so and says so. A key that does not act for agents may not name
   * one; one that does must, for every agent RPC.
   */
  function actingFor(identity: Identity, header: RequestHeader, access: readonly Role[], method: DescMethod): Identity {
    const agent = header.get("gms-agent-id");
    const delegating = identity.keyed && delegates.has(identity.name);
    if (agent === null) {
      if (delegating && access.includes("agent")) throw new CallerRefused(`${method.name}: key ${identity.name} acts for agents: name the agent in gms-agent-id`, Code.Unauthenticated, identity);
      return identity;
    }
    if (!delegating) throw new CallerRefused(`${identity.name} may not act for agents (gms-agent-id needs a key with acts_for_agents)`, Code.PermissionDenied, identity);
    if (!AGENT_ID.test(agent)) throw new CallerRefused("gms-agent-id: 1 to 128 letters, digits, '.', '_', '@' or '-'", Code.InvalidArgument, identity);
    const supervisor = header.get("gms-agent-supervisor") === "true";
    if (supervisor && !supervising.has(identity.name)) throw new CallerRefused(`${identity.name} may not name supervisors (agent_supervisors)`, Code.PermissionDenied, identity);
    return { name: `${identity.name}/${agent}`, roles: identity.roles, keyed: true, via: identity.name, supervisor };
  }

  return (method, header) => {
    const access = options.policy.get(`/${method.parent.typeName}/${method.name}`);
    if (access === undefined) throw new ConnectError(`${method.name} is not open to callers`, Code.PermissionDenied);
    if (access === PUBLIC) return undefined;
    let identity: Identity;
    if (open) {
      identity = everyRole;
    } else {
      const found = identify(header.get("authorization"));
      if (found === undefined) throw new CallerRefused("invalid API key", Code.Unauthenticated, UNKNOWN_KEY);
      identity = found;
    }
    if (!access.some((r) => identity.roles.has(r)) && !identity.roles.has("admin")) {
      if (!identity.keyed) throw new CallerRefused(`${method.name} needs an API key`, Code.Unauthenticated, identity);
      throw new CallerRefused(`${identity.name} may not call ${method.name}`, Code.PermissionDenied, identity);
    }
    return open ? identity : actingFor(identity, header, access, method);
  };
}

/** BASE64 is a standard base64 text (RFC 4648 section 4, padded or not), what Basic credentials are. */
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * presentedKey reads the API key an `authorization` header presents: `Bearer <key>`, or `Basic
 * base64(<user>:<key>)` (RFC 7617; GMS's HTTP Basic authentication, the key as the password and
 * the key's configured name as the user). Anything else, or credentials that do not decode to
 * UTF-8 text with a colon, is undefined (UNAUTHENTICATED).
 */
export function presentedKey(header: string): { key: string; user?: string } | undefined {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (bearer !== null) return { key: bearer[1] ?? "" };
  const basic = /^Basic\s+(\S+)\s*$/i.exec(header);
  if (basic === null || !BASE64.test(basic[1] ?? "")) return undefined;
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(basic[1] ?? "", "base64"));
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  const key = decoded.slice(colon + 1);
  return key === "" ? undefined : { key, user: decoded.slice(0, colon) };
}

/** UNKNOWN_KEY is the caller a log names when a presented API key matched none: "unknown-key". */
const UNKNOWN_KEY: Identity = { name: "unknown-key", roles: new Set(), keyed: false };

/** CallerRefused is the authorizer's refusal, with the caller it refused (for the call's log line). */
class CallerRefused extends ConnectError {
  constructor(
    message: string,
    code: Code,
    readonly caller: Identity,
  ) {
    super(message, code);
  }
}

/**
 * createAuthInterceptor puts the caller's Identity, as the Authorizer (or one built from `auth`)
 * decides, in the context of every call it lets through.
 */
export function createAuthInterceptor(auth: AuthOptions | Authorizer): Interceptor {
  const authorize = typeof auth === "function" ? auth : createAuthorizer(auth);
  return (next) => (req) => {
    let identity: Identity | undefined;
    try {
      identity = authorize(req.method, req.header);
    } catch (e) {
      // The log line of a refused call names the caller that was refused.
      if (e instanceof CallerRefused) req.contextValues.set(identityKey, e.caller);
      return Promise.reject(e as Error);
    }
    if (identity !== undefined) req.contextValues.set(identityKey, identity);
    return next(req);
  };
}
