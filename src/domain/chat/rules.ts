/**
 * The chat rules as plain functions: who may act in which state, what leaving, transferring and
 * ending do to a chat, how far an agent who left may read, when typing coalesces and lapses, what
 * a file may be. No store, no bus, no clock: the modules beside this one call them with what they
 * read, and test/unit/chat-rules.test.ts checks them without a database.
 */
import { createHash } from "node:crypto";
import type { Config } from "../../config.js";
import { GmsError, invalid } from "../errors.js";
import type { StorageLimits } from "../storage.js";
import { byteLength } from "../value.js";
import type { Actor, Chat, ChatChange, ChatEventRecord, ChatFile, EventDraft, EventKind, Participant, ParticipantRef, TypingRecord } from "./vocabulary.js";

// ---- events ----

/** eventDraft is an event with every optional field blank, before the store gives it a position. */
export function eventDraft(from: ParticipantRef, kind: EventKind, time: number, more: Partial<ChatEventRecord> = {}): EventDraft {
  return { kind, from, text: "", messageType: "", time, userData: {}, clientMessageId: "", fileId: "", fileName: "", fileSize: 0, fileContentType: "", ...more };
}

/** refOf is a participant as events show it. */
export const refOf = (p: Participant): ParticipantRef => ({ participantId: p.id, nickname: p.nickname, kind: p.kind });

/** SYSTEM is the participant the chat's own events (an idle timeout's end) come from. */
export const SYSTEM: ParticipantRef = { participantId: "system", nickname: "system", kind: "system" };

/** hashKey is how a chat's secure key is kept: its SHA-256, never the key. */
export const hashKey = (key: string) => createHash("sha256").update(key, "utf8").digest("hex");

// ---- who may act ----

/** hasEnded is the refusal of a change to a chat that has ended. */
export const hasEnded = (chatId: string) => new GmsError("failed_precondition", `chat ${chatId} has ended`);

/** ensureOpen refuses a change to a chat that has ended: nothing is added to it any more. */
export function ensureOpen(chat: Pick<Chat, "id" | "state">): void {
  if (chat.state === "ended") throw hasEnded(chat.id);
}

/** ensurePresent refuses a change by a participant who has left: they may only read. */
export function ensurePresent(actor: Actor): void {
  if (!actor.present) throw new GmsError("failed_precondition", `participant ${actor.participant.participantId} has left chat ${actor.chatId}`);
}

/** checkText refuses a message or notice that is blank or longer than chat.max_message_length bytes. */
export function checkText(text: string, maxLength: number): void {
  const size = byteLength(text);
  if (size > maxLength) {
    throw new GmsError("invalid_argument", `text is ${size} bytes; chat.max_message_length is ${maxLength}`, {
      type: "limit",
      limit: "chat.max_message_length",
      max: maxLength,
      actual: size,
    });
  }
  if (text.trim() === "") throw invalid("text: must not be blank");
}

/**
 * checkReadPosition refuses a read receipt for a position the transcript has not reached: a
 * participant can only have read what is there.
 */
export function checkReadPosition(position: number, lastPosition: number): void {
  if (!Number.isSafeInteger(position) || position < 1) throw invalid("read_position: must be a position of the transcript, from 1");
  if (position > lastPosition) throw new GmsError("failed_precondition", `read_position ${position} is beyond the transcript's last position ${lastPosition}`);
}

/** customerNickname is what the customer is called: the nickname, else "first last"; one of them is required. */
export function customerNickname(input: { nickname: string; firstName: string; lastName: string }): string {
  if (input.nickname.trim() === "" && (input.firstName.trim() === "" || input.lastName.trim() === "")) {
    throw invalid("nickname, or first_name and last_name, is required");
  }
  return input.nickname.trim() !== "" ? input.nickname.trim() : `${input.firstName.trim()} ${input.lastName.trim()}`;
}

/**
 * agentActor is how an agent's key acts in a chat: as their participant in it (the present one, or
 * the last if they left: then, unless they are an admin, they read nothing newer than their
 * leaving, whose position is the last PARTICIPANT_LEFT of `leftAs`), or as a supervisor for an
 * admin who never joined. An agent who never joined is refused, and so is an unknown chat: an
 * agent's key does not learn which chat ids exist (a supervisor may).
 */
export function agentActor(
  chatId: string,
  chat: Pick<Chat, "state" | "lastPosition"> | undefined,
  participants: readonly Participant[],
  identity: string,
  isAdmin: boolean,
): { actor: Actor; leftAs?: string[] } {
  const notJoined = () => new GmsError("permission_denied", `${identity} has not joined chat ${chatId}`);
  if (chat === undefined) throw isAdmin ? new GmsError("not_found", `chat ${chatId} not found`) : notJoined();
  const mine = participants.filter((p) => p.kind === "agent" && p.identity === identity);
  const current = mine.find((p) => p.leftAt === undefined) ?? mine[mine.length - 1];
  const known = { ended: chat.state === "ended", lastPosition: chat.lastPosition };
  if (current !== undefined) {
    const present = current.leftAt === undefined;
    const actor: Actor = { chatId, participant: refOf(current), present, ...known, boundByLeave: !isAdmin };
    // Left or transferred (every time they were in it): nothing newer than their last leaving.
    return !present && !isAdmin ? { actor, leftAs: mine.map((p) => p.id) } : { actor };
  }
  if (isAdmin) return { actor: { chatId, participant: { participantId: `supervisor:${identity}`, nickname: identity, kind: "supervisor" }, present: true, ...known } };
  throw notJoined();
}

// ---- what leaving, transferring and ending do ----

/**
 * requeuesOnLeave says whether an agent leaving puts the chat back in its queue: when no other
 * agent is left in it (it keeps its place: it has waited longest).
 */
export function requeuesOnLeave(participants: readonly Participant[], leaving: string): boolean {
  return !participants.some((p) => p.kind === "agent" && p.leftAt === undefined && p.id !== leaving);
}

/** leavesQueue is the queue an ending chat leaves: its endpoint's, if it was waiting there. */
export const leavesQueue = (chat: Pick<Chat, "state" | "endpoint">): string | undefined => (chat.state === "waiting" ? chat.endpoint : undefined);

/**
 * Transfer is what a transfer does: an agent transferring leaves the chat (a supervisor moves it
 * without being in it); the chat waits in the new queue from now; the old queue loses it.
 */
export interface Transfer {
  /** agentLeaves says whether the transferring participant leaves, with a PARTICIPANT_LEFT saying where the chat went. */
  agentLeaves: boolean;
  leftText: string;
  change: ChatChange;
  /** removedFrom is the queue the chat leaves (undefined: it stays in the same one). */
  removedFrom: string | undefined;
}

/** transferOf is what transferring a chat from queue `from` to `to` at `now` does (see Transfer). */
export function transferOf(actor: Actor, from: string, to: string, now: number): Transfer {
  return {
    agentLeaves: actor.participant.kind === "agent",
    leftText: `transferred to ${to}`,
    change: { endpoint: to, state: "waiting", queuedAt: now },
    removedFrom: from === to ? undefined : from,
  };
}

/** mergeUserData is a chat's user data after an update: `set` over what it had, then `remove` taken out. */
export function mergeUserData(current: Readonly<Record<string, string>>, set: Readonly<Record<string, string>>, remove: readonly string[]): Record<string, string> {
  const merged = { ...current, ...set };
  for (const k of remove) delete merged[k];
  return merged;
}

// ---- the customer's activity (idle timeout) ----

/** touchDue says whether the customer's activity must be written again: at most every idle/4. */
export const touchDue = (lastWritten: number | undefined, now: number, idleMs: number): boolean => now - (lastWritten ?? 0) >= idleMs / 4;

/**
 * endsIdle says whether a chat ends for idleness at `now`, as read under its lock: not already
 * ended, and its customer not active since idleMs ago (they may have come back meanwhile).
 */
export const endsIdle = (chat: Pick<Chat, "state">, customerSeenAt: number | undefined, now: number, idleMs: number): boolean =>
  chat.state !== "ended" && customerSeenAt !== undefined && customerSeenAt <= now - idleMs;

// ---- reading: how far each participant reads ----

/** isOwnLeave says whether the event is the actor's leaving, past which an agent reads nothing. */
export function isOwnLeave(actor: Actor, e: ChatEventRecord): boolean {
  return actor.boundByLeave === true && e.kind === "participant_left" && e.from.participantId === actor.participant.participantId;
}

/** readable cuts events to what the actor may read: up to readUpTo, and up to their own leaving. */
export function readable(actor: Actor, events: ChatEventRecord[]): { events: ChatEventRecord[]; departed: boolean } {
  let out = actor.readUpTo === undefined ? events : events.filter((e) => e.position <= (actor.readUpTo ?? 0));
  const leave = out.findIndex((e) => isOwnLeave(actor, e));
  if (leave >= 0) out = out.slice(0, leave + 1);
  return { events: out, departed: actor.readUpTo !== undefined || leave >= 0 };
}

/** beyondReach says whether a read from `from` is past all the actor may read (an agent who left). */
export const beyondReach = (actor: Actor, from: number): boolean => actor.readUpTo !== undefined && Math.max(1, from) > actor.readUpTo;

/**
 * pastTheEnd says whether a stream from `from` has nothing left to wait for: the chat has ended and
 * its transcript (CHAT_ENDED last) ends before `from` (a page reloaded after it showed the end).
 */
export const pastTheEnd = (actor: Actor, from: number): boolean => actor.ended && Math.max(1, from) > actor.lastPosition;

/** endsStream says whether a stream ends after the event: CHAT_ENDED, and for an agent their own leaving. */
export const endsStream = (actor: Actor, e: ChatEventRecord): boolean =>
  e.kind === "chat_ended" || isOwnLeave(actor, e) || (actor.readUpTo !== undefined && e.position >= actor.readUpTo);

/**
 * mustRead says whether a poll from `start` reads the transcript: not when it is past all the actor
 * may read, nor, unless it must be fresh (a long-poll), when the transcript is known to end before
 * `start` (at `last`).
 */
export const mustRead = (actor: Actor, start: number, last: number, fresh: boolean): boolean => !(beyondReach(actor, start) || (!fresh && last < start));

/**
 * pollEnded says whether a poll tells that the chat is over: it had ended before (endedBefore),
 * CHAT_ENDED is among the events read, or it is over for an agent who has left (departed).
 */
export const pollEnded = (departed: boolean, endedBefore: boolean, events: readonly ChatEventRecord[]): boolean => departed || endedBefore || events.some((e) => e.kind === "chat_ended");

/** nextPosition is where the next poll reads, after the events a poll from `start` returned. */
export const nextPosition = (events: readonly ChatEventRecord[], start: number): number => (events[events.length - 1]?.position ?? start - 1) + 1;

// ---- typing ----

/** TypingTimes are the coalescing window and the quiet time after which typing lapses, in ms. */
export interface TypingTimes {
  coalesceMs: number;
  timeoutMs: number;
}

/**
 * typingStart is what a participant starting to type at `now` records: typing until the quiet time
 * from now, within the coalescing window of a start still running (then it is not announced again).
 */
export function typingStart(current: TypingRecord | undefined, now: number, times: TypingTimes): { startedAt: number; until: number; announce: boolean } {
  const coalesced = current !== undefined && now - current.startedAt < times.coalesceMs;
  return { startedAt: coalesced ? current.startedAt : now, until: now + times.timeoutMs, announce: !coalesced };
}

/** typingLive says whether every one of the typing records still holds at `now` (none has lapsed). */
export const typingLive = (typing: readonly TypingRecord[], now: number): boolean => typing.every((t) => t.until > now);

/** othersTyping is who types, but the actor: nobody is told of their own typing. */
export const othersTyping = (typing: readonly ParticipantRef[], actor: Actor): ParticipantRef[] => typing.filter((p) => p.participantId !== actor.participant.participantId);

// ---- files ----

/** FileRules are the `chat.files` limits. */
export type FileRules = Config["chat"]["files"];

/** FileUsage is what a chat's files already take. */
export interface FileUsage {
  files: number;
  bytes: number;
}

/** fileUsage is what the files take. */
export const fileUsage = (files: readonly ChatFile[]): FileUsage => ({ files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) });

/** extensionOf is a file name's extension, lowercase, without the dot ("" when none). */
export function extensionOf(filename: string): string {
  const dot = filename.lastIndexOf(".");
  return dot <= 0 || dot === filename.length - 1 ? "" : filename.slice(dot + 1).toLowerCase();
}

/** typeAllowed tells whether a media type is in a list of allowed types, where "image/*" allows any image. */
export function typeAllowed(contentType: string, allowed: readonly string[]): boolean {
  const type = contentType.toLowerCase().split(";")[0]?.trim() ?? "";
  return allowed.some((a) => {
    const pattern = a.toLowerCase();
    return pattern.endsWith("/*") ? type.startsWith(pattern.slice(0, -1)) : type === pattern;
  });
}

const limit = (name: string, max: number, actual: number, kind: "invalid_argument" | "resource_exhausted", message: string) =>
  new GmsError(kind, message, { type: "limit", limit: `chat.files.${name}`, max, actual });

/**
 * checkUpload applies every file rule to an upload before anything is stored: type and extension,
 * size, the chat's count and total, and (for the customer) whether an agent must be there.
 */
export function checkUpload(
  rules: FileRules,
  file: { filename: string; contentType: string; size: number },
  usage: FileUsage,
  uploader: { isCustomer: boolean; agentPresent: boolean },
): void {
  if (rules.allowed_extensions.length > 0 && !rules.allowed_extensions.includes(extensionOf(file.filename))) {
    throw new GmsError("invalid_argument", `file: "${file.filename}" has an extension that is not allowed (allowed: ${rules.allowed_extensions.join(", ")})`);
  }
  if (rules.allowed_content_types.length > 0 && !typeAllowed(file.contentType, rules.allowed_content_types)) {
    throw new GmsError("invalid_argument", `file: content type "${file.contentType}" is not allowed (allowed: ${rules.allowed_content_types.join(", ")})`);
  }
  if (file.size > rules.max_file_bytes) {
    throw limit("max_file_bytes", rules.max_file_bytes, file.size, "invalid_argument", `file is ${file.size} bytes; chat.files.max_file_bytes is ${rules.max_file_bytes}`);
  }
  if (usage.files + 1 > rules.max_files) {
    throw limit("max_files", rules.max_files, usage.files + 1, "resource_exhausted", `the chat holds ${usage.files} files; chat.files.max_files is ${rules.max_files}`);
  }
  if (usage.bytes + file.size > rules.max_total_bytes) {
    throw limit(
      "max_total_bytes",
      rules.max_total_bytes,
      usage.bytes + file.size,
      "resource_exhausted",
      `the chat's files would take ${usage.bytes + file.size} bytes; chat.files.max_total_bytes is ${rules.max_total_bytes}`,
    );
  }
  if (uploader.isCustomer && rules.require_agent && !uploader.agentPresent) {
    throw new GmsError("failed_precondition", "files can be sent once an agent has joined the chat (chat.files.require_agent)");
  }
}

/** agentPresent says whether an agent is in the chat now. */
export const agentPresent = (participants: readonly Participant[]): boolean => participants.some((p) => p.kind === "agent" && p.leftAt === undefined);

/** fileRecordLimits are the storage limits of a file's record: one entry, as large as a file may be. */
export const fileRecordLimits = (maxFileBytes: number): StorageLimits => ({ defaultTtlSeconds: 1, maxEntries: 1, maxKeyBytes: 16, maxValueBytes: maxFileBytes, maxDataBytes: maxFileBytes });

/** ensureMayDelete refuses deleting a file to anyone but its uploader and a supervisor. */
export function ensureMayDelete(actor: Actor, file: Pick<ChatFile, "participantId">): void {
  if (file.participantId !== actor.participant.participantId && actor.participant.kind !== "supervisor") {
    throw new GmsError("permission_denied", "only the participant who uploaded a file may delete it");
  }
}

/**
 * fileVisible says whether the actor may download a file uploaded at `uploadedAt` (its
 * FILE_UPLOADED position): an agent who has left sees only what came before their leaving; a
 * later file is as unknown to them as one that never was.
 */
export const fileVisible = (actor: Actor, uploadedAt: number | undefined): boolean => actor.readUpTo === undefined || (uploadedAt ?? Infinity) <= actor.readUpTo;
