import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { END, figuresTable, newestPerModule, parseResultName, readResults, README_PATH, START, staleFiles, withFigures, type ResultFile } from "../../bench/figures.js";

/** result is a result file of a module with one row, named as `npm run bench` names them. */
function result(file: string, rows = 1): ResultFile {
  const name = parseResultName(file);
  return {
    name,
    report: {
      module: name.module,
      title: `${name.module} at ${name.stamp}`,
      startedAt: "2026-12-07T04:05:31.144Z",
      rows: Array.from({ length: rows }, (_, i) => ({ scenario: "s", subject: `subject ${i}`, opsPerSec: 100 + i })),
    },
  };
}

describe("bench figures (bench/figures.ts)", () => {
  it("bench/README.md holds the table the newest result files give (run `npm run bench:figures` after a bench run)", () => {
    const readme = readFileSync(README_PATH, "utf8");
    expect(readme).toBe(withFigures(readme, figuresTable(newestPerModule(readResults()))));
  });

  it("the newest file of a module is the latest run of the current code; a -before- baseline only when there is nothing else", () => {
    const files = [
      "access-2026-12-07T03-54-14Z.json",
      "access-2026-12-07T04-02-45Z-before-1c11a63.json",
      "access-2026-12-07T03-51-30Z-before-1c11a63.json",
      "chat-2026-11-25T15-20-25Z.json",
      "chat-2026-11-25T14-21-58Z.json",
      "nodes-2026-12-03T11-32-51Z-before-abc1234.json",
      "nodes-2026-12-03T11-25-51Z-before-abc1234.json",
    ].map((f) => result(f));
    const chosen = newestPerModule(files);
    expect(chosen.map((f) => f.name.file)).toEqual(["access-2026-12-07T03-54-14Z.json", "chat-2026-11-25T15-20-25Z.json", "nodes-2026-12-03T11-32-51Z-before-abc1234.json"]);
    expect(staleFiles(files, chosen).sort()).toEqual([
      "access-2026-12-07T03-51-30Z-before-1c11a63.json",
      "access-2026-12-07T04-02-45Z-before-1c11a63.json",
      "chat-2026-11-25T14-21-58Z.json",
      "nodes-2026-12-03T11-25-51Z-before-abc1234.json",
    ]);
  });

  it("a file without rows is never the newest", () => {
    const chosen = newestPerModule([result("storage-2026-12-07T03-50-00Z.json"), result("storage-2026-12-07T04-16-08Z.json", 0)]);
    expect(chosen.map((f) => f.name.file)).toEqual(["storage-2026-12-07T03-50-00Z.json"]);
  });

  it("a result file of another name is an error, not skipped", () => {
    expect(() => parseResultName("access-latest.json")).toThrow(/expected <module>-/);
    expect(() => parseResultName("access-2026-12-07T03-54-14Z-after.json")).toThrow(/expected <module>-/);
  });

  it("the table replaces what is between the markers and nothing else; the markers are required", () => {
    const readme = `intro\n${START}\nold table\n${END}\noutro\n`;
    expect(withFigures(readme, "| new |")).toBe(`intro\n${START}\n| new |\n${END}\noutro\n`);
    expect(() => withFigures("no markers", "| new |")).toThrow(/markers/);
  });

  it("the table has one row per result row, each module named once, and a cell's | escaped", () => {
    const f = result("access-2026-12-07T03-54-14Z.json", 2);
    f.report.rows[0]!.subject = "a | b";
    const table = figuresTable([f]).split("\n");
    expect(table[2]).toBe("| access | s | a \\| b | 100 | - | - | - | - | baseline |  |  |");
    expect(table[3]).toBe("|  |  | subject 1 | 101 | - | - | - | - | baseline |  |  |");
    expect(table[5]).toContain("`access-2026-12-07T03-54-14Z.json`");
  });
});
