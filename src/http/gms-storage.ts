// GMS's Storage API over HTTP (/genesys/1/storage/...), as GMS apps call it, on StorageService's
// RPCs through the serving policy (docs/gms-migration.md, "Storage", has the table):
//   POST   /genesys/1/storage/{ttl}                      CreateData           → {"id": ...}
//   POST   /genesys/1/storage/custom/{customId}/{ttl}    CreateData (custom)  → {"id": customId}   (gms_user header)
//   GET    /genesys/1/storage/{id}                       GetData              → {"key": "text" | {filename, contentType, size}}
//   GET    /genesys/1/storage/{id}/{key}                 GetDataEntry         → the text, or the file's bytes with its type
//   POST   /genesys/1/storage/{id}/{ttl}                 UpdateData           → {"id": id}
//   DELETE /genesys/1/storage/{id}                       DeleteData           → {}
// An {id} is a record's id or, with the `gms_user` header, that user's custom id (FindCustomData).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { StorageService } from "../../gen/gms/v1/storage_pb.js";
import type { Value } from "../../gen/gms/v1/value_pb.js";
import { derived } from "../config.js";
import { readForm, storageFormLimits } from "./form.js";
import { attachment, formValues, gmsRoute, sendBytes, sendJson, valuesJson, type GmsCall } from "./gms-http.js";
import type { HttpRequest, HttpResponse, HttpRouteFactory } from "./routes.js";

const PREFIX = "/genesys/1/storage/";

/** GMS_DEFAULT_TTL_SECONDS is what GMS makes of a ttl that is not a positive number of seconds: 30. */
const GMS_DEFAULT_TTL_SECONDS = 30n;

/**
 * ttlOf reads a path's {ttl} as GMS does: a positive whole number of seconds, anything else 30 s.
 * A number too large for a time to live is passed on, for the RPC to refuse (400).
 */
function ttlOf(segment: string): bigint {
  if (!/^[0-9]{1,15}$/.test(segment)) return GMS_DEFAULT_TTL_SECONDS;
  const ttl = BigInt(segment);
  return ttl > 0n ? ttl : GMS_DEFAULT_TTL_SECONDS;
}

/** Reply is what a request is answered with: a JSON body, or one stored value as itself. */
type Reply = { json: unknown } | { value: Value | undefined };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** answer sends a reply: JSON, or one entry's value as itself (a text as text, a file as its bytes and type). */
function answer(res: HttpResponse, reply: Reply, call: GmsCall): void {
  if ("json" in reply) return sendJson(res, 200, reply.json, call);
  const kind = reply.value?.kind;
  if (kind?.case === "file") return sendBytes(res, kind.value.content, kind.value.contentType || "application/octet-stream", call, attachment(kind.value.filename));
  sendBytes(res, Buffer.from(kind?.case === "text" ? kind.value : "", "utf8"), "text/plain; charset=utf-8", call);
}

/** gmsStorageRoute serves GMS's Storage API. */
export const gmsStorageRoute: HttpRouteFactory = (deps) => {
  const storage = createClient(StorageService, deps.local);
  const limits = derived(deps.config, storageFormLimits);

  /**
   * dataIdOf is the record an {id} names: with a `gms_user` header, that user's custom id when it
   * has one; else (or when the id is a record's own) the id itself, which the RPC validates.
   */
  async function dataIdOf(id: string, call: GmsCall): Promise<string> {
    if (call.gmsUser === undefined) return id;
    try {
      return (await storage.findCustomData({ customId: id, user: call.gmsUser }, call.options)).dataId;
    } catch (e) {
      if (UUID.test(id) && ConnectError.from(e).code === Code.NotFound) return id;
      throw e;
    }
  }

  async function serve(method: string, segs: string[], req: HttpRequest, call: GmsCall): Promise<Reply> {
    const [a, b, c] = segs;
    if (method === "POST" && segs.length === 1 && a !== undefined) {
      const form = await readForm(req, limits(), call);
      const r = await storage.createData({ ttlSeconds: ttlOf(a), entries: formValues(form) }, call.options);
      return { json: { id: r.dataId } };
    }
    if (method === "POST" && segs.length === 3 && a === "custom" && b !== undefined && c !== undefined) {
      const form = await readForm(req, limits(), call);
      await storage.createData({ ttlSeconds: ttlOf(c), entries: formValues(form), customId: b, user: call.gmsUser ?? "" }, call.options);
      return { json: { id: b } };
    }
    if (method === "POST" && segs.length === 2 && a !== undefined && b !== undefined) {
      const form = await readForm(req, limits(), call);
      const dataId = await dataIdOf(a, call);
      await storage.updateData({ dataId, entries: formValues(form), ttlSeconds: ttlOf(b) }, call.options);
      return { json: { id: a } };
    }
    if (method === "GET" && segs.length === 1 && a !== undefined) {
      const r = await storage.getData({ dataId: await dataIdOf(a, call) }, call.options);
      return { json: valuesJson(r.entries) };
    }
    if (method === "GET" && segs.length === 2 && a !== undefined && b !== undefined) {
      const { value } = await storage.getDataEntry({ dataId: await dataIdOf(a, call), key: b }, call.options);
      return { value };
    }
    if (method === "DELETE" && segs.length === 1 && a !== undefined) {
      await storage.deleteData({ dataId: await dataIdOf(a, call) }, call.options);
      return { json: {} };
    }
    throw new ConnectError(`${method} ${PREFIX}${segs.join("/")} is not a Storage API request`, Code.NotFound);
  }

  return gmsRoute(PREFIX, deps, serve, answer);
};
