/**
 * The client: one transport to an opengms server (Connect, gRPC-Web or gRPC), the caller's
 * credentials on every call, every failure as a GmsError, and the typed clients of the gms.v1
 * services over it.
 */
import { createClient as createServiceClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { toGmsError } from "./errors.js";
import { AccessService } from "./gen/gms/v1/access_pb.js";
import { AdminService } from "./gen/gms/v1/admin_pb.js";
import { AgentService } from "./gen/gms/v1/agent_pb.js";
import { ChatService } from "./gen/gms/v1/chat_pb.js";
import { SessionService } from "./gen/gms/v1/session_pb.js";
import { StorageService } from "./gen/gms/v1/storage_pb.js";

/** TransportKind names the protocols: "connect" (browsers' default), "grpc-web", and "grpc" (Node only, HTTP/2). */
export type TransportKind = "connect" | "grpc-web" | "grpc";

/** AgentIdentity names the agent a console acts for, through a key with `acts_for_agents`. */
export interface AgentIdentity {
  /** id is sent as `gms-agent-id` on every call (1–128 letters, digits, `.`, `_`, `@`, `-`). */
  id: string;
  /** supervisor sends `gms-agent-supervisor: true` (a key with `agent_supervisors`). */
  supervisor?: boolean;
}

/** ClientOptions say where opengms is and how to call it. */
export interface ClientOptions {
  /** baseUrl is the server's address, e.g. "https://gms.example.com"; "" in a page served by opengms (its own origin). */
  baseUrl: string;
  /** apiKey is sent as `Authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** agent names the agent a key with `acts_for_agents` acts for. */
  agent?: AgentIdentity;
  /** transport is the protocol (default "connect"), or a connect Transport of the caller's own. */
  transport?: TransportKind | Transport;
  /** useBinaryFormat sends protobuf instead of JSON over Connect (default false: JSON, readable in a browser's network tab). */
  useBinaryFormat?: boolean;
  /** interceptors run on every call, after the client's own (credentials, typed errors). */
  interceptors?: Interceptor[];
  /** fetch replaces globalThis.fetch for the Connect and gRPC-Web transports. */
  fetch?: typeof globalThis.fetch;
}

/** GmsClient holds the typed clients of the gms.v1 services over one transport. */
export interface GmsClient {
  /** transport is what every call goes through (the chat helpers use it directly). */
  readonly transport: Transport;
  readonly access: Client<typeof AccessService>;
  readonly session: Client<typeof SessionService>;
  readonly chat: Client<typeof ChatService>;
  readonly agent: Client<typeof AgentService>;
  readonly storage: Client<typeof StorageService>;
  readonly admin: Client<typeof AdminService>;
}

/** GrpcTransportFactory makes the "grpc" transport; only the Node entry has one. */
export type GrpcTransportFactory = (baseUrl: string, interceptors: Interceptor[]) => Transport;

/**
 * clientInterceptors are the client's own: typed errors outermost (so that an error from any later
 * interceptor or from the network comes out typed), then the credentials, then the caller's.
 */
export function clientInterceptors(options: ClientOptions): Interceptor[] {
  const headers: [string, string][] = [];
  if (options.apiKey !== undefined && options.apiKey !== "") headers.push(["authorization", `Bearer ${options.apiKey}`]);
  if (options.agent !== undefined) {
    headers.push(["gms-agent-id", options.agent.id]);
    if (options.agent.supervisor === true) headers.push(["gms-agent-supervisor", "true"]);
  }
  const credentials: Interceptor = (next) => (req) => {
    for (const [name, value] of headers) req.header.set(name, value);
    return next(req);
  };
  return [typedErrors, ...(headers.length > 0 ? [credentials] : []), ...(options.interceptors ?? [])];
}

/** typedErrors makes every failure of a call a GmsError, a stream's included. */
const typedErrors: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    return { ...res, message: typedStream(res.message) };
  } catch (e) {
    throw toGmsError(e);
  }
};

async function* typedStream<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (e) {
    throw toGmsError(e);
  }
}

/** baseUrlOf resolves "" (or a path) against the page's origin in a browser. */
function baseUrlOf(baseUrl: string): string {
  const location = (globalThis as { location?: { origin?: string } }).location;
  if (/^https?:\/\//i.test(baseUrl)) return baseUrl.replace(/\/+$/, "");
  if (location?.origin !== undefined) return `${location.origin}${baseUrl.replace(/\/+$/, "")}`;
  throw new TypeError(`baseUrl must be an http(s) URL outside a browser page, not "${baseUrl}"`);
}

/**
 * buildTransport makes the transport the options ask for; "grpc" needs a factory (the Node entry's).
 * A Transport given in the options is used as it is: its own interceptors apply, not these.
 */
export function buildTransport(options: ClientOptions, grpc: GrpcTransportFactory | undefined): Transport {
  const kind = options.transport ?? "connect";
  if (typeof kind !== "string") return kind;
  const baseUrl = baseUrlOf(options.baseUrl);
  const interceptors = clientInterceptors(options);
  switch (kind) {
    case "connect":
      return createConnectTransport({ baseUrl, interceptors, useBinaryFormat: options.useBinaryFormat ?? false, fetch: options.fetch });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, interceptors, fetch: options.fetch });
    case "grpc":
      if (grpc === undefined) throw new TypeError('the "grpc" transport needs HTTP/2, which browsers do not offer to pages: use "connect" or "grpc-web"');
      return grpc(baseUrl, interceptors);
    default:
      throw new TypeError(`unknown transport "${String(kind)}": "connect", "grpc-web" or "grpc"`);
  }
}

/** clientOver gives the typed service clients over a transport. */
export function clientOver(transport: Transport): GmsClient {
  return {
    transport,
    access: createServiceClient(AccessService, transport),
    session: createServiceClient(SessionService, transport),
    chat: createServiceClient(ChatService, transport),
    agent: createServiceClient(AgentService, transport),
    storage: createServiceClient(StorageService, transport),
    admin: createServiceClient(AdminService, transport),
  };
}
