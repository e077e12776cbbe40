// The licence a user adopting opengms reads: Apache-2.0 in LICENSE and package.json, and a NOTICE
// that names every vendored third-party tree with its own licence file.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..", "..");

/** licenceDirs are the directories under third_party that carry a LICENSE file of their own. */
function licenceDirs(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...licenceDirs(path));
    else if (name === "LICENSE") out.push(relative(ROOT, dir));
  }
  return out;
}

describe("licence", () => {
  it("is Apache-2.0 in LICENSE and package.json (and the lockfile's root)", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { license?: string };
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { license?: string }> };
    expect(pkg.license).toBe("Apache-2.0");
    expect(lock.packages[""]?.license).toBe("Apache-2.0");
    const text = readFileSync(join(ROOT, "LICENSE"), "utf8");
    expect(text).toContain("Apache License");
    expect(text).toContain("Version 2.0, January 2004");
    expect(text).toContain("END OF TERMS AND CONDITIONS");
  });

  it("NOTICE names every vendored tree that has a licence of its own", () => {
    const notice = readFileSync(join(ROOT, "NOTICE"), "utf8");
    const dirs = licenceDirs(join(ROOT, "third_party"));
    expect(dirs.length).toBeGreaterThan(0);
    for (const dir of dirs) expect(notice, `NOTICE should name ${dir}`).toContain(`${dir}/LICENSE`);
  });
});
