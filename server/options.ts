/**
 * The options: every flag of the CLI and field of `startChat`, with its
 * default, how the command line spells and parses it, and what it means.
 * `--help`, the flag parser, the start log's limits and the README's option
 * table (`tests/readme_test.ts`) are all made from {@linkcode OPTIONS}, so
 * adding an option is one entry here, plus its use.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { flagProblem, redisUrlProblem, unreadableFile } from "./cli_errors.ts";
import { API_MIN_KEY_CHARS } from "./http_api.ts";
import { WEBHOOK_MAX_BATCH, WEBHOOK_MIN_SECRET_CHARS } from "./webhooks.ts";
import { PROXY_MAX_TIMEOUT_MS } from "./proxy.ts";
import { WEBHOOK_EVENTS } from "../stores/outbox.ts";
import { validNick } from "../wire/protocol.ts";
import type { LogFields, RoomStore } from "../stores/rooms.ts";

/** A bad command-line value: the CLI prints it, then `see --help`, exits 2. */
export class UsageError extends Error {}

/**
 * One option: its default, how the command line spells and parses it, and
 * what it means. `--help`, the `parseArgs` schema, the start log and the
 * README's option table are all made from {@linkcode OPTIONS}.
 */
export interface OptionSpec<T> {
  /** The value when the option is not given. */
  default: T;
  /** What the flag takes, for the help (`N`, `ADDR`); empty for a switch. */
  arg: string;
  /** What it means, one line (backticks mark code in the README). */
  help: string;
  /** The environment variable read when the flag is absent. */
  env?: string;
  /** The default as the help shows it, when `String(default)` will not do. */
  shown?: string;
  /** Repeatable flag (its values make a list). */
  multiple?: boolean;
  /** A limit: written in the start log line. */
  limit?: boolean;
  /** Turns the flag's text into the value; throws a {@linkcode UsageError}. */
  parse: (text: string, flag: string) => T;
}

function parseInteger(
  flag: string,
  text: string,
  min: number,
  max: number,
): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(
      `--${flag} must be a whole number from ${min} to ${max}, got "${text}"`,
    );
  }
  return Number(text);
}

/** A whole number of at least `min`; a limit (logged at start) unless told. */
function limit(
  fallback: number,
  min: number,
  help: string,
  logged = true,
): OptionSpec<number> {
  return {
    default: fallback,
    arg: "N",
    help,
    limit: logged,
    parse: (text, flag) =>
      parseInteger(flag, text, min, Number.MAX_SAFE_INTEGER),
  };
}

function port(fallback: number, env: string, help: string): OptionSpec<number> {
  return {
    default: fallback,
    arg: "N",
    help,
    env,
    parse: (text, flag) => parseInteger(flag, text, 0, 65535),
  };
}

function choice<T extends string>(
  values: readonly T[],
  fallback: NoInfer<T>,
  help: string,
): OptionSpec<T> {
  return {
    default: fallback,
    arg: values.join("|"),
    help,
    parse: (text, flag) => {
      if (!(values as readonly string[]).includes(text)) {
        throw new UsageError(
          `--${flag} must be ${values.join(" or ")}, got "${text}"`,
        );
      }
      return text as T;
    },
  };
}

/** A switch spelled `true` or `false` (its default may be either). */
function trueOrFalse(fallback: boolean, help: string): OptionSpec<boolean> {
  return {
    default: fallback,
    arg: "true|false",
    help,
    parse: (text, flag) => {
      if (text !== "true" && text !== "false") {
        throw new UsageError(`--${flag} must be true or false, got "${text}"`);
      }
      return text === "true";
    },
  };
}

/** A PEM file on the command line; PEM text through {@linkcode startChat}. */
function pemFile(help: string): OptionSpec<string | undefined> {
  return {
    default: undefined,
    arg: "FILE",
    help,
    shown: "",
    parse: (text, flag) => {
      try {
        return Deno.readTextFileSync(text);
      } catch (error) {
        throw new UsageError(unreadableFile(flag, text, error));
      }
    },
  };
}

/** The longest `--webhook-retry-hours`: a year. */
const MAX_RETRY_HOURS = 365 * 24;

/** A `--webhook` URL: http or https, else a {@linkcode UsageError}. */
function webhookUrl(text: string, flag: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // said below
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new UsageError(
      `--${flag} must be an http:// or https:// URL, got "${text}"`,
    );
  }
  return text;
}

/** `--webhook-events`: known kinds, comma-separated, at least one. */
function webhookKinds(text: string, flag: string): string[] {
  const kinds = text.split(",").map((kind) => kind.trim());
  const known = Object.keys(WEBHOOK_EVENTS);
  const unknown = kinds.find((kind) => !known.includes(kind));
  if (unknown !== undefined) {
    throw new UsageError(
      `--${flag} takes ${known.join(", ")} (comma-separated), got "${unknown}"`,
    );
  }
  return [...new Set(kinds)];
}

/**
 * Every option, in the order `--help` lists them. The flag is the key in
 * kebab-case (`maxFrameBytes` is `--max-frame-bytes`). Adding an option is
 * one entry here, plus its use.
 */
export const OPTIONS = {
  port: port(8080, "PORT", "page server port (0: any free port)"),
  wsPort: port(12345, "WS_PORT", "chat server port (0: any free port)"),
  hostname: {
    default: "0.0.0.0",
    arg: "ADDR",
    help: "address both servers listen on",
    env: "HOST",
    shown: "`0.0.0.0`",
    parse: (text: string) => text,
  },
  maxMessageChars: limit(
    2000,
    1,
    "longest message in characters; longer gets `too_long`",
  ),
  historySize: limit(
    100,
    0,
    "events each room keeps for newcomers and resume",
    false,
  ),
  maxFrameBytes: limit(
    64 * 1024,
    1,
    "largest incoming frame; bigger closes with 1009",
  ),
  rate: limit(10, 1, "messages per second per connection (token bucket)"),
  burst: limit(20, 1, "messages a connection may send at once"),
  maxBufferedBytes: limit(
    1024 * 1024,
    1,
    "bytes queued for a client that is not reading before it is dropped with 1013",
  ),
  maxConsecutiveDrops: limit(
    50,
    0,
    "rate-limited messages in a row before the sender is closed with 1008",
  ),
  idleTimeout: limit(
    30,
    0,
    "seconds without a pong before a peer is dropped (0: no pings)",
  ),
  maxConnections: limit(
    10_000,
    1,
    "open chat sockets in all (`chat_sockets_open` + `chat_sockets_stuck`); more get 503",
  ),
  maxConnectionsPerIp: limit(
    100,
    1,
    "chat connections per address; more get 503",
  ),
  maxRooms: limit(
    1000,
    1,
    "rooms at once (each keeps its history); a new one beyond gets 503",
  ),
  maxHistoryBytes: limit(
    256 * 1024,
    0,
    "bytes of history a room keeps at most (2 per UTF-16 unit of its text, 64 per event); oldest go first",
  ),
  connectRate: limit(
    2,
    1,
    "new chat connections per second per address (token bucket); more get 429",
  ),
  connectBurst: limit(
    30,
    1,
    "new chat connections an address may open at once",
  ),
  openTimeout: limit(
    5,
    1,
    "seconds an upgraded socket may take to open before its slot is given back",
  ),
  sessionGrace: limit(
    5,
    0,
    "seconds a person's last tab may be gone before they are announced as left",
    false,
  ),
  editWindow: limit(
    24 * 60 * 60,
    0,
    "seconds after sending in which its author may edit a message (0: never)",
    false,
  ),
  allowOrigin: {
    default: [] as string[],
    arg: "ORIGIN",
    help: "browser origin allowed to connect; repeat it, or `*` for any",
    shown: "(same host)",
    multiple: true,
    parse: (text: string) => [text],
  },
  cert: pemFile("serve `https:` and `wss:` with this PEM certificate"),
  key: pemFile("the PEM private key of `--cert`"),
  metrics: trueOrFalse(true, "serve `GET /metrics`"),
  logFormat: choice(["text", "json"], "text", "log lines on stderr"),
  redis: {
    default: "",
    arg: "URL",
    help:
      "share rooms through Redis: several processes, one chat, history kept (redis+sentinel://HOST:PORT,HOST:PORT/MASTER follows a failover)",
    env: "REDIS_URL",
    shown: "(in memory)",
    parse: (text: string) => {
      // Checked here: node-redis would throw "Invalid protocol" from deep
      // inside it, with no word of the flag.
      const problem = text === "" ? undefined : redisUrlProblem(text);
      if (problem) throw new UsageError(problem);
      return text;
    },
  },
  redisCluster: {
    default: "",
    arg: "URL,URL",
    help:
      "share rooms through Redis Cluster: some of its nodes, comma-separated (not with `--redis`)",
    shown: "(none)",
    parse: (text: string) => {
      for (const url of text.split(",")) {
        if (url.trim().startsWith("redis+sentinel:")) {
          throw new UsageError(
            `--redis-cluster ${url.trim()} is a Sentinel URL: a cluster's nodes are redis://HOST:PORT (Sentinel goes with --redis)`,
          );
        }
        const problem = redisUrlProblem(url.trim());
        if (problem) {
          throw new UsageError(
            problem.replace(/^--redis /, "--redis-cluster "),
          );
        }
      }
      return text;
    },
  },
  roomTtl: limit(
    24 * 60 * 60,
    1,
    "seconds an empty room keeps its history (with `--redis`)",
    false,
  ),
  redisCoalesceMs: limit(
    40,
    0,
    "ms a busy room's messages may wait to share a frame with other processes' (with `--redis`; 0: never)",
    false,
  ),
  redisWaitReplicas: limit(
    0,
    0,
    "replicas that must have a message before it is delivered, so that it survives a failover (with `--redis`; 0: no wait)",
    false,
  ),
  redisWaitMs: limit(
    100,
    0,
    "ms a message waits for `--redis-wait-replicas`; then it is delivered anyway",
    false,
  ),
  data: {
    default: "",
    arg: "FILE",
    help:
      "keep rooms in this SQLite file: history and resume outlive restarts (not with `--redis`)",
    env: "CHAT_DATA",
    shown: "(in memory)",
    parse: (text: string) => text,
  },
  // Not in the start log's limits, like `roomTtl`: they mean nothing
  // without their store.
  retainEvents: limit(
    100_000,
    1,
    "events the `--data` file keeps per room; older ones are trimmed",
    false,
  ),
  retainDays: {
    ...limit(
      0,
      0,
      "days the `--data` file keeps an event (0: for ever)",
      false,
    ),
    arg: "D",
  },
  dataSync: choice(
    ["normal", "full"] as const,
    "normal",
    "`full`: fsync every commit of `--data`, so a power cut loses nothing acknowledged",
  ),
  reusePort: {
    default: false,
    arg: "",
    help:
      "let several processes share the ports (needs `deno run --unstable-net`)",
    shown: "off",
    parse: () => true,
  },
  quiet: {
    default: false,
    arg: "",
    help: "log warnings and errors only",
    shown: "off",
    parse: () => true,
  },
  authSecret: {
    default: "",
    arg: "SECRET",
    help:
      "verify login tokens (JWT, HS256) signed with this secret; see Identity and moderation",
    env: "AUTH_SECRET",
    shown: "(no login)",
    parse: (text: string) => text,
  },
  authPublicKey: pemFile(
    "verify login tokens signed with this PEM public key's private key (RS256, ES256 or EdDSA)",
  ),
  auth: choice(
    ["optional", "required"],
    "optional",
    "with a key: `required` refuses connections without a valid token (401)",
  ),
  authAudience: {
    default: "",
    arg: "AUD",
    help: "login tokens must have this `aud`",
    shown: "(any)",
    parse: (text: string) => text,
  },
  authIssuer: {
    default: "",
    arg: "ISS",
    help: "login tokens must have this `iss`",
    shown: "(any)",
    parse: (text: string) => text,
  },
  opKey: {
    default: "",
    arg: "KEY",
    help:
      "a connection offering the subprotocol `chat.op.KEY` is a moderator in every room",
    shown: "(none)",
    parse: (text: string) => text,
  },
  banByAddress: trueOrFalse(
    true,
    "ban an anonymous person by their address too, not only their session (`false`: for crowds behind one NAT); see Identity and moderation",
  ),
  apiKey: {
    default: "",
    arg: "KEY",
    help:
      `turn on the HTTP API (\`POST /api/METHOD\`) for this key (at least ${API_MIN_KEY_CHARS} characters)`,
    env: "CHAT_API_KEY",
    shown: "(off)",
    parse: (text: string, flag: string) => {
      if (text.length < API_MIN_KEY_CHARS) {
        throw new UsageError(
          `--${flag} must be at least ${API_MIN_KEY_CHARS} characters (got ${text.length}): make one with \`openssl rand -hex 32\``,
        );
      }
      return text;
    },
  },
  apiPort: {
    default: undefined as number | undefined,
    arg: "N",
    help: "serve the API on this port instead of the page's",
    shown: "(page port)",
    parse: (text: string, flag: string) => parseInteger(flag, text, 0, 65535),
  },
  apiHostname: {
    default: "",
    arg: "ADDR",
    help: "address the API port listens on (with `--api-port`)",
    shown: "(--hostname)",
    parse: (text: string) => text,
  },
  apiName: {
    default: "app",
    arg: "NICK",
    help: "the name an API `publish` without `from` is shown under",
    parse: (text: string, flag: string) => {
      if (!validNick(text)) {
        throw new UsageError(`--${flag} must be a valid nick, got "${text}"`);
      }
      return text;
    },
  },
  apiRate: limit(
    100,
    1,
    "API requests a second per key; more get 429 with `Retry-After`",
    false,
  ),
  webhook: {
    default: [] as string[],
    arg: "URL",
    help:
      "POST every event of `--webhook-events` to this URL, signed; repeat it for more; see Webhooks",
    shown: "(none)",
    multiple: true,
    parse: (text: string, flag: string) => [webhookUrl(text, flag)],
  },
  webhookEvents: {
    default: ["message"] as string[],
    arg: "KINDS",
    help: `the events \`--webhook\` gets, comma-separated: ${
      Object.keys(WEBHOOK_EVENTS).join(", ")
    }`,
    shown: "message",
    parse: (text: string, flag: string) => webhookKinds(text, flag),
  },
  webhookSecret: {
    default: "",
    arg: "SECRET",
    help:
      `signs every webhook delivery (at least ${WEBHOOK_MIN_SECRET_CHARS} characters; needed with \`--webhook\`)`,
    env: "HOOK_SECRET",
    shown: "(none)",
    parse: (text: string, flag: string) => {
      if (text.length < WEBHOOK_MIN_SECRET_CHARS) {
        throw new UsageError(
          `--${flag} must be at least ${WEBHOOK_MIN_SECRET_CHARS} characters (got ${text.length}): make one with \`openssl rand -hex 32\``,
        );
      }
      return text;
    },
  },
  webhookBatch: {
    ...limit(
      1,
      1,
      'most events of one room in one webhook POST; above 1 every POST is `{"deliveries":[…]}`: a backlog goes in fewer requests',
      false,
    ),
    parse: (text: string, flag: string) =>
      parseInteger(flag, text, 1, WEBHOOK_MAX_BATCH),
  },
  webhookRetryHours: {
    default: 24,
    arg: "H",
    help:
      "hours a webhook delivery is tried again (backoff with jitter) before it is given up",
    parse: (text: string, flag: string) => {
      const hours = Number(text);
      if (
        !/^\d+(\.\d+)?$/.test(text) || hours <= 0 || hours > MAX_RETRY_HOURS
      ) {
        throw new UsageError(
          `--${flag} must be a number of hours above 0 and at most ${MAX_RETRY_HOURS}, got "${text}"`,
        );
      }
      return hours;
    },
  },
  proxyConnect: {
    default: "",
    arg: "URL",
    help:
      "ask the app at this URL before a connection is let in (allow, with a nick or roles, or refuse); see Proxy",
    shown: "(none)",
    parse: (text: string, flag: string) => webhookUrl(text, flag),
  },
  proxyPublish: {
    default: "",
    arg: "URL",
    help:
      "ask the app at this URL before a message is stored (allow, replace its text, or refuse); see Proxy",
    shown: "(none)",
    parse: (text: string, flag: string) => webhookUrl(text, flag),
  },
  proxyTimeoutMs: {
    default: 1000,
    arg: "MS",
    help: "how long the proxy's app may take to answer, in milliseconds",
    parse: (text: string, flag: string) =>
      parseInteger(flag, text, 1, PROXY_MAX_TIMEOUT_MS),
  },
  proxyFail: choice(
    ["open", "closed"] as const,
    "closed",
    "when the proxy's app does not answer (or answers nonsense): `open` lets the connection or message through, `closed` refuses it",
  ),
  proxySecret: {
    default: "",
    arg: "SECRET",
    help:
      `signs every proxy request as webhooks are (at least ${WEBHOOK_MIN_SECRET_CHARS} characters)`,
    shown: "(none)",
    parse: (text: string, flag: string) => {
      if (text.length < WEBHOOK_MIN_SECRET_CHARS) {
        throw new UsageError(
          `--${flag} must be at least ${WEBHOOK_MIN_SECRET_CHARS} characters (got ${text.length}): make one with \`openssl rand -hex 32\``,
        );
      }
      return text;
    },
  },
} satisfies Record<string, OptionSpec<unknown>>;

export type OptionName = keyof typeof OPTIONS;
type OptionValues = { [K in OptionName]: (typeof OPTIONS)[K]["default"] };

/**
 * Everything {@linkcode startChat} can be told; every field is optional and
 * means what its entry in {@linkcode OPTIONS} says. `cert` and `key` are PEM
 * text.
 */
export type ChatOptions =
  & Partial<OptionValues>
  & {
    /** Where formatted log lines go. @default {console.error} */
    logSink?: (line: string) => void;
    /** The room store; by default a new {@linkcode MemoryStore}. */
    store?: RoomStore;
  };

/** The options with every default applied: what a running chat reads. */
export type Settings =
  & Required<
    Omit<ChatOptions, "cert" | "key" | "store" | "authPublicKey" | "apiPort">
  >
  & {
    cert?: string;
    key?: string;
    authPublicKey?: string;
    apiPort?: number;
  };

/** The defaults of every option, from {@linkcode OPTIONS}. */
export const DEFAULT_OPTIONS: Settings = {
  ...Object.fromEntries(
    Object.entries(OPTIONS).map(([name, spec]) => [name, spec.default]),
  ) as OptionValues,
  logSink: (line) => console.error(line),
};

/** `maxFrameBytes` → `max-frame-bytes`. */
export function flagOf(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => "-" + letter.toLowerCase());
}

/**
 * Why `--data` and `--redis` are refused together: Redis already keeps the
 * rooms for every process, and a file per process would disagree with it.
 */
export const DATA_WITH_REDIS =
  "--data and --redis cannot be used together: Redis already keeps the history (use one)";

/**
 * Why `--redis-cluster` is refused with another store, or with
 * `--redis-wait-replicas`; undefined if fine.
 */
export function clusterProblem(
  options: Partial<
    Pick<
      Settings,
      "redis" | "redisCluster" | "data" | "redisWaitReplicas"
    >
  >,
): string | undefined {
  if (!options.redisCluster) return undefined;
  if (options.redis) {
    return "--redis and --redis-cluster cannot be used together: give one (--redis-cluster for a Redis Cluster's nodes)";
  }
  if (options.data) {
    return "--data and --redis-cluster cannot be used together: the cluster already keeps the history (use one)";
  }
  if (options.redisWaitReplicas) {
    return "--redis-wait-replicas does not work with --redis-cluster yet (WAIT is per master): use --redis";
  }
  return undefined;
}

/** Why `--webhook` is refused without `--webhook-secret`. */
export const WEBHOOK_WITHOUT_SECRET =
  `--webhook needs --webhook-secret (at least ${WEBHOOK_MIN_SECRET_CHARS} characters), so the app can tell the deliveries are the chat's`;

/** The options marked as limits, for the start log. */
export function limitsOf(settings: Settings): LogFields {
  return Object.fromEntries(
    Object.entries(OPTIONS)
      .filter(([, spec]) => "limit" in spec && spec.limit)
      .map(([name]) => [name, settings[name as OptionName] as number]),
  );
}

/**
 * Where a started chat is, by its settings and bound ports: its page, its
 * chat (a room's name goes after it) and, when it has one (`api`), its API,
 * on its own port (`apiPort`) or the page's. A server listening on every
 * address is shown as `localhost`.
 */
export function urlsOf(
  settings: Settings,
  at: { port: number; wsPort: number; apiPort?: number; api: boolean },
): { pageUrl: string; chatUrl: string; apiUrl?: string } {
  const [http, ws] = settings.cert ? ["https", "wss"] : ["http", "ws"];
  const host = settings.hostname === "0.0.0.0"
    ? "localhost"
    : settings.hostname;
  const pageUrl = `${http}://${host}:${at.port}/`;
  const apiHost = settings.apiHostname || host;
  return {
    pageUrl,
    chatUrl: `${ws}://${host}:${at.wsPort}/`,
    apiUrl: !at.api
      ? undefined
      : at.apiPort !== undefined
      ? `${http}://${apiHost}:${at.apiPort}/api/`
      : `${pageUrl}api/`,
  };
}

/** An option as the help and the README name it: `--max-rooms N`. */
export function flagLabel(name: string): string {
  const spec: OptionSpec<unknown> = OPTIONS[name as OptionName];
  return `--${flagOf(name)}${spec.arg ? " " + spec.arg : ""}`;
}

/** An option's default as the help and the README show it. */
export function shownDefault(name: string): string {
  const spec: OptionSpec<unknown> = OPTIONS[name as OptionName];
  return spec.shown ?? String(spec.default);
}

/**
 * An option's default as `--help` notes it: `(default 8080)`; a shown value
 * in parentheses already, `(in memory)`, loses them: `(default in memory)`.
 * Empty when there is nothing to show.
 */
export function defaultNote(name: string): string {
  const shown = shownDefault(name).replaceAll("`", "").replace(
    /^\((.*)\)$/,
    "$1",
  );
  return shown ? `(default ${shown})` : "";
}

/** One line of the usage per option, made from {@linkcode OPTIONS}. */
function usageLines(): string[] {
  return Object.entries(OPTIONS).map(([name, spec]) => {
    const option = flagLabel(name);
    const notes = [
      "env" in spec ? `[${spec.env}]` : "",
      defaultNote(name),
    ].filter(Boolean).join(" ");
    return `  ${option.padEnd(28)}${spec.help.replaceAll("`", "")}${
      notes ? " " + notes : ""
    }`;
  });
}

/** `--help`: one line per option, made from {@linkcode OPTIONS}. */
export const USAGE = `deno-chat: a WebSocket chat server.

Usage: deno run -A main.ts [options]

Options (environment variable fallbacks in brackets):
${usageLines().join("\n")}
  -h, --help                  show this help`;

/** Turns command-line arguments (and env fallbacks) into options. */
export function parseCommandLine(
  args: string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ChatOptions | "help" {
  const schema = Object.fromEntries(
    Object.entries(OPTIONS).map(([name, spec]) => [
      flagOf(name),
      {
        type: spec.arg ? "string" as const : "boolean" as const,
        multiple: "multiple" in spec && spec.multiple,
      },
    ]),
  );
  let values: Record<string, string | string[] | boolean>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: { ...schema, help: { type: "boolean", short: "h" } },
    }));
  } catch (error) {
    const labels = Object.fromEntries(
      Object.keys(OPTIONS).map((name) => [flagOf(name), flagLabel(name)]),
    );
    const problem = flagProblem(error, { ...labels, help: "--help" });
    throw problem ? new UsageError(problem) : error;
  }
  if (values.help) return "help";
  const options: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const flag = flagOf(name);
    const fromEnv = values[flag] === undefined && "env" in spec && spec.env
      ? spec.env
      : undefined;
    const given = fromEnv ? env(fromEnv) : values[flag];
    if (given === undefined || given === false) continue;
    try {
      options[name] = Array.isArray(given)
        ? given.flatMap((text) => spec.parse(text, flag) as string[])
        : spec.parse(String(given), flag);
    } catch (error) {
      // A bad PORT=... says so: the command line has no --port to blame.
      if (!fromEnv || !(error instanceof UsageError)) throw error;
      throw new UsageError(`${fromEnv}: ${error.message}`);
    }
  }
  if (Boolean(options.cert) !== Boolean(options.key)) {
    throw new UsageError(
      "--cert and --key go together: give both, the certificate and its private key",
    );
  }
  if (options.authSecret && options.authPublicKey) {
    throw new UsageError(
      "--auth-secret and --auth-public-key: one key, not both",
    );
  }
  if (
    options.auth === "required" && !options.authSecret &&
    !options.authPublicKey
  ) {
    throw new UsageError(
      "--auth required needs --auth-secret or --auth-public-key",
    );
  }
  if (options.data && options.redis) throw new UsageError(DATA_WITH_REDIS);
  const cluster = clusterProblem(options as Partial<Settings>);
  if (cluster) throw new UsageError(cluster);
  if (
    (options.webhook as string[] | undefined)?.length && !options.webhookSecret
  ) {
    throw new UsageError(WEBHOOK_WITHOUT_SECRET);
  }
  const twice = webhookTwice((options.webhook as string[] | undefined) ?? []);
  if (twice) throw new UsageError(twice);
  return options as ChatOptions;
}

/**
 * Why a list of `--webhook` URLs is refused: one named twice would get
 * every event twice (and share its outbox with itself). Undefined if fine.
 */
export function webhookTwice(urls: string[]): string | undefined {
  const twice = urls.find((url, i) => urls.indexOf(url) !== i);
  return twice === undefined
    ? undefined
    : `--webhook ${twice} is given twice: name each endpoint once`;
}
