/**
 * A chat's files: uploading (checked against chat.files by rules.ts, its bytes kept as a storage
 * record that expires with the chat, FILE_UPLOADED in the transcript), downloading, deleting
 * (FILE_DELETED) and the limits with what the chat already uses.
 */
import { GmsError } from "../errors.js";
import { newId } from "../ids.js";
import type { ChatCore } from "./core.js";
import { agentPresent, checkUpload, ensureMayDelete, ensureOpen, ensurePresent, fileRecordLimits, fileUsage, fileVisible, refOf, type FileRules } from "./rules.js";
import type { ChatData } from "./store.js";
import type { Actor, ChatFile, ParticipantRef } from "./vocabulary.js";

/** NewFile is a file to upload. */
export interface NewFile {
  filename: string;
  contentType: string;
  content: Uint8Array;
}

/** DownloadedFile is a chat file with its content. */
export interface DownloadedFile {
  file: ChatFile;
  content: Uint8Array;
  uploadedBy: ParticipantRef;
}

/** FileLimitsView is the file rules with what the chat already uses. */
export interface FileLimitsView extends FileRules {
  usedFiles: number;
  usedBytes: number;
}

/** ChatFiles is the files of chats. */
export interface ChatFiles {
  uploadFile(actor: Actor, file: NewFile): Promise<{ fileId: string; position: number }>;
  downloadFile(actor: Actor, fileId: string): Promise<DownloadedFile>;
  deleteFile(actor: Actor, fileId: string): Promise<number>;
  fileLimits(actor: Actor): Promise<FileLimitsView>;
}

/** createFiles builds the files of chats over the core, their bytes in `data`. */
export function createFiles(core: ChatCore, data: ChatData): ChatFiles {
  const { store, clock, limits, activity } = core;

  return {
    async uploadFile(actor, file) {
      ensurePresent(actor);
      return core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        const used = fileUsage(await store.liveFiles(chat.id, uow));
        const size = file.content.byteLength;
        const rules = limits().files;
        checkUpload(rules, { filename: file.filename, contentType: file.contentType, size }, used, {
          isCustomer: actor.participant.kind === "client",
          agentPresent: agentPresent(await store.participants(chat.id, uow)),
        });
        const stored = await data.createIn(uow, new Map([["file", { kind: "file" as const, ...file }]]), chat.expiresAt, fileRecordLimits(rules.max_file_bytes));
        const fileId = newId();
        await store.addFile(uow, {
          id: fileId,
          chatId: chat.id,
          participantId: actor.participant.participantId,
          dataId: stored.dataId,
          filename: file.filename,
          contentType: file.contentType,
          size,
          createdAt: clock.now(),
        });
        const e = await core.append(uow, chat, core.draft(actor.participant, "file_uploaded", { fileId, fileName: file.filename, fileSize: size, fileContentType: file.contentType }));
        emit(e);
        return { fileId, position: e.position };
      });
    },

    async downloadFile(actor, fileId) {
      await activity.touch(actor);
      const file = await store.readFile(actor.chatId, fileId);
      const notFound = () => new GmsError("not_found", `file ${fileId} not found in chat ${actor.chatId}`);
      if (file === undefined) throw notFound();
      if (actor.readUpTo !== undefined && !fileVisible(actor, await store.uploadPosition(actor.chatId, fileId))) throw notFound();
      const value = (await data.get(file.dataId)).entries.get("file");
      if (value?.kind !== "file") throw new GmsError("not_found", `file ${fileId} has expired`);
      const uploader = (await store.participants(actor.chatId)).find((p) => p.id === file.participantId);
      return {
        file,
        content: value.content,
        uploadedBy: uploader === undefined ? { participantId: file.participantId, nickname: "", kind: "supervisor" } : refOf(uploader),
      };
    },

    async deleteFile(actor, fileId) {
      ensurePresent(actor);
      return core.transact(actor.chatId, async (uow, chat, emit) => {
        ensureOpen(chat);
        const file = await store.readFile(chat.id, fileId, uow);
        if (file === undefined) throw new GmsError("not_found", `file ${fileId} not found in chat ${chat.id}`);
        ensureMayDelete(actor, file);
        const now = clock.now();
        await store.markFileDeleted(uow, fileId, now);
        await data.deleteIn(uow, file.dataId, now);
        const e = await core.append(uow, chat, core.draft(actor.participant, "file_deleted", { fileId, fileName: file.filename, fileSize: file.size, fileContentType: file.contentType }));
        emit(e);
        return e.position;
      });
    },

    async fileLimits(actor) {
      // What the chat holds now is newer than an agent's leaving.
      if (actor.readUpTo !== undefined) ensurePresent(actor);
      await activity.touch(actor);
      const used = fileUsage(await store.liveFiles(actor.chatId));
      return { ...limits().files, usedFiles: used.files, usedBytes: used.bytes };
    },
  };
}
