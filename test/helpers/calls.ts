import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { expect } from "vitest";

/** bearer is a client interceptor that sends an API key as `Authorization: Bearer <key>`. */
export function bearer(key: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
}

/** errorOf awaits a call that must fail and returns its error as a ConnectError. */
export async function errorOf(call: Promise<unknown>): Promise<ConnectError> {
  const outcome = await call.then(
    (value) => ({ ok: true as const, value }),
    (e: unknown) => ({ ok: false as const, error: e }),
  );
  expect(outcome.ok, "the call should have failed").toBe(false);
  return ConnectError.from(outcome.ok ? undefined : outcome.error);
}

/**
 * waitFor polls `probe` until it returns something other than undefined or false, and fails after
 * `timeoutMs`: a bounded wait, never an assertion about speed.
 */
export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** freePort asks the system for a port that is free now (for a child process that must be told one). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** connectOutcome tries a TCP connection: "connected", or the error code it failed with (e.g. ECONNREFUSED). */
export function connectOutcome(port: number, host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (e: NodeJS.ErrnoException) => {
      socket.destroy();
      resolve(e.code ?? e.message);
    });
  });
}
