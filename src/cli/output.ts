// What the operator's commands print: aligned tables and key/value blocks for people, proto3 JSON
// for scripts. Everything shown to a person passes through `cell`, because much of it was typed by
// someone else (a customer's nickname, a stored text): control characters are escaped, so a value
// cannot move the cursor, recolour the terminal or forge a line of its own.
import { toJsonString, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";

/** Output is what a command prints: stdout, an optional note for stderr, and its exit status (default 0). */
export interface Output {
  stdout: string;
  stderr?: string | undefined;
  status?: number;
}

/** write prints text on a stream and resolves once it is handed to the system (so an exit after it loses nothing). */
export function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return text === "" ? Promise.resolve() : new Promise((resolve) => stream.write(text, () => resolve()));
}

/** NONE is what a table shows for an unset value. */
export const NONE = "-";

/** CONTROL matches the characters a terminal acts on: C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** cell is a value as a table shows it: control characters escaped (`\n`, `\u001b`), long ones cut at `max` characters with "…". */
export function cell(value: string, max = 200): string {
  const escaped = value.replace(CONTROL, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : c === "\r" ? "\\r" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
  return escaped.length > max ? `${escaped.slice(0, max - 1)}…` : escaped;
}

/** Column is a table column: its title, and whether its values line up on the right (numbers). */
export interface Column {
  title: string;
  right?: boolean;
}

/**
 * table lays rows out under their column titles, each column as wide as its widest value, two
 * spaces apart, no trailing blanks. Cells are escaped (cell).
 */
export function table(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const cells = rows.map((r) => columns.map((_, i) => cell(r[i] ?? NONE)));
  const widths = columns.map((c, i) => Math.max(c.title.length, ...cells.map((r) => (r[i] ?? "").length)));
  const line = (values: readonly string[]) =>
    values
      .map((v, i) => (columns[i]?.right === true ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.title)), ...cells.map(line)].join("\n") + "\n";
}

/** fields lays out `name value` pairs, the names aligned: one record for a person to read. */
export function fields(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`.trimEnd()).join("\n") + "\n";
}

/** json is a message as one line of proto3 JSON, every field present (unset ones with their defaults), for scripts. */
export function json<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): string {
  return toJsonString(schema, message, { alwaysEmitImplicit: true }) + "\n";
}

/** time is a timestamp in UTC to the second (2025-06-01T10:00:00Z), or NONE when unset. */
export function time(ts: Timestamp | undefined): string {
  if (ts === undefined) return NONE;
  return new Date(timestampMs(ts)).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** duration is a span of milliseconds as a person says it, to the second: 35s, 4m10s, 2h05m, 3d04h. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, "0")}h`;
}

/** until is how long from `now` to a timestamp (NONE when unset, "0s" when past). */
export function until(ts: Timestamp | undefined, now: number): string {
  return ts === undefined ? NONE : duration(timestampMs(ts) - now);
}

/** since is how long from a timestamp to `now` (NONE when unset). */
export function since(ts: Timestamp | undefined, now: number): string {
  return ts === undefined ? NONE : duration(now - timestampMs(ts));
}

/**
 * enumName is an enum value's name in lowercase, as protobuf-es names it without the enum's prefix
 * (SessionState.ACTIVE → "active", ParticipantType.AGENT → "agent"); a value the contract does not
 * name shows as its number.
 */
export function enumName(names: Record<number, string>, value: number): string {
  return names[value]?.toLowerCase().replaceAll("_", " ") ?? String(value);
}
