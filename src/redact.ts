// Secrets out of what is shown: URLs in logs and errors, the configuration an operator reads
// (AdminService.GetConfiguration).

/** SECRET_PARAM names the query parameters of a URL that may carry a secret (a driver option `password=`...). */
const SECRET_PARAM = /pass|pwd|secret|token/i;

/**
 * redactUrl hides the secrets of a URL (a database's, Redis's): its password, whatever its user
 * (`redis://:pw@host` has none), and query parameters named like a password or a token, each
 * shown as `***`. A string the URL parser refuses loses everything between `//` and its last `@`.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(/\/\/[^/?#]*@/, "//***@");
  }
  let secret = false;
  if (u.password !== "") {
    u.password = "***";
    secret = true;
  }
  for (const name of new Set(u.searchParams.keys())) {
    if (SECRET_PARAM.test(name)) {
      u.searchParams.set(name, "***");
      secret = true;
    }
  }
  // Without a secret the URL is shown as given, not as the parser spells it again (a SQLite path with a space stays one).
  return secret ? u.toString() : url;
}
