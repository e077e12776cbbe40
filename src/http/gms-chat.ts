// GMS's chat API version 2 (`/genesys/2/chat/...`) over ChatService: each GMS operation is one or
// two calls of the served RPCs through `local` (so the serving policy applies: auth, validation,
// logs, error mapping), and each answer is GMS's reply shape. The transcript is the gRPC API's:
// GMS's `index` is the event's position, `transcriptPosition` and `nextPosition` are positions on
// the same cursor. The customer is known by the chat's secure key alone, as over gRPC: `userId` is
// the customer's participant id, given by requestChat and echoed after, and `alias` (which GMS node
// holds the chat) has no use here, since every node serves every chat.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { ChatEventType, ParticipantType, type ChatEvent, type Participant } from "../../gen/gms/v1/chat_event_pb.js";
import { ChatService } from "../../gen/gms/v1/chat_pb.js";
import { derived } from "../config.js";
import { chatFormLimits, GmsHttpError, MethodRefusal, readForm, type Form, type FormValue, type RefusalKind } from "./form.js";
import { attachment, gmsCall, noteRefusal, pathSegments, retryAfterOf, sendBytes, sendJson, type GmsCall } from "./gms-http.js";
import { pathOf, queryOf, type HttpRequest, type HttpRouteFactory } from "./routes.js";

/** ALIAS is the `alias` opengms answers: GMS's chat-server alias, meaningless where any node serves any chat. */
export const ALIAS = "0";

/**
 * CHAT_ERRORS are the codes of `errors[].code` in a GMS chat error reply, with the HTTP status each
 * is answered with. GMS documents the reply's shape, not a list of codes; these are opengms's.
 */
export const CHAT_ERRORS = {
  /** invalid: the request is malformed or a parameter is missing or wrong (400). */
  invalid: 100,
  /** unauthenticated: the server wants credentials (401). */
  unauthenticated: 101,
  /** forbidden: no chat with this id and secure key, or the caller may not act (403). */
  forbidden: 102,
  /** notFound: no such service, file or operation (404). */
  notFound: 103,
  /** conflict: the chat's state refuses the operation, e.g. it has ended (409). */
  conflict: 104,
  /** tooLarge: a body, field or file over its limit (413), or a chat's file limits reached (429). */
  tooLarge: 105,
  /** unsupported: the body's media type (415). */
  unsupported: 106,
  /** method: the HTTP method (405). */
  method: 107,
  /** timeout: the body did not arrive in time (408). */
  timeout: 108,
  /** unavailable: the server cannot serve now; retry (503, statusCode 1). */
  unavailable: 200,
  /** internal: the server failed; retry (500, statusCode 1). */
  internal: 201,
} as const;

/** REFUSAL_CODES are the codes of the HTTP layer's refusals (GmsHttpError), by kind. */
const REFUSAL_CODES: Record<RefusalKind, number> = {
  invalid: CHAT_ERRORS.invalid,
  notFound: CHAT_ERRORS.notFound,
  method: CHAT_ERRORS.method,
  timeout: CHAT_ERRORS.timeout,
  tooLarge: CHAT_ERRORS.tooLarge,
  unsupported: CHAT_ERRORS.unsupported,
};

/** UploadedFile is the one file of a chat upload's form. */
export type UploadedFile = Extract<FormValue, { kind: "file" }>;

/** GmsParticipant is GMS's `from`. */
export interface GmsParticipant {
  nickname: string;
  participantId: string;
  type: string;
}

/** GmsMessage is one entry of GMS's `messages`. */
export interface GmsMessage {
  from: GmsParticipant;
  /** index is the event's position; absent on a live typing notice, which has none. */
  index?: number;
  type: string;
  utcTime: number;
  text?: string;
  messageType?: string;
  userData?: Record<string, string>;
}

/** ChatV2Reply is GMS's reply to every chat v2 request. */
export interface ChatV2Reply {
  /** statusCode is 0 (done), 1 (failed, retry) or 2 (failed, do not retry). */
  statusCode: 0 | 1 | 2;
  chatId?: string;
  userId?: string;
  secureKey?: string;
  alias?: string;
  chatEnded?: boolean;
  nextPosition?: number;
  messages?: GmsMessage[];
  userData?: Record<string, string>;
  errors?: { code: number; advice?: string; message: string }[];
}

/** Params are a request's parameters (form fields, or a CometD message's data, as text). */
export type Params = Map<string, string>;

const eventNames: Record<ChatEventType, string> = {
  [ChatEventType.UNSPECIFIED]: "Unknown",
  [ChatEventType.PARTICIPANT_JOINED]: "ParticipantJoined",
  [ChatEventType.PARTICIPANT_LEFT]: "ParticipantLeft",
  [ChatEventType.MESSAGE]: "Message",
  [ChatEventType.TYPING_STARTED]: "TypingStarted",
  [ChatEventType.TYPING_STOPPED]: "TypingStopped",
  [ChatEventType.NICKNAME_UPDATED]: "NicknameUpdated",
  [ChatEventType.CUSTOM_NOTICE]: "CustomNotice",
  [ChatEventType.PUSH_URL]: "PushUrl",
  [ChatEventType.FILE_UPLOADED]: "FileUploaded",
  [ChatEventType.FILE_DELETED]: "FileDeleted",
  [ChatEventType.USER_DATA_UPDATED]: "UserDataUpdated",
  [ChatEventType.CHAT_ENDED]: "ChatEnded",
  [ChatEventType.MESSAGE_READ]: "MessageRead",
  [ChatEventType.HEARTBEAT]: "Heartbeat",
};

const participantNames: Record<ParticipantType, string> = {
  [ParticipantType.UNSPECIFIED]: "External",
  [ParticipantType.CLIENT]: "Client",
  [ParticipantType.AGENT]: "Agent",
  [ParticipantType.SUPERVISOR]: "Supervisor",
  [ParticipantType.SYSTEM]: "External",
};

function gmsParticipant(p: Participant | undefined): GmsParticipant {
  return { nickname: p?.nickname ?? "", participantId: p?.participantId ?? "", type: participantNames[p?.type ?? ParticipantType.UNSPECIFIED] };
}

/** gmsMessage maps a transcript event (or live typing notice) onto GMS's message shape. */
export function gmsMessage(e: ChatEvent): GmsMessage {
  // In GMS's order of keys: from, index, type, utcTime, then what the event carries.
  const m: GmsMessage = {
    from: gmsParticipant(e.from),
    ...(e.position > 0n ? { index: Number(e.position) } : {}),
    type: eventNames[e.type] ?? "Unknown",
    utcTime: e.time === undefined ? 0 : Number(timestampMs(e.time)),
  };
  if (e.text !== "") m.text = e.text;
  if (e.messageType !== "") m.messageType = e.messageType;
  if (e.type === ChatEventType.USER_DATA_UPDATED) m.userData = { ...e.userData };
  if (e.fileId !== "") m.userData = { "file-id": e.fileId, "file-name": e.fileName, "file-size": String(e.fileSize), "file-type": e.fileContentType };
  return m;
}

/** typingMessage is a participant typing now, as a poll reports it: TypingStarted without an index. */
function typingMessage(p: Participant, utcTime: number): GmsMessage {
  return { from: gmsParticipant(p), type: "TypingStarted", utcTime };
}

/** statusOf is the HTTP status, GMS code and statusCode a failed call is answered with. */
function statusOf(code: Code): { status: number; code: number; statusCode: 1 | 2 } {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return { status: 400, code: CHAT_ERRORS.invalid, statusCode: 2 };
    case Code.Unauthenticated:
      return { status: 401, code: CHAT_ERRORS.unauthenticated, statusCode: 2 };
    case Code.PermissionDenied:
      return { status: 403, code: CHAT_ERRORS.forbidden, statusCode: 2 };
    case Code.NotFound:
      return { status: 404, code: CHAT_ERRORS.notFound, statusCode: 2 };
    case Code.FailedPrecondition:
    case Code.AlreadyExists:
    case Code.Aborted:
      return { status: 409, code: CHAT_ERRORS.conflict, statusCode: 2 };
    case Code.ResourceExhausted:
      return { status: 429, code: CHAT_ERRORS.tooLarge, statusCode: 2 };
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return { status: 503, code: CHAT_ERRORS.unavailable, statusCode: 1 };
    default:
      return { status: 500, code: CHAT_ERRORS.internal, statusCode: 1 };
  }
}

const ADVICE: Partial<Record<number, string>> = {
  [CHAT_ERRORS.forbidden]: "check chatId and secureKey",
  [CHAT_ERRORS.conflict]: "the chat does not allow this now; refresh to see its state",
  [CHAT_ERRORS.unavailable]: "retry later",
  [CHAT_ERRORS.internal]: "retry later",
};

/** chatV2Failure maps whatever a chat v2 operation threw onto GMS's error reply and an HTTP status. */
export function chatV2Failure(e: unknown): { status: number; reply: ChatV2Reply } {
  const { status, code, statusCode, message } =
    e instanceof GmsHttpError ? { status: e.status, code: REFUSAL_CODES[e.kind], statusCode: 2 as const, message: e.message } : { ...statusOf(ConnectError.from(e).code), message: ConnectError.from(e).rawMessage };
  const advice = ADVICE[code];
  return { status, reply: { statusCode, errors: [advice === undefined ? { code, message } : { code, advice, message }] } };
}

const invalid = (message: string) => new GmsHttpError("invalid", message);

/** text is a parameter's value, "" when absent. */
const text = (p: Params, name: string) => p.get(name) ?? "";

/** required is a parameter that must be there and not be empty. */
function required(p: Params, name: string): string {
  const v = p.get(name);
  if (v === undefined || v === "") throw invalid(`${name} is required`);
  return v;
}

/** position reads a transcript position parameter: undefined when absent, else digits up to 2^53-1. */
function position(p: Params, name: string): number | undefined {
  const v = p.get(name);
  if (v === undefined || v === "") return undefined;
  const n = /^[0-9]{1,16}$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw invalid(`${name} must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  return n;
}

/** userDataOf collects GMS's `userData[key]` parameters. */
export function userDataOf(p: Params): Record<string, string> {
  const entries: [string, string][] = [];
  for (const [k, v] of p) {
    const m = /^userData\[(.+)\]$/s.exec(k);
    if (m?.[1] !== undefined) entries.push([m[1], v]);
  }
  // fromEntries defines own properties, so a key such as "__proto__" is data (which ChatService refuses).
  return Object.fromEntries(entries);
}

/** Operation is a GMS chat v2 operation on an existing chat, by its URL name. */
export type Operation =
  | "send"
  | "refresh"
  | "startTyping"
  | "stopTyping"
  | "disconnect"
  | "customNotice"
  | "pushUrl"
  | "updateNickname"
  | "updateData"
  | "readReceipt"
  | "file/limits";

const OPERATIONS = new Set<string>(["send", "refresh", "startTyping", "stopTyping", "disconnect", "customNotice", "pushUrl", "updateNickname", "updateData", "readReceipt", "file/limits"]);

/** isOperation tells a GMS chat v2 operation name. */
export const isOperation = (name: string): name is Operation => OPERATIONS.has(name);

/** DownloadedChatFile is a file as file/{id}/download answers it. */
export interface DownloadedChatFile {
  filename: string;
  contentType: string;
  content: Uint8Array;
}

/** ChatV2 runs GMS chat v2 operations as calls of ChatService. */
export interface ChatV2 {
  /** requestChat starts a chat on a service. */
  requestChat(service: string, p: Params, call: CallOptions): Promise<ChatV2Reply>;
  /** operate runs an operation on the chat `chatId`, with the transcript when `transcriptPosition` asks for it. */
  operate(op: Operation, chatId: string, p: Params, call: CallOptions): Promise<ChatV2Reply>;
  /** upload adds a file to the chat. */
  upload(chatId: string, p: Params, file: UploadedFile | undefined, call: CallOptions): Promise<ChatV2Reply>;
  /** deleteFile removes a file the customer uploaded. */
  deleteFile(chatId: string, fileId: string, p: Params, call: CallOptions): Promise<ChatV2Reply>;
  /** download returns a file of the chat. */
  download(chatId: string, fileId: string, p: Params, call: CallOptions): Promise<DownloadedChatFile>;
  /**
   * failure is chatV2Failure for an operation on the chat `chatId`: the reply names the chat and,
   * where the chat's state refused the operation, says whether it has ended (GMS's advice for
   * statusCode 2: read chatEnded).
   */
  failure(e: unknown, chatId: string, p: Params, call: CallOptions): Promise<{ status: number; reply: ChatV2Reply }>;
}

/** createChatV2 builds GMS chat v2 over a ChatService client (of `local`, the served RPCs). */
export function createChatV2(chat: Client<typeof ChatService>): ChatV2 {
  /** who is the customer's identity as a reply repeats it. */
  const who = (chatId: string, p: Params): ChatV2Reply => ({ statusCode: 0, chatId, userId: text(p, "userId"), secureKey: text(p, "secureKey"), alias: ALIAS });

  /**
   * after completes a reply after an operation: with the transcript from `from` when asked for
   * (GMS's transcriptPosition), else with whether the chat has ended (a poll from beyond the
   * transcript's end, which reads no event).
   */
  async function after(reply: ChatV2Reply, secureKey: string, from: number | undefined, call: CallOptions): Promise<ChatV2Reply> {
    const chatId = reply.chatId ?? "";
    const r = await chat.refresh({ chatId, secureKey, fromPosition: BigInt(from ?? Number.MAX_SAFE_INTEGER) }, call);
    reply.chatEnded = r.chatEnded;
    if (from === undefined) return reply;
    const now = Date.now();
    reply.nextPosition = Number(r.nextPosition);
    reply.messages = [...r.events.map(gmsMessage), ...r.typing.map((t) => typingMessage(t, now))];
    return reply;
  }

  return {
    async requestChat(service, p, call) {
      const r = await chat.requestChat(
        {
          service,
          nickname: text(p, "nickname"),
          firstName: text(p, "firstName"),
          lastName: text(p, "lastName"),
          subject: text(p, "subject"),
          emailAddress: text(p, "emailAddress"),
          userData: userDataOf(p),
        },
        call,
      );
      return {
        statusCode: 0,
        chatId: r.chatId,
        userId: r.participantId,
        secureKey: r.secureKey,
        alias: ALIAS,
        chatEnded: false,
        nextPosition: Number(r.nextPosition),
        messages: r.events.map(gmsMessage),
      };
    },

    async operate(op, chatId, p, call) {
      const secureKey = required(p, "secureKey");
      const from = position(p, "transcriptPosition");
      const reply = who(chatId, p);
      const key = { chatId, secureKey };
      switch (op) {
        case "send":
          await chat.sendMessage({ ...key, text: required(p, "message"), messageType: text(p, "messageType") }, call);
          break;
        case "refresh":
          return after(reply, secureKey, from ?? 1, call);
        case "startTyping":
        case "stopTyping":
          await chat.sendTyping({ ...key, typing: op === "startTyping", text: text(p, "message") }, call);
          break;
        case "disconnect":
          await chat.disconnect(key, call);
          break;
        case "customNotice":
          await chat.sendCustomNotice({ ...key, text: required(p, "message") }, call);
          break;
        case "pushUrl":
          await chat.pushUrl({ ...key, url: p.get("pushUrl") ?? required(p, "url") }, call);
          break;
        case "updateNickname":
          await chat.updateNickname({ ...key, nickname: required(p, "nickname") }, call);
          break;
        case "updateData":
          await chat.updateUserData({ ...key, userData: userDataOf(p) }, call);
          break;
        case "readReceipt": {
          // GMS's readReceipt names the last event read by transcriptPosition; no transcript comes back.
          if (from === undefined) throw invalid("transcriptPosition is required");
          await chat.sendReadReceipt({ ...key, readPosition: BigInt(from) }, call);
          return after(reply, secureKey, undefined, call);
        }
        case "file/limits": {
          const { limits } = await chat.getFileLimits(key, call);
          reply.userData = {
            "upload-max-files": String(limits?.maxFiles ?? 0),
            "upload-max-file-size": String(limits?.maxFileBytes ?? 0n),
            "upload-max-total-size": String(limits?.maxTotalBytes ?? 0n),
            "upload-need-agent": String(limits?.requireAgent ?? false),
            "upload-file-types": (limits?.allowedExtensions ?? []).join(":"),
            "used-upload-max-files": String(limits?.usedFiles ?? 0),
            "used-upload-max-total-size": String(limits?.usedBytes ?? 0n),
            "delete-file": "enabled",
          };
          break;
        }
      }
      return after(reply, secureKey, from, call);
    },

    async upload(chatId, p, file, call) {
      const secureKey = required(p, "secureKey");
      if (file === undefined) throw invalid("a file part is required (multipart/form-data, field `file`)");
      const r = await chat.uploadFile({ chatId, secureKey, file: { filename: file.filename, contentType: file.contentType, content: file.content } }, call);
      const reply = who(chatId, p);
      reply.userData = { "file-id": r.fileId };
      return after(reply, secureKey, position(p, "transcriptPosition"), call);
    },

    async deleteFile(chatId, fileId, p, call) {
      const secureKey = required(p, "secureKey");
      await chat.deleteFile({ chatId, secureKey, fileId }, call);
      return after(who(chatId, p), secureKey, position(p, "transcriptPosition"), call);
    },

    async failure(e, chatId, p, call) {
      const f = chatV2Failure(e);
      // GMS's order of keys: statusCode first, then the chat, then the errors.
      const { statusCode, errors } = f.reply;
      f.reply = { statusCode, chatId, userId: text(p, "userId"), alias: ALIAS, errors };
      const secureKey = text(p, "secureKey");
      if (e instanceof GmsHttpError || ConnectError.from(e).code !== Code.FailedPrecondition || secureKey === "") return f;
      try {
        f.reply.chatEnded = (await chat.refresh({ chatId, secureKey, fromPosition: BigInt(Number.MAX_SAFE_INTEGER) }, call)).chatEnded;
      } catch {
        // The refusal stands on its own; whether the chat has ended is then left unsaid.
      }
      return f;
    },

    async download(chatId, fileId, p, call) {
      const { file } = await chat.downloadFile({ chatId, secureKey: required(p, "secureKey"), fileId }, call);
      return { filename: file?.file?.filename ?? "", contentType: file?.file?.contentType ?? "", content: file?.file?.content ?? new Uint8Array() };
    },
  };
}

/** PREFIX is where GMS's chat API version 2 lives. */
const PREFIX = "/genesys/2/chat/";

/** Route is what a path names: a new chat on a service, an operation, or a file operation. */
type Route =
  | { kind: "create"; service: string }
  | { kind: "op"; op: Operation; chatId: string }
  | { kind: "upload"; chatId: string }
  | { kind: "download" | "delete"; chatId: string; fileId: string };

/** routeOf reads a path's segments under PREFIX; undefined when they name nothing. */
function routeOf(parts: string[]): Route | undefined {
  const [service, chatId, ...op] = parts;
  if (service === undefined || service === "") return undefined;
  if (chatId === undefined) return { kind: "create", service };
  const name = op.join("/");
  if (chatId === "" || name === "") return undefined;
  if (isOperation(name)) return { kind: "op", op: name, chatId };
  if (name === "file") return { kind: "upload", chatId };
  if (op.length === 3 && op[0] === "file" && (op[2] === "download" || op[2] === "delete") && op[1] !== "") return { kind: op[2], chatId, fileId: op[1] ?? "" };
  return undefined;
}

/** readOnly are the routes a GET may ask for too: they change nothing. */
const readOnly = (r: Route) => r.kind === "download" || (r.kind === "op" && (r.op === "refresh" || r.op === "file/limits"));

/**
 * paramsOf are a request's parameters: the query string's, then the form's texts, which win (GMS's
 * clients send either); its file is apart. The query string is as long as the request line's limit
 * allows at most.
 */
function paramsOf(req: HttpRequest, form: Form): { params: Params; file: UploadedFile | undefined } {
  const params: Params = new Map(new URLSearchParams(queryOf(req)));
  let file: UploadedFile | undefined;
  for (const [key, v] of form) {
    if (v.kind === "text") params.set(key, v.text);
    else file = v;
  }
  return { params, file };
}

/**
 * gmsChatRoute serves GMS's chat API version 2 under /genesys/2/chat/: requestChat, the operations,
 * and the files (multipart upload, download as bytes, delete).
 */
export const gmsChatRoute: HttpRouteFactory = (deps) => {
  const v2 = createChatV2(createClient(ChatService, deps.local));
  const formLimits = derived(deps.config, (c) => chatFormLimits(c, false));
  const uploadLimits = derived(deps.config, (c) => chatFormLimits(c, true));

  async function serve(req: HttpRequest, call: GmsCall, path: string): Promise<{ json: ChatV2Reply } | { file: DownloadedChatFile }> {
    const segs = pathSegments(path, PREFIX);
    if (segs === undefined) throw invalid("the path is not valid percent-encoding");
    const route = routeOf(segs);
    if (route === undefined) throw new GmsHttpError("notFound", "no such chat API v2 request");
    if (req.method !== "POST" && !(req.method === "GET" && readOnly(route))) throw new MethodRefusal(readOnly(route) ? "GET, POST" : "POST");
    const { params, file } = paramsOf(req, await readForm(req, route.kind === "upload" ? uploadLimits() : formLimits(), call));
    try {
      switch (route.kind) {
        case "create":
          return { json: await v2.requestChat(route.service, params, call.options) };
        case "op":
          return { json: await v2.operate(route.op, route.chatId, params, call.options) };
        case "upload":
          return { json: await v2.upload(route.chatId, params, file, call.options) };
        case "delete":
          return { json: await v2.deleteFile(route.chatId, route.fileId, params, call.options) };
        case "download":
          return { file: await v2.download(route.chatId, route.fileId, params, call.options) };
      }
    } catch (e) {
      // What the failure reply can say of the chat, once the path and the form are read.
      throw route.kind === "create" ? e : new ChatFailure(await v2.failure(e, route.chatId, params, call.options), e);
    }
  }

  return (req, res) => {
    const path = pathOf(req);
    if (!path.startsWith(PREFIX)) return false;
    const call = gmsCall(req, res, deps);
    serve(req, call, path)
      .then((r) => ("json" in r ? sendJson(res, 200, r.json, call) : sendBytes(res, r.file.content, r.file.contentType, call, attachment(r.file.filename, true))))
      .catch((e: unknown) => {
        const { status, reply } = e instanceof ChatFailure ? e.failure : chatV2Failure(e);
        const cause = e instanceof ChatFailure ? e.cause : e;
        noteRefusal(cause, call);
        // A refusal that says when to retry (a rate limit: 429) says it in Retry-After too.
        const retryAfter = retryAfterOf(cause);
        sendJson(res, status, reply, call, e instanceof MethodRefusal ? { allow: e.allow } : retryAfter === undefined ? {} : { "retry-after": String(retryAfter) });
      });
    return true;
  };
};

/** ChatFailure carries an operation's failure as the chat's reply words it (ChatV2.failure). */
class ChatFailure extends Error {
  constructor(
    readonly failure: { status: number; reply: ChatV2Reply },
    cause: unknown,
  ) {
    super("chat operation failed", { cause });
  }
}
