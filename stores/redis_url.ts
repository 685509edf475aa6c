/**
 * The `--redis` URL forms: `redis://` and `rediss://` name one server;
 * `redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT/MASTER[?db=N]`
 * names Redis Sentinels and the master they watch, which the chat follows
 * across a failover (stores/redis_connect.ts). Only text here, no Redis
 * client: the command line checks a URL without loading one.
 *
 * @module
 */

/** The scheme of a Sentinel URL. */
export const SENTINEL_SCHEME = "redis+sentinel://";

/** A Sentinel's port when the URL names none (Redis's own default). */
export const DEFAULT_SENTINEL_PORT = 26379;

/** A host and port. */
export interface HostPort {
  host: string;
  port: number;
}

/** What a `redis+sentinel://` URL says. */
export interface SentinelUrl {
  /** The Sentinels to ask, in order. */
  sentinels: HostPort[];
  /** The master's name, as `sentinel monitor NAME` gives it. */
  master: string;
  /** For the master (and only it: Sentinels are asked without). */
  username?: string;
  password?: string;
  /** `?db=N`: the database to SELECT. */
  database?: number;
  /** `?sentinelPassword=`: for Sentinels with `requirepass`. */
  sentinelPassword?: string;
  /** `?sentinelUsername=`: with `sentinelPassword`, for a Sentinel ACL user. */
  sentinelUsername?: string;
}

/** The query parameters a Sentinel URL may carry. */
const SENTINEL_PARAMETERS = ["db", "sentinelPassword", "sentinelUsername"];

/** Does `text` name Sentinels (rather than one server)? */
export function isSentinelUrl(text: string): boolean {
  return text.toLowerCase().startsWith(SENTINEL_SCHEME);
}

/**
 * The parts of a `redis+sentinel://` URL, or why it is not one (a phrase
 * to follow the URL in an error).
 */
export function parseSentinelUrl(text: string): SentinelUrl | string {
  const shape =
    "write it as redis+sentinel://HOST:PORT,HOST:PORT/MASTER (a password as redis+sentinel://:PASSWORD@HOST:PORT/MASTER)";
  const match = text.slice(SENTINEL_SCHEME.length).match(
    /^(?:([^@/]*)@)?([^/?#@]*)(?:\/([^/?#]*))?(?:\?([^#]*))?$/,
  );
  if (!match) return `is not a Sentinel URL: ${shape}`;
  const [, credentials, hosts, master, query] = match;
  let decoded: { user?: string; password?: string; master: string };
  try {
    const colon = credentials?.indexOf(":") ?? -1;
    decoded = {
      user: credentials === undefined ? undefined : decodeURIComponent(
        colon < 0 ? credentials : credentials.slice(0, colon),
      ),
      password: colon < 0
        ? undefined
        : decodeURIComponent(credentials!.slice(colon + 1)),
      master: decodeURIComponent(master ?? ""),
    };
  } catch {
    return `has a malformed %-escape: ${shape}`;
  }
  if (decoded.master === "") {
    return `names no master: ${shape}`;
  }
  if (hosts === "") return `names no Sentinel: ${shape}`;
  const sentinels: HostPort[] = [];
  for (const part of hosts.split(",")) {
    const address = part.match(/^(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d+))?$/i);
    const port = address?.[2] === undefined
      ? DEFAULT_SENTINEL_PORT
      : Number(address[2]);
    if (!address || port < 1 || port > 65535) {
      return `has a Sentinel address "${part}" that is not HOST:PORT: ${shape}`;
    }
    sentinels.push({ host: address[1].replace(/^\[|\]$/g, ""), port });
  }
  const parsed: SentinelUrl = { sentinels, master: decoded.master };
  if (decoded.user) parsed.username = decoded.user;
  if (decoded.password !== undefined) parsed.password = decoded.password;
  const parameters = new URLSearchParams(query ?? "");
  for (const [name, value] of parameters) {
    if (!SENTINEL_PARAMETERS.includes(name)) {
      return `has an unknown parameter "${name}" (known: ${
        SENTINEL_PARAMETERS.join(", ")
      })`;
    }
    if (name === "db") {
      if (!/^\d{1,9}$/.test(value)) {
        return `has db=${value}: give the database's number (db=0)`;
      }
      parsed.database = Number(value);
    } else if (name === "sentinelPassword") parsed.sentinelPassword = value;
    else parsed.sentinelUsername = value;
  }
  return parsed;
}

/** The URL without its passwords, for logs and errors. */
export function redactRedisUrl(text: string): string {
  if (isSentinelUrl(text)) {
    return text
      .replace(/^([^/]*\/\/[^:@/]*:)[^@/]*@/, "$1***@")
      .replace(/([?&]sentinelPassword=)[^&#]*/, "$1***");
  }
  try {
    const parsed = new URL(text);
    if (parsed.password) parsed.password = "***";
    return parsed.href;
  } catch {
    return "(invalid URL)";
  }
}
