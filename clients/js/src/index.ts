/**
 * @opengms/client: typed clients for opengms's gms.v1 services over Connect, gRPC-Web and (in Node)
 * gRPC; chat sessions for customers and agents that resume without loss or duplicates; typed errors.
 * This entry is the browsers' (and any bundler's without the "node" condition); Node resolves
 * node.ts, which adds the "grpc" transport.
 */
import { buildTransport, clientOver, type ClientOptions, type GmsClient } from "./client.js";

/**
 * createClient connects to opengms: the typed clients of the gms.v1 services over one transport
 * ("connect" by default, or "grpc-web"; "grpc" in Node), sending the API key and agent identity of
 * the options on every call, every failure a GmsError.
 */
export function createClient(options: ClientOptions): GmsClient {
  return clientOver(buildTransport(options, undefined));
}

/**
 * createTransport is createClient's transport alone: what the chat helpers need (they take
 * `{ transport }`). A page that uses only CustomerChat bundles only ChatService's descriptors.
 */
export function createTransport(options: ClientOptions) {
  return buildTransport(options, undefined);
}

export * from "./exports.js";
