// How phone and access numbers are written, read for comparison: digits with an optional leading
// "+", or E.164 under a numbering plan (access.default_country_code). Pure functions below both the
// configuration (configured numbers) and the domain (numbers in requests); src/domain/phone.ts
// turns a refusal into INVALID_ARGUMENT.

/**
 * PhoneNumbering says how national numbers are written where the contact center is
 * (`access.default_country_code`, `trunk_prefix`, `international_prefix`). Without a country code,
 * numbers are compared as written (digits, with a leading "+" kept).
 */
export interface PhoneNumbering {
  /** defaultCountryCode, e.g. "1" or "44", turns every number into E.164 ("+" and digits). */
  defaultCountryCode?: string | undefined;
  /** trunkPrefix is dropped from a national number first: "1" in North America, "0" in most other countries (the default). */
  trunkPrefix?: string | undefined;
  /** internationalPrefix starts a number dialled abroad: "011" in North America, "00" elsewhere (the default). */
  internationalPrefix?: string | undefined;
}

/** numberingOf is the numbering plan of the configuration's `access` section. */
export function numberingOf(access: { default_country_code?: string | undefined; trunk_prefix?: string | undefined; international_prefix?: string | undefined }): PhoneNumbering {
  return { defaultCountryCode: access.default_country_code, trunkPrefix: access.trunk_prefix, internationalPrefix: access.international_prefix };
}

/**
 * phoneDigits reduces a phone number to digits with an optional leading "+", dropping the spaces,
 * dots, dashes and parentheses people write, so "+1 (650) 466-9999" is "+16504669999" and
 * "(650) 466-9999" is "6504669999". A "+" anywhere but first, a letter or any other sign, or fewer
 * than 3 or more than 20 digits is not a phone number: undefined.
 */
export function phoneDigits(raw: string): string | undefined {
  const trimmed = raw.trim();
  const plus = trimmed.startsWith("+") ? "+" : "";
  const rest = trimmed.slice(plus.length);
  const digits = rest.replace(/[\s().-]/g, "");
  if (!/^[0-9\s().-]*$/.test(rest) || !/^[0-9]{3,20}$/.test(digits)) return undefined;
  return plus + digits;
}

/**
 * toE164 writes a number in international form under a numbering plan: "+…" stays; a number
 * starting with the international prefix is "+" and the rest; any other is national: its trunk
 * prefix dropped, the country code put in front. So with country code 1, "6504669999",
 * "1 650 466 9999", "011 1 650 466 9999" and "+1 (650) 466-9999" are all "+16504669999".
 */
export function toE164(number: string, plan: Required<PhoneNumbering>): string {
  if (number.startsWith("+")) return number;
  if (plan.internationalPrefix !== "" && number.startsWith(plan.internationalPrefix)) return `+${number.slice(plan.internationalPrefix.length)}`;
  const national = plan.trunkPrefix !== "" && number.startsWith(plan.trunkPrefix) ? number.slice(plan.trunkPrefix.length) : number;
  return `+${plan.defaultCountryCode}${national}`;
}

/**
 * numberReader reads a number as written (phoneDigits) without a country code, in E.164 (toE164) with
 * one; undefined when it is not a phone number. The prefixes default to the North American plan for
 * country code 1 (trunk "1", international "011"), else to "0" and "00".
 */
export function numberReader(numbering: PhoneNumbering = {}): (raw: string) => string | undefined {
  const cc = numbering.defaultCountryCode;
  const plan =
    cc === undefined || cc === ""
      ? undefined
      : {
          defaultCountryCode: cc,
          trunkPrefix: numbering.trunkPrefix ?? (cc === "1" ? "1" : "0"),
          internationalPrefix: numbering.internationalPrefix ?? (cc === "1" ? "011" : "00"),
        };
  return (raw) => {
    const number = phoneDigits(raw);
    return number === undefined || plan === undefined ? number : toE164(number, plan);
  };
}
