// files.ts: the chat's file limits shown before an upload and checked before sending (the server
// checks them again), and a downloaded file handed to the browser.
import type { ChatFile, FileLimits } from "@opengms/client";
import { bytes } from "./format.js";

/** extensionOf is a file name's extension, lower case, without the dot ("" for none). */
function extensionOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot <= 0 ? "" : name.slice(dot + 1).toLowerCase();
}

/** typeAllowed tells whether a media type is among the allowed ones (which may end in /*). */
function typeAllowed(type: string, allowed: readonly string[]): boolean {
  const t = type.toLowerCase();
  return allowed.some((a) => {
    const p = a.toLowerCase();
    return p.endsWith("/*") ? t.startsWith(p.slice(0, -1)) : t === p;
  });
}

/** describeLimits says what may be sent: "Up to 5 MB per file · PNG, PDF · 8 files left". */
export function describeLimits(l: FileLimits): string {
  const parts = [`Up to ${bytes(l.maxFileBytes)} per file`];
  const kinds = [...l.allowedExtensions.map((e) => e.replace(/^\./, "").toUpperCase()), ...l.allowedContentTypes];
  if (kinds.length > 0) parts.push(kinds.join(", "));
  const left = Math.max(0, l.maxFiles - l.usedFiles);
  parts.push(left === 1 ? "1 file left" : `${left} files left`);
  return parts.join(" · ");
}

/** accept is the file input's accept attribute for the limits ("" when any file goes). */
export function accept(l: FileLimits): string {
  return [...l.allowedExtensions.map((e) => `.${e.replace(/^\./, "")}`), ...l.allowedContentTypes].join(",");
}

/** refusal says why a file may not be sent under the limits, or undefined when it may. */
export function refusal(l: FileLimits, file: File): string | undefined {
  if (file.size === 0) return `“${file.name}” is empty.`;
  if (l.usedFiles >= l.maxFiles) return `No more files can be sent in this chat (${l.maxFiles} at most).`;
  if (file.size > Number(l.maxFileBytes)) return `“${file.name}” is ${bytes(file.size)}; files may be up to ${bytes(l.maxFileBytes)}.`;
  if (Number(l.usedBytes) + file.size > Number(l.maxTotalBytes)) return `“${file.name}” would go over the ${bytes(l.maxTotalBytes)} this chat may hold.`;
  if (l.allowedExtensions.length > 0 && !l.allowedExtensions.map((e) => e.replace(/^\./, "").toLowerCase()).includes(extensionOf(file.name)))
    return `Files of this kind cannot be sent here (${l.allowedExtensions.join(", ")} only).`;
  if (l.allowedContentTypes.length > 0 && !typeAllowed(file.type || "application/octet-stream", l.allowedContentTypes))
    return `Files of this kind cannot be sent here (${l.allowedContentTypes.join(", ")} only).`;
  return undefined;
}

/** save hands a downloaded file to the browser, which saves it under its name. */
export function save(file: ChatFile): void {
  const f = file.file;
  if (f === undefined) return;
  const url = URL.createObjectURL(new Blob([f.content as Uint8Array<ArrayBuffer>], { type: f.contentType || "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = f.filename;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
