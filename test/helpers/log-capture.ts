import { Writable } from "node:stream";
import { pino, type Logger, type LevelWithSilent } from "pino";

/** LogCapture is a pino logger whose lines a test reads back: as text, or parsed one record per line. */
export interface LogCapture {
  log: Logger;
  text(): string;
  records(): Record<string, unknown>[];
}

/** captureLog makes a logger (at `level`, default trace) writing into memory instead of stdout. */
export function captureLog(level: LevelWithSilent = "trace"): LogCapture {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString("utf8"));
      done();
    },
  });
  const text = () => chunks.join("");
  return {
    log: pino({ level }, sink),
    text,
    records: () =>
      text()
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
