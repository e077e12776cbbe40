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
export type Authorizer = (method: DescMethod, authorization: string | null) => Identity | undefined;

/**
 * createAuthorizer authenticates the bearer key (compared in constant time against every
 * configured key) and enforces the RPC's access. With no keys configured every caller holds every
 * role (an open server, warned about at start).
 */
export function createAuthorizer(options: AuthOptions): Authorizer {
  const keys = options.apiKeys.map((k) => ({
    name: k.name,
    digest: k.key !== undefined ? sha256(k.key) : Buffer.from(k.key_sha256 ?? "", "hex"),
    roles: new Set(k.roles),
  }));
  const open = keys.length === 0;
  const everyRole: Identity = { name: "open", roles: new Set(ROLES), keyed: false };
  const anonymous: Identity = { name: "anonymous", roles: new Set(options.publicRoles), keyed: false };

  function identify(header: string | null): Identity | undefined {
    if (header === null) return anonymous;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match === null) return undefined;
    const presented = sha256(match[1] ?? "");
    let found: Identity | undefined;
    // Every key is compared, found or not, so timing says nothing about which one matched.
    for (const k of keys) {
      if (timingSafeEqual(presented, k.digest) && found === undefined) found = { name: k.name, roles: k.roles, keyed: true };
    }
    return found;
  }

  return (method, authorization) => {
    const access = options.policy.get(`/${method.parent.typeName}/${method.name}`);
    if (access === undefined) throw new ConnectError(`${method.name} is not open to callers`, Code.PermissionDenied);
    if (access === PUBLIC) return undefined;
    let identity: Identity;
    if (open) {
      identity = everyRole;
    } else {
      const found = identify(authorization);
      if (found === undefined) throw new ConnectError("invalid API key", Code.Unauthenticated);
      identity = found;
    }
    if (!access.some((r) => identity.roles.has(r)) && !identity.roles.has("admin")) {
      if (identity === anonymous) throw new ConnectError(`${method.name} needs an API key`, Code.Unauthenticated);
      throw new ConnectError(`${identity.name} may not call ${method.name}`, Code.PermissionDenied);
    }
    return identity;
  };
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
      identity = authorize(req.method, req.header.get("authorization"));
    } catch (e) {
      return Promise.reject(e as Error);
    }
    if (identity !== undefined) req.contextValues.set(identityKey, identity);
    return next(req);
  };
}
