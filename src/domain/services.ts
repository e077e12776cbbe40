import { BUILTINS, type Builtin, type Config, type ServiceConfig } from "../config.js";
import { GmsError } from "./errors.js";

/** DEFAULT_SERVICE_TTL_SECONDS is GMS's default time to live of a service's data: 30 s. */
export const DEFAULT_SERVICE_TTL_SECONDS = 30;

/** ResolvedService is a service by name with the options its configuration fixes. */
export interface ResolvedService {
  /** name is the service's name as called, e.g. "iPhoneService" or "request-interaction". */
  name: string;
  builtin: Builtin;
  /** options are the configured options; each one wins over the same request parameter. */
  options: Omit<ServiceConfig, "builtin">;
}

/**
 * resolveService finds the service a request names: a configured `services.<name>` section, or a
 * builtin under its own name. Unknown is NOT_FOUND; a service of another builtin used through the
 * wrong RPC is INVALID_ARGUMENT.
 */
export function resolveService(config: Config, name: string, expected: Builtin): ResolvedService {
  const wanted = name === "" ? expected : name;
  const configured = config.services[wanted];
  if (configured !== undefined) {
    const { builtin, ...options } = configured;
    if (builtin !== expected) {
      throw new GmsError("invalid_argument", `service: "${wanted}" is a ${builtin} service, not ${expected}`);
    }
    return { name: wanted, builtin, options };
  }
  if ((BUILTINS as readonly string[]).includes(wanted)) {
    if (wanted !== expected) throw new GmsError("invalid_argument", `service: "${wanted}" is not ${expected}`);
    return { name: wanted, builtin: expected, options: {} };
  }
  throw new GmsError("not_found", `service "${wanted}" not found`);
}

/** pick applies GMS's precedence: the configured option, then the request's value, then the default. */
export function pick<T>(configured: T | undefined, requested: T | undefined, fallback: T): T {
  return configured ?? requested ?? fallback;
}
