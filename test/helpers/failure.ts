import { expect } from "vitest";
import { GmsError } from "../../src/domain/errors.js";

/** failure awaits a promise that must reject with a domain refusal, and returns the refusal. */
export async function failure(p: Promise<unknown>): Promise<GmsError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(GmsError);
  return e as GmsError;
}
