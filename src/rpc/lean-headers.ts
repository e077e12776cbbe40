// Headers for the lean path's calls (src/rpc/lean-path.ts), as policies see them: the request's, read
// from Node's header object until a policy changes them (NodeHeaders), and the response's headers and
// trailers, which a policy may set (ResponseHeaders). Both behave as the Fetch API's Headers, which
// connect gives policies, for what a policy does with them; they exist because an undici Headers
// costs a HeadersList and a Map as soon as it is made, per call and per open stream, mostly to stay
// empty (a stream's trailers) or to hold one entry (x-request-id).
import type * as http from "node:http";

/**
 * ResponseHeaders are a lean call's response headers or trailers: a Headers as connect gives
 * policies (names case-insensitive, iterated in sorted order, appended values joined with ", "),
 * backed by a Map made on the first write, so a stream's empty trailers cost one small object.
 */
export class ResponseHeaders implements Headers {
  #map: Map<string, string> | undefined;

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    const map = (this.#map ??= new Map<string, string>());
    const was = map.get(key);
    map.set(key, was === undefined ? value : `${was}, ${value}`);
  }

  delete(name: string): void {
    this.#map?.delete(name.toLowerCase());
  }

  get(name: string): string | null {
    return this.#map?.get(name.toLowerCase()) ?? null;
  }

  getSetCookie(): string[] {
    const cookie = this.get("set-cookie");
    return cookie === null ? [] : [cookie];
  }

  has(name: string): boolean {
    return this.#map?.has(name.toLowerCase()) ?? false;
  }

  set(name: string, value: string): void {
    (this.#map ??= new Map<string, string>()).set(name.toLowerCase(), value);
  }

  /** empty tells whether no header is set (the lean path's fast check before it copies them). */
  get empty(): boolean {
    return this.#map === undefined || this.#map.size === 0;
  }

  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this);
  }

  entries(): ReturnType<Headers["entries"]> {
    const map = this.#map;
    const sorted = map === undefined ? [] : map.size < 2 ? [...map] : [...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return sorted[Symbol.iterator]() as ReturnType<Headers["entries"]>;
  }

  keys(): ReturnType<Headers["keys"]> {
    return [...this.entries()].map(([key]) => key)[Symbol.iterator]() as ReturnType<Headers["keys"]>;
  }

  values(): ReturnType<Headers["values"]> {
    return [...this.entries()].map(([, value]) => value)[Symbol.iterator]() as ReturnType<Headers["values"]>;
  }

  [Symbol.iterator](): ReturnType<Headers["entries"]> {
    return this.entries();
  }
}

/** responseHeaders are new ResponseHeaders, typed as the Headers a response carries. */
export function responseHeaders(): Headers {
  return new ResponseHeaders();
}

/**
 * NodeHeaders are a request's headers as policies read them (a Headers, as connect gives them),
 * read from Node's header object until a policy changes or lists them: then they are copied in,
 * pseudo-headers left out, as connect-node copies them for every call. Reading a header or two
 * (auth reads `authorization`) copies nothing, and makes nothing but this object.
 */
export class NodeHeaders extends ResponseHeaders {
  #node: http.IncomingHttpHeaders | undefined;

  constructor(node: http.IncomingHttpHeaders) {
    super();
    this.#node = node;
  }

  /** copied moves Node's headers in, once. */
  #copied(): void {
    const node = this.#node;
    if (node === undefined) return;
    this.#node = undefined;
    for (const name in node) {
      const value = node[name];
      if (name.startsWith(":") || value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) super.append(name, v);
      else super.append(name, String(value));
    }
  }

  override get(name: string): string | null {
    const node = this.#node;
    // A pseudo-header is no header.
    if (node === undefined || name.startsWith(":")) return super.get(name);
    const value = node[name.toLowerCase()];
    return value === undefined ? null : Array.isArray(value) ? value.join(", ") : String(value);
  }

  override has(name: string): boolean {
    return this.get(name) !== null;
  }

  override get empty(): boolean {
    this.#copied();
    return super.empty;
  }

  override append(name: string, value: string): void {
    this.#copied();
    super.append(name, value);
  }

  override delete(name: string): void {
    this.#copied();
    super.delete(name);
  }

  override set(name: string, value: string): void {
    this.#copied();
    super.set(name, value);
  }

  override entries(): ReturnType<Headers["entries"]> {
    this.#copied();
    return super.entries();
  }
}
