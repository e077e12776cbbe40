// The rules of matching a call (GMS match-interaction), as plain functions: which of a number's live
// reservations a call matches, why none does, and when the code-guessing guard refuses to try.
// access.ts hands judgeCall to the store's match, which runs it between its statements, holding
// the number's candidates; they need no database.

/** MatchCandidate is a live reservation as matching sees it. */
export interface MatchCandidate {
  reservation: { accessCode: string | undefined; phoneNumber: string };
}

/** Call is what the IVR knows of a call: the caller's number (ANI) and the code typed, when given. */
export interface Call {
  phone?: string | undefined;
  code?: string | undefined;
  /** returnMultiple matches every candidate left, not only the most recent. */
  returnMultiple: boolean;
}

/** NoMatchReason says why a call matched nothing. */
export type NoMatchReason = "no_reservation" | "code_mismatch" | "phone_mismatch";

/**
 * chooseMatches picks what a call matches among a number's live reservations, given newest first:
 * a code given must match, a phone number given must match; the most recent candidate, or all of
 * them with returnMultiple. None: the reason, the code's mismatch before the phone's.
 */
export function chooseMatches<T extends MatchCandidate>(live: readonly T[], call: Call): { matched: T[] } | { reason: NoMatchReason } {
  if (live.length === 0) return { reason: "no_reservation" };
  const byCode = call.code === undefined ? live : live.filter((l) => l.reservation.accessCode === call.code);
  const byBoth = call.phone === undefined ? byCode : byCode.filter((l) => l.reservation.phoneNumber === call.phone);
  if (byBoth.length === 0) return { reason: byCode.length === 0 ? "code_mismatch" : "phone_mismatch" };
  return { matched: call.returnMultiple ? [...byBoth] : byBoth.slice(0, 1) };
}

/** CodeGuard is the code-guessing limit: at most maxFailures failed codes per number in windowMs. */
export interface CodeGuard {
  maxFailures: number;
  windowMs: number;
}

/**
 * guardRefusal tells whether a number is locked against code guessing: undefined when matching may
 * go on, else until when it is refused (the window's end from its oldest failure).
 */
export function guardRefusal(failures: { count: number; oldest: number | undefined }, guard: CodeGuard, now: number): { until: number } | undefined {
  if (failures.count < guard.maxFailures) return undefined;
  return { until: (failures.oldest ?? now) + guard.windowMs };
}

/** locksNow tells whether one more failure (this call's) reaches the limit: the moment to log a security event. */
export function locksNow(failuresBefore: number, guard: CodeGuard): boolean {
  return failuresBefore + 1 >= guard.maxFailures;
}

/** Verdict is what a call gets on a number: the reservations it matches, or a refusal, and whether it counts as a failed code. */
export type Verdict<T> =
  | { matched: T[] }
  | { locked: { until: number }; countFailure: false }
  | { reason: NoMatchReason; countFailure: boolean };

/**
 * judgeCall decides a call on a number, given its live reservations (newest first) and its recent
 * failed codes: refused while the guard holds the number locked (nothing counted); else what
 * chooseMatches picks; a call that matches nothing counts as a failed code when it gave a code.
 */
export function judgeCall<T extends MatchCandidate>(live: readonly T[], failures: { count: number; oldest: number | undefined }, call: Call, guard: CodeGuard, now: number): Verdict<T> {
  const locked = guardRefusal(failures, guard, now);
  if (locked !== undefined) return { locked, countFailure: false };
  const decided = chooseMatches(live, call);
  if ("reason" in decided) return { reason: decided.reason, countFailure: call.code !== undefined };
  return decided;
}
