import { numberReader, type PhoneNumbering } from "../numbering.js";
import { invalid } from "./errors.js";

export { numberingOf, type PhoneNumbering } from "../numbering.js";

/** PhoneReader reads one field's phone number, or refuses it as INVALID_ARGUMENT naming the field. */
export type PhoneReader = (field: string, raw: string) => string;

/**
 * phoneReader reads phone and access numbers for comparison (matching compares them as strings),
 * as src/numbering.ts writes them: as written without a country code, in E.164 with one, so that
 * the national and international forms of one number are equal. What is no phone number is
 * INVALID_ARGUMENT naming the field.
 */
export function phoneReader(numbering: PhoneNumbering = {}): PhoneReader {
  const read = numberReader(numbering);
  return (field, raw) => {
    const number = read(raw);
    if (number === undefined) throw invalid(`${field}: "${raw}" is not a phone number`);
    return number;
  };
}

/** normalizePhone reads a number as written (phoneReader without a country code). */
export const normalizePhone: PhoneReader = phoneReader();
