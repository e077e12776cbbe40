/**
 * @opengms/client in Node (the "node" export condition): the browsers' entry plus the "grpc"
 * transport (HTTP/2, @connectrpc/connect-node, an optional peer dependency loaded when a "grpc"
 * client makes its first call). "connect" and "grpc-web" use fetch, as in browsers.
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { buildTransport, clientOver, type ClientOptions, type GmsClient } from "./client.js";

/** grpcTransport is connect-node's gRPC transport, imported on first use. */
function grpcTransport(baseUrl: string, interceptors: Interceptor[]): Transport {
  let made: Promise<Transport> | undefined;
  const transport = () =>
    (made ??= import("@connectrpc/connect-node").then(
      (m) => m.createGrpcTransport({ baseUrl, interceptors }),
      (e: unknown) => {
        made = undefined;
        throw new Error('the "grpc" transport needs @connectrpc/connect-node 2.1.2: npm install @connectrpc/connect-node@2.1.2', { cause: e });
      },
    ));
  return {
    unary: async (...args) => (await transport()).unary(...args),
    stream: async (...args) => (await transport()).stream(...args),
  };
}

/**
 * createClient connects to opengms: the typed clients of the gms.v1 services over one transport
 * ("connect" by default, "grpc-web", or "grpc" over HTTP/2), sending the API key and agent identity
 * of the options on every call, every failure a GmsError.
 */
export function createClient(options: ClientOptions): GmsClient {
  return clientOver(buildTransport(options, grpcTransport));
}

/** createTransport is createClient's transport alone, for the chat helpers (`{ transport }`). */
export function createTransport(options: ClientOptions): Transport {
  return buildTransport(options, grpcTransport);
}

export * from "./exports.js";
