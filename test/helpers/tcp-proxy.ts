import * as net from "node:net";
import type { AddressInfo } from "node:net";

/**
 * TcpProxy forwards TCP connections to a target and fails them the two ways a database goes away:
 * - blackHole(): bytes stop flowing both ways while every socket stays open (a frozen database or a
 *   network that drops packets, TCP still up), and new connections are accepted but get nothing;
 *   restore() lets the held bytes through again, as TCP retransmission would once the network is back.
 * - cut(): every connection is destroyed and the port refuses new ones (a database that is down);
 *   reopen() listens on the same port again.
 */
export class TcpProxy {
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket | undefined }>();
  private server: net.Server | undefined;
  private holed = false;
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** start listens on a free port. */
  async start(): Promise<void> {
    await this.listen(0);
  }

  /** reopen listens again, on the same port, after cut(). */
  async reopen(): Promise<void> {
    if (this.server !== undefined) throw new Error("the proxy is listening: reopen() follows cut()");
    await this.listen(this.port);
  }

  private async listen(port: number): Promise<void> {
    const server = net.createServer((client) => {
      const pair: { client: net.Socket; upstream: net.Socket | undefined } = { client, upstream: undefined };
      this.pairs.add(pair);
      client.pause();
      const end = () => {
        client.destroy();
        pair.upstream?.destroy();
        this.pairs.delete(pair);
      };
      client.on("error", end);
      client.on("close", end);
      if (!this.holed) this.connect(pair, end);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  private connect(pair: { client: net.Socket; upstream: net.Socket | undefined }, end: () => void): void {
    const upstream = net.connect(this.targetPort, this.targetHost);
    pair.upstream = upstream;
    upstream.on("error", end);
    upstream.on("close", end);
    pair.client.pipe(upstream);
    upstream.pipe(pair.client);
    pair.client.resume();
  }

  /** blackHole stops every byte, both ways, on every connection, and holds new ones silent. */
  blackHole(): void {
    this.holed = true;
    for (const { client, upstream } of this.pairs) {
      // Unpiped, so that a drain cannot set a source flowing again.
      if (upstream !== undefined) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        upstream.pause();
      }
      client.pause();
    }
  }

  /** restore lets bytes flow again, the held ones first. */
  restore(): void {
    this.holed = false;
    for (const pair of this.pairs) {
      if (pair.upstream === undefined) {
        const end = () => {
          pair.client.destroy();
          pair.upstream?.destroy();
          this.pairs.delete(pair);
        };
        this.connect(pair, end);
      } else {
        pair.client.pipe(pair.upstream);
        pair.upstream.pipe(pair.client);
      }
    }
  }

  /** cut destroys every connection, both ways, and stops listening: the port refuses connections until reopen(). */
  async cut(): Promise<void> {
    this.holed = false;
    await this.close();
  }

  /** connections is the number of client connections the proxy holds. */
  get connections(): number {
    return this.pairs.size;
  }

  /** close destroys every connection and stops listening. */
  async close(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream?.destroy();
    }
    this.pairs.clear();
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
