import * as net from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listen, type Listener, type RequestHandler } from "../src/listen.js";

/** A slow-header client (one that never finishes its request line and headers) is cut off. */
describe("HTTP/1.1 header timeout", () => {
  let listener: Listener;

  beforeAll(async () => {
    const handler = connectNodeAdapter({ routes: () => {} }) as RequestHandler;
    listener = await listen(handler, { host: "127.0.0.1", port: 0, headersTimeoutMs: 300 });
  });
  afterAll(async () => {
    await listener.stopAccepting();
    await listener.closeConnections(100);
  });

  it("closes a connection whose headers never complete", async () => {
    const socket = net.connect(listener.port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write("POST /gms.v1.StorageService/GetData HTTP/1.1\r\nHost: x\r\n");
    let answer = "";
    socket.on("data", (d: Buffer) => (answer += d.toString()));
    const closed = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 5_000);
      socket.once("close", () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    expect(closed).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it("serves a client that sends its headers in time", async () => {
    const res = await fetch(`http://127.0.0.1:${listener.port}/nothing-here`, { method: "POST" });
    expect(res.status).toBe(404);
  });
});
