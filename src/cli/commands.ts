// The operator's commands of the `opengms` bin: each calls a running server over the API (client.ts)
// and prints its reply as a table for a person or, with --json, as the reply's proto3 JSON for a
// script. How a command ends — its exit status and its one line on stderr — is failure.ts's.
import { create } from "@bufbuild/protobuf";
import { Option, type Command } from "commander";
import { stringify as toYaml } from "yaml";
import { AccessService, MatchInteractionResponseSchema } from "../../gen/gms/v1/access_pb.js";
import {
  AdminService,
  AdminServiceCancelSessionResponseSchema,
  AdminServiceGetSessionResponseSchema,
  ChatState,
  GetChatParticipantsResponseSchema,
  GetConfigurationResponseSchema,
  ListChatEndpointsResponseSchema,
  ListReservationsResponseSchema,
  ListResourceGroupsResponseSchema,
  ListServicesResponseSchema,
  ListSessionsResponseSchema,
  ReleaseReservationResponseSchema,
  ReloadConfigResponseSchema,
  type ReservationSummary,
  type SessionSummary,
} from "../../gen/gms/v1/admin_pb.js";
import { ParticipantType } from "../../gen/gms/v1/chat_event_pb.js";
import { SessionState } from "../../gen/gms/v1/session_pb.js";
import { GetDataResponseSchema, StorageService } from "../../gen/gms/v1/storage_pb.js";
import type { Value } from "../../gen/gms/v1/value_pb.js";
import { Health, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { connectApi, DEFAULT_URL, urlOfOptions, type Api, type ApiOptions } from "./client.js";
import { CliFailure, EXIT, failureOf } from "./failure.js";
import { cell, duration, enumName, fields, json, NONE, since, table, time, until, write, type Output } from "./output.js";
import { watchQueue } from "./watch.js";

/** Action is a command's body: given the server and its options and arguments, what to print. */
type Action<O> = (api: Api, options: O, ...args: string[]) => Promise<Output | string>;

/**
 * act turns a command's body into commander's action: it reads the options into a server to call,
 * runs the body, prints what it returns, and exits with its status; any failure is one line on
 * stderr and its status (failureOf). It exits explicitly: a kept-alive connection would otherwise
 * hold the process for seconds.
 */
function act<O extends ApiOptions>(body: Action<O>): (...params: unknown[]) => Promise<void> {
  return async (...params) => {
    const command = params[params.length - 1] as Command;
    const options = command.opts<O>();
    const args = params.slice(0, -2).filter((a): a is string => typeof a === "string");
    // A reader that goes away (`| head`) is not a failure of ours.
    process.stdout.on("error", () => process.exit(EXIT.ok));
    let status: number;
    try {
      const api = connectApi(options);
      const out = await body(api, options, ...args);
      const o = typeof out === "string" ? { stdout: out } : out;
      await write(process.stdout, o.stdout);
      await write(process.stderr, o.stderr ?? "");
      status = o.status ?? EXIT.ok;
    } catch (e) {
      const f = failureOf(e, urlOfOptions(options));
      await write(process.stderr, `${f.line}\n`);
      status = f.status;
    }
    process.exit(status);
  };
}

/** apiCommand adds a command that calls a server, with the options every such command takes. */
function apiCommand(parent: Command, nameAndArgs: string, description: string): Command {
  return parent
    .command(nameAndArgs)
    .description(description)
    .option("--url <url>", `the server (default $GMS_URL, else ${DEFAULT_URL})`)
    .option("--key <key>", "API key (default $GMS_API_KEY; a key on the command line shows in `ps` and shell history: prefer the variable or --key-file)")
    .option("--key-file <path>", "read the API key from the first line of this file")
    .option("--ca <path>", "PEM file of the CA that signed an https server's certificate (default: the system's)")
    .option("--cert <path>", "PEM file of this client's certificate, for a server with mutual TLS")
    .option("--cert-key <path>", "PEM file of that certificate's private key")
    .option("--timeout <seconds>", "give up on an answer after this long (default 10)")
    .option("--json", "print the reply as proto3 JSON, every field present, for scripts");
}

/** integerIn parses an option's value as an integer from `min` to `max`, or refuses it (a usage error). */
function integerIn(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) throw new CliFailure(`${name}: "${value}" is not a whole number from ${min} to ${max}`);
    return n;
  };
}

// ---- what the replies look like to a person ----

const reservationColumns = [{ title: "NUMBER" }, { title: "GROUP" }, { title: "SESSION" }, { title: "PHONE" }, { title: "CREATED" }, { title: "EXPIRES IN", right: true }];

/** reservationRows are reservations as table rows, their expiry counted from `now`. */
function reservationRows(rs: readonly ReservationSummary[], now: number): string[][] {
  return rs.map((r) => [r.accessNumber, r.resourceGroup, r.sessionId, r.phoneNumber || NONE, time(r.createdAt), until(r.expiresAt, now)]);
}

const sessionColumns = [{ title: "SESSION" }, { title: "SERVICE" }, { title: "STATE" }, { title: "PHONE" }, { title: "CREATED" }, { title: "EXPIRES IN", right: true }];

/** sessionRow is a session as a table row. */
function sessionRow(s: SessionSummary, now: number): string[] {
  return [s.id, s.service, enumName(SessionState, s.state), s.phoneNumber || NONE, time(s.createdAt), until(s.expiresAt, now)];
}

/** valueText is a stored value as a table shows it: a text as it is, a file as its name, type and size. */
function valueText(v: Value | undefined): [string, string] {
  if (v?.kind.case === "text") return ["text", v.kind.value];
  if (v?.kind.case === "file") return ["file", `${v.kind.value.filename || "(no name)"} ${v.kind.value.contentType || "application/octet-stream"}, ${v.kind.value.content.length} bytes`];
  return [NONE, NONE];
}

/** entryRows are a record's entries as table rows, by key. */
function entryRows(entries: { [key: string]: Value }): string[][] {
  return Object.keys(entries)
    .sort()
    .map((k) => [k, ...valueText(entries[k])]);
}

/** optional shows an optional value, NONE when unset. */
const optional = (v: { toString(): string } | undefined) => (v === undefined ? NONE : v.toString());

/** registerApiCommands adds the operator's commands to the `opengms` program. */
export function registerApiCommands(program: Command): void {
  apiCommand(program, "health", "ask the server's health (grpc.health.v1 Check, no key needed); exit 0 when serving, 4 otherwise")
    .argument("[service]", "a service to ask about, e.g. gms.v1.AccessService (default: the server as a whole)")
    .action(
      act(async (api, _o, service = "") => {
        const r = await api.client(Health).check({ service }, api.call);
        const serving = r.status === HealthCheckResponse_ServingStatus.SERVING;
        return { stdout: api.json ? json(HealthCheckResponseSchema, r) : `${HealthCheckResponse_ServingStatus[r.status] ?? r.status}\n`, status: serving ? EXIT.ok : EXIT.unreachable };
      }),
    );

  apiCommand(program, "groups", "list the resource groups: their numbers free, reserved, cooling down and retired").action(
    act(async (api) => {
      const r = await api.client(AdminService).listResourceGroups({}, api.call);
      if (api.json) return json(ListResourceGroupsResponseSchema, r);
      if (r.groups.length === 0) return "no resource groups\n";
      return table(
        [{ title: "GROUP" }, { title: "FREE", right: true }, { title: "RESERVED", right: true }, { title: "COOLING DOWN", right: true }, { title: "RETIRED", right: true }, { title: "RESERVATIONS", right: true }],
        r.groups.map((g) => [g.name, String(g.free), String(g.reserved), String(g.coolingDown), String(g.retired), String(g.reservations)]),
      );
    }),
  );

  apiCommand(program, "reservations", "list a resource group's live reservations, oldest first (never their access codes)")
    .argument("<group>", "the resource group")
    .action(
      act(async (api, _o, group = "") => {
        const r = await api.client(AdminService).listReservations({ resourceGroup: group }, api.call);
        if (api.json) return json(ListReservationsResponseSchema, r);
        if (r.reservations.length === 0) return `no live reservations in ${group}\n`;
        return table(reservationColumns, reservationRows(r.reservations, Date.now()));
      }),
    );

  apiCommand(program, "release", "release every live reservation of an access number now, as a match would (a locking number cools down first)")
    .argument("<number>", "the access number, as stored: digits with an optional leading +")
    .action(
      act(async (api, _o, number = "") => {
        const r = await api.client(AdminService).releaseReservation({ accessNumber: number }, api.call);
        if (api.json) return json(ReleaseReservationResponseSchema, r);
        return `released ${r.released.length} reservation${r.released.length === 1 ? "" : "s"} of ${number}\n` + table(reservationColumns, reservationRows(r.released, Date.now()));
      }),
    );

  apiCommand(program, "sessions", "list live sessions, newest first, following the pages")
    .option("--service <name>", "only this service's sessions (its name as called, e.g. iPhoneService)")
    .addOption(new Option("--state <state>", "only sessions in this state").choices(["active", "ended"]))
    .option("--limit <n>", "show at most this many (0: all)", integerIn("--limit", 0, Number.MAX_SAFE_INTEGER), 100)
    .option("--page-size <n>", "sessions asked for per call", integerIn("--page-size", 1, 1000), 500)
    .action(
      act<ApiOptions & { service?: string; state?: "active" | "ended"; limit: number; pageSize: number }>(async (api, o) => {
        const admin = api.client(AdminService);
        const state = o.state === undefined ? SessionState.UNSPECIFIED : o.state === "active" ? SessionState.ACTIVE : SessionState.ENDED;
        const sessions: SessionSummary[] = [];
        let token = "";
        do {
          const pageSize = o.limit === 0 ? o.pageSize : Math.min(o.pageSize, o.limit - sessions.length);
          const page = await admin.listSessions({ service: o.service ?? "", state, pageSize, pageToken: token }, api.call);
          sessions.push(...page.sessions);
          token = page.nextPageToken;
        } while (token !== "" && (o.limit === 0 || sessions.length < o.limit));
        if (api.json) return json(ListSessionsResponseSchema, create(ListSessionsResponseSchema, { sessions, nextPageToken: token }));
        const more = token === "" ? undefined : `more sessions than --limit ${o.limit}: raise it, or --limit 0 for all\n`;
        if (sessions.length === 0) return "no live sessions\n";
        const now = Date.now();
        return { stdout: table(sessionColumns, sessions.map((s) => sessionRow(s, now))), stderr: more };
      }),
    );

  apiCommand(program, "session", "show a live session and its live reservations (never its data or access codes)")
    .argument("<id>", "the session's id")
    .action(
      act(async (api, _o, id = "") => {
        const r = await api.client(AdminService).getSession({ sessionId: id }, api.call);
        if (api.json) return json(AdminServiceGetSessionResponseSchema, r);
        const s = r.session;
        const now = Date.now();
        const head = fields([
          ["session", s?.id ?? id],
          ["service", `${s?.service ?? NONE} (${s?.builtin ?? NONE})`],
          ["state", s === undefined ? NONE : enumName(SessionState, s.state)],
          ["phone", s?.phoneNumber || NONE],
          ["data", s?.dataId ?? NONE],
          ["created", time(s?.createdAt)],
          ["expires", `${time(s?.expiresAt)} (in ${until(s?.expiresAt, now)})`],
        ]);
        return head + "\n" + (r.reservations.length === 0 ? "no live reservations\n" : table(reservationColumns, reservationRows(r.reservations, now)));
      }),
    );

  apiCommand(program, "cancel", "cancel a live session, as its backend would: its reservations released, its data deleted")
    .argument("<id>", "the session's id")
    .action(
      act(async (api, _o, id = "") => {
        const r = await api.client(AdminService).cancelSession({ sessionId: id }, api.call);
        if (api.json) return json(AdminServiceCancelSessionResponseSchema, r);
        return `session ${id} ${r.session === undefined ? "ended" : enumName(SessionState, r.session.state)}\n`;
      }),
    );

  apiCommand(program, "services", "list the services callers may name, with what their configuration fixes").action(
    act(async (api) => {
      const r = await api.client(AdminService).listServices({}, api.call);
      if (api.json) return json(ListServicesResponseSchema, r);
      return table(
        [{ title: "SERVICE" }, { title: "BUILTIN" }, { title: "CONFIGURED" }, { title: "GROUP" }, { title: "CODE" }, { title: "CODE LENGTH", right: true }, { title: "TTL", right: true }, { title: "BOOKING", right: true }, { title: "ENDPOINT" }],
        r.services.map((s) => [
          s.name,
          s.builtin,
          s.configured ? "yes" : "no",
          optional(s.resourceGroup),
          s.provideCode === undefined ? NONE : s.provideCode ? "yes" : "no",
          optional(s.accessCodeLength),
          s.ttlSeconds === undefined ? NONE : duration(Number(s.ttlSeconds) * 1000),
          s.bookingExpirationTimeoutSeconds === undefined ? NONE : duration(Number(s.bookingExpirationTimeoutSeconds) * 1000),
          optional(s.endpoint),
        ]),
      );
    }),
  );

  apiCommand(program, "config", "show the configuration in effect (YAML; secrets redacted)").action(
    act(async (api) => {
      const r = await api.client(AdminService).getConfiguration({}, api.call);
      return api.json ? json(GetConfigurationResponseSchema, r) : toYaml(r.configuration ?? {});
    }),
  );

  apiCommand(program, "reload", "make the node re-read its configuration file (AdminService.ReloadConfig, as SIGHUP does): what changed, and what waits for a restart; a refused file: exit 5 with the reasons").action(
    act(async (api) => {
      const r = await api.client(AdminService).reloadConfig({}, api.call);
      if (api.json) return json(ReloadConfigResponseSchema, r);
      const lines = [r.changedSettings.length === 0 ? "reloaded: nothing changed" : `reloaded: ${r.changedSettings.length} setting${r.changedSettings.length === 1 ? "" : "s"} changed`];
      const list = (label: string, names: readonly string[]) => names.length > 0 && lines.push(`${label}: ${names.map((n) => cell(n, 128)).join(", ")}`);
      list("changed", r.changedSettings);
      list("groups added", r.groupsAdded);
      list("groups removed", r.groupsRemoved);
      list("groups changed", r.groupsChanged);
      if (r.numbersAdded > 0n || r.numbersRetired > 0n) lines.push(`numbers: ${r.numbersAdded} added, ${r.numbersRetired} retired`);
      list("services added", r.servicesAdded);
      list("services removed", r.servicesRemoved);
      list("services changed", r.servicesChanged);
      if (r.apiKeysAdded > 0n || r.apiKeysRemoved > 0n || r.apiKeysChanged > 0n) lines.push(`api keys: ${r.apiKeysAdded} added, ${r.apiKeysRemoved} removed, ${r.apiKeysChanged} changed`);
      list("restart required for", r.restartRequired);
      return lines.join("\n") + "\n";
    }),
  );

  apiCommand(program, "endpoints", "list the chat endpoints: chats waiting, and how long the oldest has waited").action(
    act(async (api) => {
      const r = await api.client(AdminService).listChatEndpoints({}, api.call);
      if (api.json) return json(ListChatEndpointsResponseSchema, r);
      const now = Date.now();
      return table(
        [{ title: "ENDPOINT" }, { title: "WAITING", right: true }, { title: "OLDEST WAIT", right: true }],
        r.endpoints.map((e) => [e.endpoint, String(e.waiting), since(e.oldestQueuedAt, now)]),
      );
    }),
  );

  apiCommand(
    program,
    "match",
    "match a call as an IVR does (AccessService.MatchInteraction, role ivr or admin). It is a real match: the matched reservation is RELEASED, so the caller's own call will no longer match, and a wrong --code counts towards the number's lockout. Exit 2 when nothing matches.",
  )
    .requiredOption("--number <number>", "the number dialled (DNIS)")
    .option("--phone <number>", "the caller's number (ANI); when given, it must be the app's")
    .option("--code <digits>", "the access code the caller typed")
    .option("--all", "every matching session, not only the most recent")
    .option("--data", "show each matched session's data")
    .action(
      act<ApiOptions & { number: string; phone?: string; code?: string; all?: boolean; data?: boolean }>(async (api, o) => {
        const r = await api
          .client(AccessService)
          .matchInteraction({ accessNumber: o.number, phoneNumber: o.phone ?? "", accessCode: o.code ?? "", returnMultipleMatches: o.all === true, returnData: o.data === true }, api.call);
        if (api.json) return json(MatchInteractionResponseSchema, r);
        const out = table(
          [{ title: "SESSION" }, { title: "DATA" }, { title: "SERVICE" }, { title: "PHONE" }],
          r.matches.map((m) => [m.sessionId, m.dataId, m.service, m.phoneNumber || NONE]),
        );
        if (o.data !== true) return out;
        return out + r.matches.map((m) => `\ndata of session ${m.sessionId}\n` + (Object.keys(m.data).length === 0 ? "no entries\n" : table([{ title: "KEY" }, { title: "KIND" }, { title: "VALUE" }], entryRows(m.data)))).join("");
      }),
    );

  const storage = program.command("storage").description("read stored data");
  apiCommand(storage, "get", "show a live data record's entries (texts cut at 200 characters; --json has them whole, files base64)")
    .argument("<id>", "the record's id (a session's data id)")
    .action(
      act(async (api, _o, id = "") => {
        const r = await api.client(StorageService).getData({ dataId: id }, api.call);
        if (api.json) return json(GetDataResponseSchema, r);
        const head = fields([
          ["data", r.dataId],
          ["version", String(r.version)],
          ["expires", `${time(r.expiresAt)} (in ${until(r.expiresAt, Date.now())})`],
        ]);
        return head + "\n" + (Object.keys(r.entries).length === 0 ? "no entries\n" : table([{ title: "KEY" }, { title: "KIND" }, { title: "VALUE" }], entryRows(r.entries)));
      }),
    );

  const chat = program.command("chat").description("chat queues and chats");
  apiCommand(chat, "watch", "follow an endpoint's queue (AgentService.WatchQueue, role agent or admin): one line per change until Ctrl-C; --json: one JSON line per update")
    .argument("<endpoint>", "the chat endpoint (its queue), e.g. default")
    .action(act(async (api, _o, endpoint = "") => watchQueue(api, endpoint)));

  apiCommand(chat, "participants", "show a chat and everyone who joined it: the customer, agents, supervisors")
    .argument("<chat-id>", "the chat's id")
    .action(
      act(async (api, _o, chatId = "") => {
        const r = await api.client(AdminService).getChatParticipants({ chatId }, api.call);
        if (api.json) return json(GetChatParticipantsResponseSchema, r);
        const c = r.chat;
        const head = fields([
          ["chat", c?.chatId ?? chatId],
          ["state", c === undefined ? NONE : enumName(ChatState, c.state)],
          ["service", c?.service ?? NONE],
          ["endpoint", c?.endpoint ?? NONE],
          ["session", c?.sessionId ?? NONE],
          ["created", time(c?.createdAt)],
          ["expires", time(c?.expiresAt)],
        ]);
        return (
          head +
          "\n" +
          table(
            [{ title: "PARTICIPANT" }, { title: "TYPE" }, { title: "NICKNAME" }, { title: "IDENTITY" }, { title: "JOINED" }, { title: "LEFT" }],
            r.participants.map((p) => [p.participantId, enumName(ParticipantType, p.type), p.nickname, p.identity || NONE, time(p.joinedAt), time(p.leftAt)]),
          )
        );
      }),
    );
}

/**
 * refuseUnknownCommand stops a mistyped command name with a usage error (status 1) that names it.
 * `serve` is the default command, so commander would otherwise hand the name to serve as an
 * argument and say "too many arguments for 'serve'". The program's own options (-c/--config and
 * its value, -V, -h) may come first.
 */
export function refuseUnknownCommand(program: Command, argv: readonly string[]): void {
  const args = argv.slice(2);
  let i = 0;
  while (i < args.length && args[i]?.startsWith("-") === true) i += args[i] === "-c" || args[i] === "--config" ? 2 : 1;
  const name = args[i];
  if (name === undefined) return;
  const known = ["help", ...program.commands.flatMap((c) => [c.name(), ...c.aliases()])];
  if (!known.includes(name)) program.error(`error: unknown command '${cell(name, 60)}' (opengms --help lists the commands)`, { exitCode: EXIT.usage, code: "commander.unknownCommand" });
}
