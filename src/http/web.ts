// GET /chat/ and /agent/: the customer chat widget and the agent console (web/, built by Vite into
// dist/web, `server.web.dir` for another build), served as static files on the server's port. The
// pages call the RPCs on the same origin, like any browser client; this route only hands them out.
//
// The files are read into memory when first asked for (a few hundred kilobytes, gzipped once), and
// only what was found there is served: a request is looked up in that list, so no path can reach
// outside it, whatever its dots or escapes. A page's index.html is checked for a newer build on
// each load of the page, so `npm run build` shows up without a restart; `server.web` is read per
// request, so a reload of the configuration turns the pages on or off, or serves another folder.
// Vite names the files under assets/ by their content: those are cached for a year, the rest
// revalidated with their ETag.
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { gzip as gzipCallback } from "node:zlib";
import { derived, type Config } from "../config.js";
import { PACKAGE_ROOT } from "../package-info.js";
import { pathOf, queryOf, type HttpRequest, type HttpResponse, type HttpRouteFactory } from "./routes.js";

const gzip = promisify(gzipCallback);

/** PAGES are the folders of the built site served, each at /<page>/. */
export const PAGES = ["chat", "agent"] as const;
type Page = (typeof PAGES)[number];

/** WHAT names each page in messages. */
const WHAT: Record<Page, string> = { chat: "the chat widget", agent: "the agent console" };

/** TYPES are the content types of the files served; a file of another extension is not served. */
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json; charset=utf-8",
  map: "application/json; charset=utf-8",
  webmanifest: "application/manifest+json; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  ico: "image/x-icon",
  webp: "image/webp",
  woff2: "font/woff2",
};

/** COMPRESSIBLE are the types worth gzipping. */
const COMPRESSIBLE = /^(text\/|application\/(json|manifest)|image\/svg)/;

/** The most files and bytes read from the folder: a folder that is not a built site is not read whole into memory. */
const MAX_FILES = 1_000;
const MAX_BYTES = 64 * 1024 * 1024;

/** A year: the cache lifetime of files named by their content. */
const IMMUTABLE = "public, max-age=31536000, immutable";

/** Asset is one file of the site, as served. */
interface Asset {
  body: Buffer;
  /** gzipped is the gzipped body, when smaller. */
  gzipped: Buffer | undefined;
  type: string;
  etag: string;
  /** immutable is true for files named by their content (Vite's assets/). */
  immutable: boolean;
}

/** Site is the folder as read: its files by path ("chat/index.html"), and each page index's modification time. */
interface Site {
  files: Map<string, Asset>;
  stamps: Map<Page, number | undefined>;
}

/** extensionOf is a file name's extension, lower case, without the dot. */
function extensionOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot + 1).toLowerCase();
}

/** mtimeOf is a file's modification time, undefined when it is missing. */
async function mtimeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return undefined;
  }
}

/** readSite reads the pages' folders under `dir` into memory (regular files of known types; links are not followed). */
async function readSite(dir: string): Promise<Site> {
  const files = new Map<string, Asset>();
  const stamps = new Map<Page, number | undefined>();
  let bytes = 0;
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        await walk(path);
        continue;
      }
      const type = TYPES[extensionOf(entry.name)];
      if (!entry.isFile() || type === undefined) continue;
      if (files.size >= MAX_FILES) throw new Error(`more than ${MAX_FILES} files under ${dir}`);
      const body = await readFile(join(dir, path));
      bytes += body.length;
      if (bytes > MAX_BYTES) throw new Error(`more than ${MAX_BYTES} bytes under ${dir}`);
      const hash = createHash("sha256").update(body).digest("base64url").slice(0, 27);
      const packed = COMPRESSIBLE.test(type) && body.length > 512 ? await gzip(body, { level: 9 }) : undefined;
      files.set(path, {
        body,
        gzipped: packed !== undefined && packed.length < body.length ? packed : undefined,
        type,
        etag: `"${hash}"`,
        immutable: /^[^/]+\/assets\//.test(path),
      });
    }
  };
  for (const page of PAGES) {
    stamps.set(page, await mtimeOf(join(dir, page, "index.html")));
    await walk(page);
  }
  return { files, stamps };
}

/** acceptsGzip tells whether an Accept-Encoding header takes gzip (named, with a q above 0). */
function acceptsGzip(header: string | string[] | undefined): boolean {
  if (typeof header !== "string") return false;
  for (const part of header.split(",")) {
    const [name = "", ...params] = part.split(";").map((p) => p.trim());
    if (name.toLowerCase() !== "gzip") continue;
    const q = params.find((p) => p.startsWith("q="));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}

/** matches tells whether an If-None-Match header names the ETag (weak comparison, as RFC 9110 asks for it). */
function matches(header: string | string[] | undefined, etag: string): boolean {
  if (typeof header !== "string") return false;
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag.replace(/^W\//, "") === etag;
  });
}

/** answer ends a request with a short text body. */
function answer(res: HttpResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers });
  res.end(`${text}\n`);
}

/** pageOf is the page a path is under ("/chat", "/chat/..."), or undefined. */
function pageOf(path: string): Page | undefined {
  return PAGES.find((p) => path === `/${p}` || path.startsWith(`/${p}/`));
}

/**
 * contentSecurityPolicy is a page's CSP: everything from its own origin (the page calls the RPCs
 * there), images also from data: and blob: (previews of files), no plugins, and framing by
 * `frameAncestors` (the widget: server.web.frame_ancestors; the console: nobody).
 */
function contentSecurityPolicy(frameAncestors: readonly string[]): string {
  return [
    "default-src 'self'",
    "img-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    `frame-ancestors ${frameAncestors.length === 0 ? "'none'" : frameAncestors.join(" ")}`,
  ].join("; ");
}

/** WebSettings are `server.web` as the route uses it. */
interface WebSettings {
  enabled: boolean;
  dir: string;
  policies: Record<Page, string>;
}

/** webSettings reads `server.web` (the folder resolved against the working directory, as every configured path). */
function webSettings(config: Config): WebSettings {
  const web = config.server.web;
  return {
    enabled: web.enabled,
    dir: web.dir === undefined ? join(PACKAGE_ROOT, "dist", "web") : resolve(web.dir),
    policies: { chat: contentSecurityPolicy(web.frame_ancestors), agent: contentSecurityPolicy([]) },
  };
}

/**
 * webRoute serves GET and HEAD under /chat/ and /agent/ when `server.web.enabled` (the default):
 * the files of the built pages, 404 for any other path under them, 405 for another method. With the
 * pages disabled the paths are not claimed (the RPC paths answer 404).
 */
export const webRoute: HttpRouteFactory = ({ config, log }) => {
  const settings = derived(config, webSettings);
  let site: { dir: string; read: Promise<Site> } | undefined;
  const warned = new Set<string>();

  /** current is the site in `dir` as read, read again when a page's index.html has changed since (`index`: the page being loaded) or the folder is another. */
  const current = async (dir: string, index: Page | undefined): Promise<Site> => {
    if (site !== undefined && site.dir !== dir) site = undefined;
    if (site !== undefined && index !== undefined) {
      const seen = (await site.read).stamps.get(index);
      if ((await mtimeOf(join(dir, index, "index.html"))) !== seen) site = undefined;
    }
    if (site === undefined) {
      const reading = { dir, read: readSite(dir) };
      site = reading;
      // A failed read is tried again on the next request.
      reading.read.catch(() => {
        if (site === reading) site = undefined;
      });
    }
    return site.read;
  };

  const send = (req: HttpRequest, res: HttpResponse, page: Page, asset: Asset, policies: Record<Page, string>): void => {
    const gz = asset.gzipped !== undefined && acceptsGzip(req.headers["accept-encoding"]);
    const etag = gz ? `${asset.etag.slice(0, -1)}-gz"` : asset.etag;
    const headers: Record<string, string> = {
      etag,
      "cache-control": asset.immutable ? IMMUTABLE : "no-cache",
      "x-content-type-options": "nosniff",
    };
    if (asset.gzipped !== undefined) headers["vary"] = "Accept-Encoding";
    if (asset.type.startsWith("text/html")) {
      headers["content-security-policy"] = policies[page];
      headers["referrer-policy"] = "no-referrer";
    }
    if (matches(req.headers["if-none-match"], etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const body = gz ? asset.gzipped! : asset.body;
    headers["content-type"] = asset.type;
    headers["content-length"] = String(body.length);
    if (gz) headers["content-encoding"] = "gzip";
    res.writeHead(200, headers);
    if (req.method === "HEAD") res.end();
    else res.end(body);
  };

  return (req, res) => {
    const path = pathOf(req);
    const page = pageOf(path);
    if (page === undefined) return false;
    const web = settings();
    if (!web.enabled) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      answer(res, 405, `method not allowed: GET /${page}/`, { allow: "GET, HEAD" });
      return true;
    }
    if (path === `/${page}`) {
      // Relative, so that it holds behind a proxy that serves opengms under a prefix.
      const query = queryOf(req);
      answer(res, 301, `moved to /${page}/`, { location: `${page}/${query === "" ? "" : `?${query}`}` });
      return true;
    }
    let rel: string;
    try {
      rel = decodeURIComponent(path.slice(1));
    } catch {
      answer(res, 400, "bad path: an invalid percent-encoding");
      return true;
    }
    if (rel.endsWith("/")) rel += "index.html";
    const index = rel === `${page}/index.html` ? page : undefined;
    const { dir } = web;
    current(dir, index).then(
      (s) => {
        const asset = s.files.get(rel);
        if (asset !== undefined) {
          send(req, res, page, asset, web.policies);
          return;
        }
        if (index !== undefined) {
          if (!warned.has(`${dir}\0${page}`)) {
            warned.add(`${dir}\0${page}`);
            log.warn({ event: "web", page, dir }, `${WHAT[page]} is not built (no ${page}/index.html): run \`npm run build\``);
          }
          answer(res, 503, `${WHAT[page]} is not built on this server: run \`npm run build\``);
          return;
        }
        answer(res, 404, "not found");
      },
      (e: unknown) => {
        log.error({ event: "web", dir, error: e instanceof Error ? e.message : "unknown" }, "the pages could not be read");
        answer(res, 500, "the pages could not be read");
      },
    );
    return true;
  };
};
