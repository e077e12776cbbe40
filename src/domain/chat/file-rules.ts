import type { Config } from "../../config.js";
import { GmsError } from "../errors.js";

/** FileRules are the `chat.files` limits. */
export type FileRules = Config["chat"]["files"];

/** FileUsage is what a chat's files already take. */
export interface FileUsage {
  files: number;
  bytes: number;
}

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
