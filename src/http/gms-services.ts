// GMS's Service API over HTTP (/genesys/1/service/...), as GMS apps and IVRs call it, on
// AccessService's and SessionService's RPCs through the serving policy (docs/gms-migration.md,
// "Services", has the table):
//   POST   /genesys/1/service/{name}        RequestInteraction | RequestAccess | MatchInteraction,
//                                           by the builtin {name} is or is configured as
//   GET    /genesys/1/service/{id}          GetSession
//   DELETE /genesys/1/service/{id}          CancelSession
//   POST   /genesys/1/service/{id}/update   UpdateSessionData
// A form's `_` keys are GMS's parameters; every other key is application data (files stay files).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { AccessService, type Match } from "../../gen/gms/v1/access_pb.js";
import type { AccessInfo } from "../../gen/gms/v1/access_info_pb.js";
import { SessionService, SessionState } from "../../gen/gms/v1/session_pb.js";
import { BUILTINS, derived, type Builtin, type Config } from "../config.js";
import { GmsHttpError, readForm, storageFormLimits, type Form } from "./form.js";
import { formValues, gmsRoute, sendJson, valuesJson, type GmsCall } from "./gms-http.js";
import type { HttpRequest, HttpRouteFactory } from "./routes.js";

const PREFIX = "/genesys/1/service/";

/**
 * Params are a form's `_` parameters, read as GMS documents them. A parameter the service does
 * not take is ignored, as GMS ignores what a builtin does not read; a file where a parameter is
 * expected, or a value that is not of the parameter's type, is refused (400).
 */
class Params {
  private readonly values = new Map<string, string>();
  constructor(form: Form) {
    for (const [key, v] of form) {
      if (!key.startsWith("_")) continue;
      if (v.kind === "file") throw new GmsHttpError("invalid", `${key}: a parameter is a text, not a file`);
      this.values.set(key, v.text);
    }
  }
  text(name: string): string | undefined {
    return this.values.get(name);
  }
  bool(name: string): boolean | undefined {
    const v = this.values.get(name)?.trim().toLowerCase();
    if (v === undefined || v === "") return undefined;
    if (v === "true") return true;
    if (v === "false") return false;
    throw new GmsHttpError("invalid", `${name}: expected true or false`);
  }
  int(name: string): bigint | undefined {
    const v = this.values.get(name)?.trim();
    if (v === undefined || v === "") return undefined;
    // Nine digits at most: every parameter's range is far below, and the value fits every field.
    if (!/^[0-9]{1,9}$/.test(v)) throw new GmsHttpError("invalid", `${name}: expected a whole number up to 999999999`);
    return BigInt(v);
  }
}

/** appData is a form's application data: every key that is not a `_` parameter. */
function appData(form: Form) {
  return formValues([...form].filter(([key]) => !key.startsWith("_")));
}

/**
 * builtinOf says which RPC serves a service name: a configured service's builtin, or a builtin's
 * own name. Any other name goes to RequestInteraction, whose answer for an unknown service is
 * NOT_FOUND; the RPC, not this route, decides (and configuration wins there, as over gRPC).
 */
function builtinOf(config: Config, name: string): Builtin {
  const configured = config.services[name];
  if (configured !== undefined) return configured.builtin;
  return (BUILTINS as readonly string[]).includes(name) ? (name as Builtin) : "request-interaction";
}

/** accessJson is a reservation in GMS's words; `_access_code` only when a code was given out. */
function accessJson(a: AccessInfo | undefined): Record<string, unknown> {
  if (a === undefined) return {};
  return {
    _access_number: a.accessNumber,
    ...(a.accessCode === "" ? {} : { _access_code: a.accessCode }),
    _expiration_time: Number(a.expirationSeconds),
  };
}

/** matchJson is one match in GMS's words, with the data when it was asked for. */
function matchJson(m: Match, withData: boolean): Record<string, unknown> {
  return { _id: m.sessionId, _data_id: m.dataId, ...(withData ? { _data: valuesJson(m.data) } : {}) };
}

/** gmsServiceRoute serves GMS's Service API for the builtins opengms has (request-chat is the chat API's). */
export const gmsServiceRoute: HttpRouteFactory = (deps) => {
  const access = createClient(AccessService, deps.local);
  const sessions = createClient(SessionService, deps.local);
  const limits = derived(deps.config, storageFormLimits);

  async function create(name: string, req: HttpRequest, call: GmsCall): Promise<unknown> {
    const builtin = builtinOf(deps.config(), name);
    // The chat API has its own routes; refused before the body is read, nothing is created.
    if (builtin === "request-chat") throw new GmsHttpError("invalid", `${name} is a request-chat service: start chats with POST /genesys/2/chat/${name}`);
    const form = await readForm(req, limits(), call);
    const p = new Params(form);
    if (builtin === "request-access") {
      const r = await access.requestAccess(
        {
          service: name,
          sessionId: p.text("_id") ?? "",
          resourceGroup: p.text("_resource_group") ?? "",
          provideCode: p.bool("_provide_code"),
          phoneNumber: p.text("_phone_number") ?? "",
          bookingExpirationTimeoutSeconds: p.int("_booking_expiration_timeout"),
          accessCodeLength: numberOf(p.int("_access_code_length")),
        },
        call.options,
      );
      return { _id: p.text("_id"), ...accessJson(r.access) };
    }
    if (builtin === "match-interaction") {
      const returnData = p.bool("_return_data") ?? false;
      const multiple = p.bool("_return_multiple_matches") ?? false;
      const r = await access.matchInteraction(
        {
          service: name,
          accessNumber: p.text("_access_number") ?? "",
          phoneNumber: p.text("_phone_number") ?? "",
          accessCode: p.text("_access_code") ?? "",
          returnMultipleMatches: multiple,
          returnData,
        },
        call.options,
      );
      if (multiple) return { matches: r.matches.map((m) => matchJson(m, returnData)) };
      const first = r.matches[0];
      if (first === undefined) throw new ConnectError("no match", Code.NotFound);
      return matchJson(first, returnData);
    }
    const r = await access.requestInteraction(
      {
        service: name,
        phoneNumber: p.text("_phone_number") ?? "",
        provideCode: p.bool("_provide_code"),
        resourceGroup: p.text("_resource_group"),
        ttlSeconds: p.int("_ttl"),
        bookingExpirationTimeoutSeconds: p.int("_booking_expiration_timeout"),
        accessCodeLength: numberOf(p.int("_access_code_length")),
        appData: appData(form),
      },
      call.options,
    );
    return { _id: r.session?.id, _data_id: r.session?.dataId, ...accessJson(r.access) };
  }

  async function serve(method: string, segs: string[], req: HttpRequest, call: GmsCall): Promise<unknown> {
    const [a, b] = segs;
    if (method === "POST" && segs.length === 1 && a !== undefined) return create(a, req, call);
    if (method === "POST" && segs.length === 2 && a !== undefined && b === "update") {
      const form = await readForm(req, limits(), call);
      await sessions.updateSessionData({ sessionId: a, entries: appData(form) }, call.options);
      return { _id: a };
    }
    if (method === "GET" && segs.length === 1 && a !== undefined) {
      const { session } = await sessions.getSession({ sessionId: a }, call.options);
      if (session === undefined) throw new ConnectError(`session ${a} not found`, Code.NotFound);
      return {
        _id: session.id,
        _service: session.service,
        _builtin: session.builtin,
        _state: session.state === SessionState.ACTIVE ? "active" : "ended",
        _phone_number: session.phoneNumber,
        _data_id: session.dataId,
        _expires_at: session.expiresAt === undefined ? undefined : new Date(Number(session.expiresAt.seconds) * 1000).toISOString(),
        _access: session.access.map((x) => ({ ...accessJson(x), _resource_group: x.resourceGroup })),
      };
    }
    if (method === "DELETE" && segs.length === 1 && a !== undefined) {
      await sessions.cancelSession({ sessionId: a }, call.options);
      return {};
    }
    throw new ConnectError(`${method} ${PREFIX}${segs.join("/")} is not a Service API request opengms serves`, Code.NotFound);
  }

  return gmsRoute(PREFIX, deps, serve, (res, body, call) => sendJson(res, 200, body, call));
};

/** numberOf narrows a parsed parameter (nine digits at most) to a number for a uint32 field. */
function numberOf(v: bigint | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}
