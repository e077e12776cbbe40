// bench/grpc-load.ts is a lean gRPC load generator: unary calls written straight onto node:http2
// streams with protobuf-es, as ghz or h2load would send them. A full client (connect-node) costs
// about as much CPU per call as the server does; on a two-core machine that shares its cores with
// the server and the database, that would measure the client as much as the server.
import http2 from "node:http2";
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

/** GrpcCallError is a call that ended with a grpc-status other than OK. */
export class GrpcCallError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(`gRPC status ${code}: ${message}`);
  }
}

/** GrpcLoadClient sends unary gRPC calls over a few HTTP/2 connections, round robin. */
export interface GrpcLoadClient {
  unary<I extends DescMessage, O extends DescMessage>(path: string, input: I, output: O, message: MessageShape<I>): Promise<MessageShape<O>>;
  close(): void;
}

/** frame is a gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length, bytes. */
export function frame(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = 0;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/**
 * createGrpcLoadClient opens `connections` HTTP/2 connections to `url`. `headers` go on every call
 * (e.g. authorization).
 */
export function createGrpcLoadClient(url: string, connections: number, headers: Record<string, string> = {}): GrpcLoadClient {
  const sessions = Array.from({ length: connections }, () => http2.connect(url));
  for (const s of sessions) s.on("error", () => undefined);
  let next = 0;
  return {
    unary(path, input, output, message) {
      const session = sessions[next++ % sessions.length];
      const body = frame(toBinary(input, message));
      return new Promise((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", ...headers });
        const chunks: Buffer[] = [];
        let status: string | undefined;
        let statusMessage = "";
        const settle = (h: http2.IncomingHttpHeaders) => {
          if (h["grpc-status"] !== undefined) {
            status = String(h["grpc-status"]);
            statusMessage = decodeURIComponent(String(h["grpc-message"] ?? ""));
          }
        };
        // A call that fails before any message carries its status in the headers (trailers-only).
        stream.on("response", settle);
        stream.on("trailers", settle);
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("error", reject);
        stream.on("end", () => {
          if (status !== "0") {
            reject(new GrpcCallError(Number(status ?? 2), status === undefined ? "no grpc-status" : statusMessage));
            return;
          }
          const all = Buffer.concat(chunks);
          if (all.length < 5 || all[0] !== 0) {
            reject(new Error(`a reply of ${all.length} bytes is not one uncompressed gRPC message`));
            return;
          }
          resolve(fromBinary(output, all.subarray(5, 5 + all.readUInt32BE(1))));
        });
        stream.end(body);
      });
    },
    close() {
      for (const s of sessions) s.close();
    },
  };
}
