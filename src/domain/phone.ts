import { invalid } from "./errors.js";

/**
 * normalizePhone reduces a phone number to digits with an optional leading "+", dropping the
 * spaces, dots, dashes and parentheses people write, so "+1 (650) 466-9999" matches "+16504669999"
 * and "(650) 466-9999" matches "6504669999". A "+" anywhere but first, a letter or any other sign,
 * or fewer than 3 or more than 20 digits is not a phone number.
 */
export function normalizePhone(field: string, raw: string): string {
  const trimmed = raw.trim();
  const plus = trimmed.startsWith("+") ? "+" : "";
  const rest = trimmed.slice(plus.length);
  const digits = rest.replace(/[\s().-]/g, "");
  if (!/^[0-9\s().-]*$/.test(rest) || !/^[0-9]{3,20}$/.test(digits)) throw invalid(`${field}: "${raw}" is not a phone number`);
  return plus + digits;
}
