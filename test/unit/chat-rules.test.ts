import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import {
  agentActor,
  agentPresent,
  beyondReach,
  checkText,
  checkUpload,
  customerNickname,
  endsIdle,
  endsStream,
  ensureMayDelete,
  ensureOpen,
  ensurePresent,
  eventDraft,
  extensionOf,
  fileRecordLimits,
  fileUsage,
  fileVisible,
  leavesQueue,
  mergeUserData,
  mustRead,
  nextPosition,
  othersTyping,
  pollEnded,
  readable,
  requeuesOnLeave,
  touchDue,
  transferOf,
  typeAllowed,
  typingLive,
  typingStart,
  type FileRules,
} from "../../src/domain/chat/rules.js";
import type { Actor, ChatEventRecord, EventKind, Participant, ParticipantRef } from "../../src/domain/chat/vocabulary.js";
import { GmsError } from "../../src/domain/errors.js";

// The chat's decisions (src/domain/chat/rules.ts), without a database.

/** failure is how a rule refused: its kind, its message and its detail; "none" when it did not. */
const failure = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof GmsError ? { kind: e.kind, message: e.message, detail: e.detail } : { kind: "other" };
  }
  return "none";
};
const kindOf = (f: () => unknown) => {
  const r = failure(f);
  return r === "none" ? r : r.kind;
};

const ann: ParticipantRef = { participantId: "p-ann", nickname: "Ann", kind: "client" };
const bob: ParticipantRef = { participantId: "p-bob", nickname: "Bob", kind: "agent" };
const actor = (over: Partial<Actor> = {}): Actor => ({ chatId: "c1", participant: bob, present: true, ended: false, lastPosition: 0, ...over });
const participant = (over: Partial<Participant>): Participant => ({ id: "p", chatId: "c1", kind: "agent", nickname: "Bob", identity: "agent-1", joinedAt: 0, leftAt: undefined, ...over });
const event = (position: number, kind: EventKind, from: ParticipantRef = ann): ChatEventRecord => ({ ...eventDraft(from, kind, 0), chatId: "c1", position });

describe("who may act", () => {
  it("nothing is added to a chat that has ended", () => {
    expect(kindOf(() => ensureOpen({ id: "c1", state: "waiting" }))).toBe("none");
    expect(kindOf(() => ensureOpen({ id: "c1", state: "active" }))).toBe("none");
    expect(failure(() => ensureOpen({ id: "c1", state: "ended" }))).toMatchObject({ kind: "failed_precondition", message: "chat c1 has ended" });
  });

  it("a participant who has left may only read", () => {
    expect(kindOf(() => ensurePresent(actor()))).toBe("none");
    expect(failure(() => ensurePresent(actor({ present: false })))).toMatchObject({ kind: "failed_precondition", message: "participant p-bob has left chat c1" });
  });

  it("a text is neither blank nor longer than chat.max_message_length bytes", () => {
    expect(kindOf(() => checkText("hello", 5))).toBe("none");
    expect(failure(() => checkText("héllo", 5))).toEqual({
      kind: "invalid_argument",
      message: "text is 6 bytes; chat.max_message_length is 5",
      detail: { type: "limit", limit: "chat.max_message_length", max: 5, actual: 6 },
    });
    expect(kindOf(() => checkText(" \n ", 5))).toBe("invalid_argument");
  });

  it("the customer is called by the nickname, else by first and last name; one of them is required", () => {
    expect(customerNickname({ nickname: " Ann ", firstName: "A", lastName: "B" })).toBe("Ann");
    expect(customerNickname({ nickname: " ", firstName: " Ann ", lastName: "Lee" })).toBe("Ann Lee");
    expect(kindOf(() => customerNickname({ nickname: "", firstName: "Ann", lastName: " " }))).toBe("invalid_argument");
  });
});

describe("agentActor: how an agent's key acts in a chat", () => {
  const chat = { state: "active" as const, lastPosition: 9 };

  it("a joined agent acts as their participant, bound by their own leaving", () => {
    const p = participant({ id: "p-bob" });
    expect(agentActor("c1", chat, [participant({ id: "p-ann", kind: "client", identity: "" }), p], "agent-1", false)).toEqual({
      actor: { chatId: "c1", participant: bob, present: true, ended: false, lastPosition: 9, boundByLeave: true },
    });
  });

  it("an agent who left (every time they joined) reads up to their last leaving: leftAs names their rows", () => {
    const first = participant({ id: "p1", leftAt: 5 });
    const second = participant({ id: "p2", leftAt: 8 });
    const r = agentActor("c1", chat, [first, second], "agent-1", false);
    expect(r.leftAs).toEqual(["p1", "p2"]);
    expect(r.actor).toMatchObject({ participant: { participantId: "p2" }, present: false, boundByLeave: true });
  });

  it("an agent who joined again acts as the present row, unbound", () => {
    const r = agentActor("c1", chat, [participant({ id: "p1", leftAt: 5 }), participant({ id: "p2" })], "agent-1", false);
    expect(r.actor).toMatchObject({ participant: { participantId: "p2" }, present: true });
    expect(r.leftAs).toBeUndefined();
  });

  it("an admin who left reads everything; an admin who never joined acts as supervisor", () => {
    const admin = agentActor("c1", chat, [participant({ id: "p1", leftAt: 5 })], "agent-1", true);
    expect(admin.actor).toMatchObject({ present: false, boundByLeave: false });
    expect(admin.leftAs).toBeUndefined();
    expect(agentActor("c1", { state: "ended", lastPosition: 3 }, [], "boss", true)).toEqual({
      actor: { chatId: "c1", participant: { participantId: "supervisor:boss", nickname: "boss", kind: "supervisor" }, present: true, ended: true, lastPosition: 3 },
    });
  });

  it("an agent who never joined, and an unknown chat, are the same refusal; an admin learns the chat is unknown", () => {
    const notJoined = { kind: "permission_denied", message: "agent-2 has not joined chat c1" };
    expect(failure(() => agentActor("c1", chat, [participant({})], "agent-2", false))).toMatchObject(notJoined);
    expect(failure(() => agentActor("c1", undefined, [], "agent-2", false))).toMatchObject(notJoined);
    expect(failure(() => agentActor("c1", undefined, [], "agent-2", true))).toMatchObject({ kind: "not_found", message: "chat c1 not found" });
  });
});

describe("what leaving, transferring and ending do", () => {
  it("the last agent leaving puts the chat back in its queue; another agent still there keeps it", () => {
    const customer = participant({ id: "c", kind: "client", identity: "" });
    const leaving = participant({ id: "a1" });
    expect(requeuesOnLeave([customer, leaving], "a1")).toBe(true);
    expect(requeuesOnLeave([customer, leaving, participant({ id: "a0", leftAt: 3 })], "a1")).toBe(true);
    expect(requeuesOnLeave([customer, leaving, participant({ id: "a2" })], "a1")).toBe(false);
  });

  it("an ending chat leaves its queue only if it was waiting", () => {
    expect(leavesQueue({ state: "waiting", endpoint: "support" })).toBe("support");
    expect(leavesQueue({ state: "active", endpoint: "support" })).toBeUndefined();
  });

  it("a transfer makes the agent leave, queues the chat anew from now, and takes it out of the old queue", () => {
    expect(transferOf(actor(), "support", "sales", 77)).toEqual({
      agentLeaves: true,
      leftText: "transferred to sales",
      change: { endpoint: "sales", state: "waiting", queuedAt: 77 },
      removedFrom: "support",
    });
    const supervisor = actor({ participant: { participantId: "supervisor:boss", nickname: "boss", kind: "supervisor" } });
    expect(transferOf(supervisor, "support", "support", 77)).toMatchObject({ agentLeaves: false, removedFrom: undefined });
  });

  it("user data: set over what it had, then removed keys taken out", () => {
    const current = { a: "1", b: "2" };
    expect(mergeUserData(current, { b: "3", c: "4" }, ["a", "z"])).toEqual({ b: "3", c: "4" });
    expect(current).toEqual({ a: "1", b: "2" });
  });
});

describe("the customer's activity", () => {
  it("is written at most every idle/4", () => {
    const now = 1_700_000_000_000;
    // Never written by this node: due.
    expect(touchDue(undefined, now, 40_000)).toBe(true);
    expect(touchDue(now, now + 9_999, 40_000)).toBe(false);
    expect(touchDue(now, now + 10_000, 40_000)).toBe(true);
  });

  it("a chat ends for idleness only if not ended and its customer was not seen since idle ago", () => {
    expect(endsIdle({ state: "active" }, 60, 100, 40)).toBe(true);
    expect(endsIdle({ state: "waiting" }, 61, 100, 40)).toBe(false);
    expect(endsIdle({ state: "ended" }, 0, 100, 40)).toBe(false);
    expect(endsIdle({ state: "active" }, undefined, 100, 40)).toBe(false);
  });
});

describe("how far each participant reads", () => {
  const left = event(3, "participant_left", bob);
  const transcript = [event(1, "participant_joined"), event(2, "message"), left, event(4, "message"), event(5, "chat_ended")];

  it("an agent who has left reads nothing newer than their leaving, and the chat is over for them", () => {
    const departed = actor({ present: false, readUpTo: 3, boundByLeave: true });
    expect(readable(departed, transcript)).toEqual({ events: transcript.slice(0, 3), departed: true });
    expect(beyondReach(departed, 4)).toBe(true);
    expect(beyondReach(departed, 3)).toBe(false);
    expect(beyondReach(departed, 0)).toBe(false);
    expect(mustRead(departed, 4, 10, true)).toBe(false);
  });

  it("a read under way when the agent left stops at their own leaving", () => {
    const reading = actor({ boundByLeave: true });
    expect(readable(reading, transcript)).toEqual({ events: transcript.slice(0, 3), departed: true });
    expect(endsStream(reading, left)).toBe(true);
    expect(endsStream(reading, event(3, "participant_left", ann))).toBe(false);
  });

  it("the customer and a supervisor read everything; a stream ends after CHAT_ENDED", () => {
    const customer = actor({ participant: ann });
    expect(readable(customer, transcript)).toEqual({ events: transcript, departed: false });
    expect(readable(actor({ boundByLeave: false }), transcript).events).toEqual(transcript);
    expect(endsStream(customer, left)).toBe(false);
    expect(endsStream(customer, transcript[4]!)).toBe(true);
  });

  it("an agent who has left ends their stream at the last position they may read", () => {
    const departed = actor({ present: false, readUpTo: 3 });
    expect(endsStream(departed, event(2, "message"))).toBe(false);
    expect(endsStream(departed, event(3, "message"))).toBe(true);
  });

  it("a poll skips the transcript when nothing past `from` is known, unless it must be fresh", () => {
    expect(mustRead(actor(), 5, 4, false)).toBe(false);
    expect(mustRead(actor(), 5, 5, false)).toBe(true);
    expect(mustRead(actor(), 5, 4, true)).toBe(true);
  });

  it("a poll's end and next position", () => {
    expect(pollEnded(false, false, transcript.slice(0, 4))).toBe(false);
    expect(pollEnded(false, false, transcript)).toBe(true);
    expect(pollEnded(false, true, [])).toBe(true);
    expect(pollEnded(true, false, [])).toBe(true);
    expect(nextPosition(transcript.slice(1, 3), 2)).toBe(4);
    // Nothing read: the cursor stays where it was.
    expect(nextPosition([], 7)).toBe(7);
  });
});

describe("typing", () => {
  const times = { coalesceMs: 2_000, timeoutMs: 10_000 };

  it("a start is announced once per coalescing window, and each start keeps it going for the quiet time", () => {
    expect(typingStart(undefined, 100, times)).toEqual({ startedAt: 100, until: 10_100, announce: true });
    const current = { participant: ann, startedAt: 100, until: 10_100 };
    expect(typingStart(current, 2_099, times)).toEqual({ startedAt: 100, until: 12_099, announce: false });
    expect(typingStart(current, 2_100, times)).toEqual({ startedAt: 2_100, until: 12_100, announce: true });
  });

  it("typing lapses at `until`; nobody is told of their own typing", () => {
    const rows = [
      { participant: ann, startedAt: 0, until: 10 },
      { participant: bob, startedAt: 0, until: 20 },
    ];
    expect(typingLive(rows, 9)).toBe(true);
    expect(typingLive(rows, 10)).toBe(false);
    expect(othersTyping([ann, bob], actor())).toEqual([ann]);
  });
});

describe("files", () => {
  const rules: FileRules = {
    ...parseConfig({}).chat.files,
    max_files: 2,
    max_file_bytes: 100,
    max_total_bytes: 150,
    allowed_extensions: ["png", "txt"],
    allowed_content_types: ["image/*", "text/plain"],
    require_agent: true,
  };
  const upload = (file: Partial<{ filename: string; contentType: string; size: number }>, usage = { files: 0, bytes: 0 }, uploader = { isCustomer: true, agentPresent: true }) =>
    failure(() => checkUpload(rules, { filename: "a.png", contentType: "image/png", size: 10, ...file }, usage, uploader));

  it("extensions and media types", () => {
    expect(extensionOf("photo.JPG")).toBe("jpg");
    expect(extensionOf(".profile")).toBe("");
    expect(extensionOf("name.")).toBe("");
    expect(typeAllowed("Image/PNG; q=1", ["image/*"])).toBe(true);
    expect(typeAllowed("text/plain", ["text/html"])).toBe(false);
  });

  it("an upload is checked against every limit before anything is stored", () => {
    expect(upload({})).toBe("none");
    expect(upload({ filename: "a.exe" })).toMatchObject({ kind: "invalid_argument" });
    expect(upload({ contentType: "application/pdf" })).toMatchObject({ kind: "invalid_argument" });
    expect(upload({ size: 101 })).toMatchObject({ kind: "invalid_argument", detail: { limit: "chat.files.max_file_bytes", max: 100, actual: 101 } });
    expect(upload({}, { files: 2, bytes: 0 })).toMatchObject({ kind: "resource_exhausted", detail: { limit: "chat.files.max_files", max: 2, actual: 3 } });
    expect(upload({ size: 60 }, { files: 1, bytes: 100 })).toMatchObject({ kind: "resource_exhausted", detail: { limit: "chat.files.max_total_bytes", max: 150, actual: 160 } });
    expect(upload({}, undefined, { isCustomer: true, agentPresent: false })).toMatchObject({ kind: "failed_precondition" });
    expect(upload({}, undefined, { isCustomer: false, agentPresent: false })).toBe("none");
  });

  it("usage, the agent's presence and a file record's limits", () => {
    const f = { id: "f", chatId: "c1", participantId: "p", dataId: "d", filename: "a", contentType: "t", createdAt: 0 };
    expect(fileUsage([{ ...f, size: 3 }, { ...f, size: 4 }])).toEqual({ files: 2, bytes: 7 });
    expect(agentPresent([participant({ leftAt: 1 }), participant({ kind: "client" })])).toBe(false);
    expect(agentPresent([participant({})])).toBe(true);
    expect(fileRecordLimits(100)).toEqual({ defaultTtlSeconds: 1, maxEntries: 1, maxKeyBytes: 16, maxValueBytes: 100, maxDataBytes: 100 });
  });

  it("only the uploader and a supervisor delete a file", () => {
    expect(kindOf(() => ensureMayDelete(actor(), { participantId: "p-bob" }))).toBe("none");
    expect(kindOf(() => ensureMayDelete(actor({ participant: { participantId: "supervisor:x", nickname: "x", kind: "supervisor" } }), { participantId: "p-bob" }))).toBe("none");
    expect(kindOf(() => ensureMayDelete(actor({ participant: ann }), { participantId: "p-bob" }))).toBe("permission_denied");
  });

  it("an agent who has left sees only the files uploaded before their leaving", () => {
    const departed = actor({ present: false, readUpTo: 5 });
    expect(fileVisible(departed, 5)).toBe(true);
    expect(fileVisible(departed, 6)).toBe(false);
    expect(fileVisible(departed, undefined)).toBe(false);
    expect(fileVisible(actor(), 99)).toBe(true);
  });
});
