/** DataValue is one stored value: a text or a file (GMS application data). */
export type DataValue =
  | { kind: "text"; text: string }
  | { kind: "file"; filename: string; contentType: string; content: Uint8Array };

/** DataEntries are a record's values by key. */
export type DataEntries = Map<string, DataValue>;

const encoder = new TextEncoder();

/** byteLength is the size a key or text takes in UTF-8. */
export function byteLength(s: string): number {
  return encoder.encode(s).byteLength;
}

/** valueSize is the number of bytes a value counts against the limits: its text or file content. */
export function valueSize(value: DataValue): number {
  return value.kind === "text" ? byteLength(value.text) : value.content.byteLength;
}
