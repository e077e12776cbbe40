// The peer of a call: the network address a call came from, which the serving paths put in the
// call's context for the policies (the rate limit's per-peer buckets). A policy never reads it from
// a header a caller could write: connect's adapter and the lean path take it from the socket, and
// the in-process transport of the plain HTTP routes from the HTTP request the route serves.
import http2 from "node:http2";
import type http from "node:http";
import { createConnectRouter, createContextKey, createContextValues, type ConnectRouter, type ConnectRouterOptions, type Transport } from "@connectrpc/connect";
import { createUniversalHandlerClient, type UniversalHandler } from "@connectrpc/connect/protocol";
import { createTransport } from "@connectrpc/connect/protocol-connect";

/** peerKey carries the remote address of the call's connection; undefined when no path set one. */
export const peerKey = createContextKey<string | undefined>(undefined, { description: "the caller's network address" });

/**
 * localCallKey is true for a call made in process (createLocalTransport: the plain HTTP routes),
 * which no proxy stands between: its streams need no heartbeat, maximum age or proxy headers.
 */
export const localCallKey = createContextKey<boolean>(false, { description: "a call made in process" });

/**
 * remoteAddressOf is a Node request's remote address. An HTTP/2 request's own `socket` is a Proxy
 * made on first use and kept with the stream; its session's socket is made once per connection.
 */
export function remoteAddressOf(req: http.IncomingMessage | http2.Http2ServerRequest): string | undefined {
  if (req instanceof http2.Http2ServerRequest) return req.stream.session?.socket.remoteAddress;
  return req.socket.remoteAddress;
}

/**
 * PEER_HEADER is the call header a plain HTTP route names its HTTP caller's address in, for the
 * in-process transport only: createLocalTransport moves it into the call's context and drops it.
 * The network paths never read it, so a caller sending it over the network changes nothing.
 */
export const PEER_HEADER = "x-opengms-peer";

/**
 * createLocalTransport is connect's router transport (createRouterTransport) over the routes, with
 * the caller's address a route passes in PEER_HEADER put in each call's context (peerKey) as the
 * network paths put the socket's, so every policy sees the HTTP caller, not "in-process".
 */
export function createLocalTransport(routes: (router: ConnectRouter) => void, options: ConnectRouterOptions): Transport {
  const router = createConnectRouter({ ...options, connect: true });
  routes(router);
  const handlers = router.handlers.map((handler): UniversalHandler => {
    const withPeer = ((req) => {
      const contextValues = createContextValues().set(localCallKey, true);
      const peer = req.header.get(PEER_HEADER);
      if (peer !== null) {
        req.header.delete(PEER_HEADER);
        contextValues.set(peerKey, peer);
      }
      return handler({ ...req, contextValues });
    }) as UniversalHandler;
    return Object.assign(withPeer, { requestPath: handler.requestPath, method: handler.method, service: handler.service, protocolNames: handler.protocolNames, allowedMethods: handler.allowedMethods, supportedContentType: handler.supportedContentType });
  });
  return createTransport({
    httpClient: createUniversalHandlerClient(handlers),
    baseUrl: "https://in-memory",
    useBinaryFormat: true,
    interceptors: [],
    acceptCompression: [],
    sendCompression: null,
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    readMaxBytes: Number.MAX_SAFE_INTEGER,
    writeMaxBytes: Number.MAX_SAFE_INTEGER,
  });
}
