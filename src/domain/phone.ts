import { invalid } from "./errors.js";

/**
 * normalizePhone reduces a phone number to digits with an optional leading "+", dropping the
 * spaces, dots, dashes and parentheses people write, so "+1 (650) 466-9999" matches "+16504669999".
 */
export function normalizePhone(field: string, raw: string): string {
  const plus = raw.trimStart().startsWith("+") ? "+" : "";
  const digits = raw.replace(/[\s().+-]/g, "");
  if (!/^[0-9]{3,20}$/.test(digits)) throw invalid(`${field}: "${raw}" is not a phone number`);
  return plus + digits;
}
