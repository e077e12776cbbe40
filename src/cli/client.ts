// The operator's commands reach a running server over the API, as any client does: the Connect
// protocol over HTTP/1.1 (createConnectTransport), which passes every proxy and load balancer, the
// API key in `Authorization: Bearer`, clients generated from the contract (gen/).
import { readFileSync } from "node:fs";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CliFailure } from "./failure.js";

/** DEFAULT_URL is the server's address when neither --url nor GMS_URL says otherwise: the default port on this host. */
export const DEFAULT_URL = "http://127.0.0.1:8080";
/** DEFAULT_TIMEOUT_SECONDS bounds each call unless --timeout says otherwise (streams are not bounded). */
export const DEFAULT_TIMEOUT_SECONDS = 10;

/** ApiOptions are the options every command that calls a server takes. */
export interface ApiOptions {
  url?: string;
  key?: string;
  keyFile?: string;
  ca?: string;
  cert?: string;
  certKey?: string;
  timeout?: string;
  json?: boolean;
}

/** Api is a server to call: its URL, clients of its services, and the options each unary call takes. */
export interface Api {
  readonly url: string;
  readonly json: boolean;
  /** client is a client of one of the server's services. */
  client<S extends DescService>(service: S): Client<S>;
  /** call are a unary call's options: the --timeout. */
  readonly call: { timeoutMs: number };
}

/** readFile reads a file the options name (a key file, a CA), or refuses it as a usage error saying why. */
function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new CliFailure(`cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? "unreadable"}`);
  }
}

/**
 * apiKeyOf is the API key to send: --key, else the first line of --key-file, else GMS_API_KEY;
 * undefined for none (health needs none; an open server needs none).
 */
function apiKeyOf(options: ApiOptions, env: NodeJS.ProcessEnv): string | undefined {
  if (options.key !== undefined) return options.key;
  if (options.keyFile !== undefined) {
    const key = readFile(options.keyFile, "key file").split("\n", 1)[0]?.trim() ?? "";
    if (key === "") throw new CliFailure(`the key file ${options.keyFile} is empty`);
    return key;
  }
  const fromEnv = env["GMS_API_KEY"];
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

/** urlOf is the server's base URL (--url, else GMS_URL, else DEFAULT_URL), refused unless http(s). */
function urlOf(options: ApiOptions, env: NodeJS.ProcessEnv): string {
  const raw = options.url ?? (env["GMS_URL"] === undefined || env["GMS_URL"] === "" ? DEFAULT_URL : env["GMS_URL"]);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliFailure(`--url: "${raw}" is not a URL (e.g. ${DEFAULT_URL})`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new CliFailure(`--url: "${raw}" is not an http:// or https:// URL`);
  if (url.username !== "" || url.password !== "") throw new CliFailure("--url: put the API key in --key, --key-file or GMS_API_KEY, not in the URL");
  return raw.replace(/\/+$/, "");
}

/** timeoutOf is --timeout in milliseconds: a positive number of seconds. */
function timeoutOf(options: ApiOptions): number {
  if (options.timeout === undefined) return DEFAULT_TIMEOUT_SECONDS * 1000;
  const s = Number(options.timeout);
  if (!Number.isFinite(s) || s <= 0 || s > 3600) throw new CliFailure(`--timeout: "${options.timeout}" is not a number of seconds between 0 and 3600`);
  return Math.round(s * 1000);
}

/** urlOfOptions is the URL a command would call, for naming it in a failure before the options are fully read. */
export function urlOfOptions(options: ApiOptions, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return urlOf(options, env);
  } catch {
    return options.url ?? env["GMS_URL"] ?? DEFAULT_URL;
  }
}

/** connectApi reads the options and the environment into a server to call; nothing is sent yet. */
export function connectApi(options: ApiOptions, env: NodeJS.ProcessEnv = process.env): Api {
  const url = urlOf(options, env);
  const key = apiKeyOf(options, env);
  const timeoutMs = timeoutOf(options);
  // TLS: a CA to trust beside the system's, and for mutual TLS (server.tls.client_ca) the client's certificate and key.
  if ((options.cert === undefined) !== (options.certKey === undefined)) throw new CliFailure("--cert and --cert-key go together (mutual TLS)");
  const tls = {
    ...(options.ca === undefined ? {} : { ca: readFile(options.ca, "CA file") }),
    ...(options.cert === undefined ? {} : { cert: readFile(options.cert, "certificate file") }),
    ...(options.certKey === undefined ? {} : { key: readFile(options.certKey, "certificate key file") }),
  };
  const interceptors: Interceptor[] =
    key === undefined
      ? []
      : [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${key}`);
            return next(req);
          },
        ];
  const transport = createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors, nodeOptions: tls });
  return { url, json: options.json === true, client: (service) => createClient(service, transport), call: { timeoutMs } };
}
