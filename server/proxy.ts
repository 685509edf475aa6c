/**
 * The proxy the app answers (`--proxy-connect`, `--proxy-publish`): before
 * a connection is let in, or a message is stored, the chat POSTs what it is
 * about to do to the app, and the app answers allow (with a nick or roles
 * for a connection, a new text for a message) or refuse. README.md,
 * "Proxy: let the app decide", is the contract; this module is all of it:
 * the request and answer shapes, the batching, the timeout and fail mode,
 * the per-connection order of a client's frames, and its metrics and logs.
 *
 * Batching: what is asked during one turn of the event loop goes in one
 * POST (`{"publishes":[...]}` answered by `{"results":[...]}` in the same
 * order; `{"connects":[...]}` likewise), and while
 * {@linkcode PROXY_CONCURRENCY} POSTs are on their way the next ones
 * gather, so a busy room makes a request per turn, not per message.
 *
 * Order: a client's frames run in the order they came. While one of its
 * messages waits for the app, its later frames wait behind it (a command
 * that changes nothing for the app, `/who`, waits too), and they run as the
 * answers come, never before an earlier one.
 *
 * @module
 */

import {
  checkMessage,
  type Command,
  type ErrorCode,
  isRefusal,
  oneLine,
} from "../wire/protocol.ts";
import type { Log } from "../stores/rooms.ts";
import { bump, type Counters, observe } from "./metrics.ts";
import { sendError } from "./delivery.ts";
import type { Sender } from "./commands.ts";
import { WEBHOOK_HEADERS, webhookSignature } from "./webhooks.ts";
import { inProxySpan } from "./telemetry.ts";
import { WebhookClient } from "./webhook_client.ts";

/**
 * Messages of this process waiting for the app's answer, at most: beyond
 * it a message is refused at once with `rate_limited`, so an app that
 * answers slowly cannot make the chat hold an unbounded queue.
 * @default {10000}
 */
export const PROXY_MAX_WAITING = 10_000;
/**
 * Asks in one POST, at most (more in a turn make more POSTs): enough that
 * a POST's cost is shared out, few enough that an answer replacing every
 * text stays under {@linkcode PROXY_MAX_ANSWER_BYTES}. @default {100}
 */
export const PROXY_MAX_BATCH = 100;
/**
 * POSTs on their way to one URL at once; while they are, the next asks
 * gather for one POST. @default {4}
 */
export const PROXY_CONCURRENCY = 4;
/**
 * An answer's body is read up to this many bytes; longer is a bad answer
 * (100 results, each with a new text of 2,000 characters, are under 2 MB).
 * @default {4194304}
 */
export const PROXY_MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/** The longest refusal reason passed on, in characters (longer is cut). */
export const PROXY_MAX_REASON_CHARS = 200;
/** An app's error code the client may be told; others read `refused_by_app`. */
export const PROXY_ERROR_CODE = /^[a-z][a-z0-9_]{0,39}$/;
/** The highest `--proxy-timeout-ms`: a minute. */
export const PROXY_MAX_TIMEOUT_MS = 60_000;
/** What an app's refusal of a message is called when it names no code. */
export const REFUSED_BY_APP = "refused_by_app";
/** The headers that sign a proxy request (as a webhook's: `--proxy-secret`). */
export const PROXY_HEADERS = {
  signature: WEBHOOK_HEADERS.signature,
  timestamp: WEBHOOK_HEADERS.timestamp,
} as const;

/** What the app is asked about a connection (`connects[i]`). */
export interface ConnectAsk {
  room: string;
  /** The peer's address. */
  address: string;
  /** The nick it asked for (`?nick=`) or its token's name, if any. */
  nick?: string;
  /** Its session (a hash of its session secret, never the secret), if any. */
  session?: string;
  /** A valid login token's `sub`, if any. */
  user?: string;
  /** A valid login token's roles (`op`), or the op key's. */
  roles: string[];
  /** `connect` at the handshake, `join` for `/join` to another room. */
  via: "connect" | "join";
}

/** What the app is asked about a message (`publishes[i]`). */
export interface PublishAsk {
  room: string;
  /** The sender's nick. */
  nick: string;
  address: string;
  user?: string;
  /** `message`, `action`, `dm`, `edit`. */
  kind: "message" | "action" | "dm" | "edit";
  /** The text, as the chat would store it (checked, cleaned). */
  text: string;
  /** A reply's message id. */
  replyTo?: number;
  /** A direct message's recipient. */
  to?: string;
  /** An edit's message id. */
  id?: number;
}

/** The app's say on a connection. */
export type ConnectVerdict =
  | { allow: true; nick?: string; op?: boolean }
  | {
    allow: false;
    /** The HTTP status to refuse with (4xx from the app; 503: no answer). */
    status: number;
    reason: string;
    /** The metric's and log's label. */
    label: "refused_by_app" | "proxy_unavailable";
  };

/** What a `Proxy` is made with. */
export interface ProxyConfig {
  /** `--proxy-connect`: asked before a connection is let in. */
  connectUrl?: string;
  /** `--proxy-publish`: asked before a message is stored. */
  publishUrl?: string;
  /** `--proxy-timeout-ms`. */
  timeoutMs: number;
  /** `--proxy-fail`: what no answer (or a bad one) means. */
  fail: "open" | "closed";
  /** `--proxy-secret`: signs each request when set. */
  secret: string;
  /** `--max-message-chars`, to check a message as the chat will. */
  maxMessageChars: number;
  counters: Counters;
  log: Log;
}

/** A client as the proxy sees it: a sender, where it is, who it is. */
export interface ProxyClient extends Sender {
  ip: string;
  /** A command of its waits on the store: its frames wait too. */
  waitingOnStore: boolean;
  /** A valid token's `sub` (the owner of a verified client is `u.SUB`). */
  user?: string;
}

/** A frame of a client's, waiting for its turn (and maybe the app). */
interface Waiting {
  command: Command;
  /** The app answered (or need not be asked). */
  settled: boolean;
  /**
   * To be asked once it is first in its client's queue: a `/join` or
   * `/nick` before it would change the room or nick the app is told.
   */
  later?: boolean;
  /** What the sender is told instead of running it. */
  refusal?: { code: ErrorCode; message: string };
}

/**
 * The options a proxy is made from (options.ts's, by the same names; not
 * imported from there, which imports this module's limits).
 */
export interface ProxySettings {
  proxyConnect: string;
  proxyPublish: string;
  proxyTimeoutMs: number;
  proxyFail: "open" | "closed";
  proxySecret: string;
  maxMessageChars: number;
}

/** A batch's outcome: the answers in order, or why there are none. */
type Outcome = { results: unknown[] } | { failure: string };

/** One URL's asks: gathered during a turn, POSTed together. */
class Batcher {
  #asks: { ask: unknown; done: (answer: unknown | Failure) => void }[] = [];
  #inFlight = 0;
  #scheduled = false;

  constructor(
    readonly url: string,
    readonly key: "connects" | "publishes",
    readonly send: (url: string, key: string, asks: unknown[]) => Promise<
      Outcome
    >,
  ) {}

  /** The app's answer to `ask`, or a {@linkcode Failure}. */
  ask(ask: unknown): Promise<unknown | Failure> {
    return new Promise((done) => {
      this.#asks.push({ ask, done });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= PROXY_CONCURRENCY) return;
    this.#scheduled = true;
    // At the end of this turn: whatever else comes in it goes along.
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#scheduled = false;
    while (this.#asks.length > 0 && this.#inFlight < PROXY_CONCURRENCY) {
      const batch = this.#asks.splice(0, PROXY_MAX_BATCH);
      this.#inFlight++;
      this.send(this.url, this.key, batch.map((entry) => entry.ask)).catch(
        // Never left unanswered: a batch that threw is one with no answer.
        (error): Outcome => ({ failure: String(error) }),
      ).then(
        (outcome) => {
          this.#inFlight--;
          batch.forEach((entry, i) =>
            entry.done(
              "failure" in outcome
                ? new Failure(outcome.failure)
                : outcome.results[i],
            )
          );
          if (this.#asks.length > 0) this.#schedule();
        },
      );
    }
  }
}

/** No answer from the app (or one that is not an answer): why. */
class Failure {
  constructor(readonly why: string) {}
}

/**
 * The app's proxy for one running chat: {@linkcode Proxy.connect} at the
 * door, {@linkcode Proxy.take} for every command of a client (only
 * messages are asked about; the rest keep their place in line).
 */
export class Proxy<C extends ProxyClient> {
  #config: ProxyConfig;
  #connects?: Batcher;
  #publishes?: Batcher;
  #queues = new WeakMap<C, Waiting[]>();
  /** Messages asked about and not yet answered. */
  #waiting = 0;
  /** The last request failed (logged once until one gets through). */
  #failing = false;
  /**
   * A kept-alive HTTP/1.1 client per URL (server/webhook_client.ts: about
   * a third of `fetch`'s CPU per request), closed at stop.
   */
  #http = new Map<string, WebhookClient>();
  #closed = false;

  constructor(
    config: ProxyConfig,
    readonly hooks: {
      /** Runs a command now (main.ts `execute`, errors handled). */
      run: (client: C, command: Command) => void;
    },
  ) {
    this.#config = config;
    // A span per POST (OpenTelemetry); the client sends its traceparent.
    const send = (url: string, key: string, asks: unknown[]) =>
      inProxySpan(
        key === "connects" ? "connect" : "publish",
        asks,
        () => this.#post(url, key, asks),
      );
    if (config.connectUrl) {
      this.#connects = new Batcher(config.connectUrl, "connects", send);
    }
    if (config.publishUrl) {
      this.#publishes = new Batcher(config.publishUrl, "publishes", send);
    }
  }

  /**
   * The proxy the settings ask for (`--proxy-connect`, `--proxy-publish`),
   * or undefined when neither is given. `run` runs a command now (main.ts
   * `execute`, its errors handled).
   */
  static of<C extends ProxyClient>(
    settings: ProxySettings,
    counters: Counters,
    log: Log,
    run: (client: C, command: Command) => void,
  ): Proxy<C> | undefined {
    if (!settings.proxyConnect && !settings.proxyPublish) return undefined;
    return new Proxy<C>({
      connectUrl: settings.proxyConnect || undefined,
      publishUrl: settings.proxyPublish || undefined,
      timeoutMs: settings.proxyTimeoutMs,
      fail: settings.proxyFail,
      secret: settings.proxySecret,
      maxMessageChars: settings.maxMessageChars,
      counters,
      log,
    }, { run });
  }

  /** Whether connections are asked about (`--proxy-connect`). */
  get asksConnects(): boolean {
    return this.#connects !== undefined;
  }

  /** Messages waiting for the app's answer (`chat_proxy_waiting`). */
  depth(): number {
    return this.#waiting;
  }

  /** Stops: what is still on its way is answered as no answer. */
  close(): void {
    this.#closed = true;
    for (const client of this.#http.values()) client.close();
  }

  /**
   * The app's say on a connection that passed the chat's own checks. No
   * answer (or a bad one) lets it in with `--proxy-fail open`, and refuses
   * it with 503 with `closed`.
   */
  async connect(ask: ConnectAsk): Promise<ConnectVerdict> {
    if (!this.#connects) return { allow: true };
    const answer = await this.#connects.ask(ask);
    const verdict = answer instanceof Failure
      ? undefined
      : connectVerdict(answer);
    if (verdict) {
      this.#count("connect", verdict.allow ? "allow" : "refuse");
      return verdict;
    }
    this.#count("connect", `failed_${this.#config.fail}`);
    if (!(answer instanceof Failure)) this.#badAnswer("connect");
    return this.#config.fail === "open" ? { allow: true } : {
      allow: false,
      status: 503,
      reason: "The chat's app did not answer: try again.",
      label: "proxy_unavailable",
    };
  }

  /**
   * A client's command, in its turn: a message (message, action, reply,
   * DM, edit) is asked about first; any command waits behind the client's
   * earlier ones that wait for the app.
   */
  take(client: C, command: Command): void {
    const ask = this.#publishes
      ? publishAsk(client, command, this.#config)
      : undefined;
    let queue = this.#queues.get(client);
    if (!ask && !queue) return this.hooks.run(client, command);
    if (!queue) this.#queues.set(client, queue = []);
    const waiting: Waiting = { command, settled: ask === undefined };
    if (ask && queue.some(movesOrRenames)) waiting.later = true;
    queue.push(waiting);
    if (ask && !waiting.later) this.#ask(client, waiting, ask);
    this.pump(client);
  }

  /**
   * Asks the app about a waiting message; its answer settles it (over
   * {@linkcode PROXY_MAX_WAITING}, it is settled as refused at once).
   */
  #ask(client: C, waiting: Waiting, ask: PublishAsk): void {
    if (this.#waiting >= PROXY_MAX_WAITING) {
      this.#count("publish", "over_limit");
      waiting.settled = true;
      waiting.refusal = {
        code: "rate_limited",
        message: "the chat is busy: message dropped, try again",
      };
      return;
    }
    this.#waiting++;
    this.#publishes!.ask(ask).then((answer) => {
      this.#waiting--;
      this.#settle(waiting, answer);
      this.pump(client);
    });
  }

  /**
   * Runs the client's frames that may run now, in order: the ones the app
   * has answered, up to the first still waiting (or until a command waits
   * on the store: main.ts's `drainBacklog` calls this again after it).
   */
  pump(client: C): void {
    const queue = this.#queues.get(client);
    if (!queue) return;
    if (client.phase === "gone") return void this.#queues.delete(client);
    while (
      queue.length > 0 && client.phase === "joined" && !client.waitingOnStore
    ) {
      const head = queue[0];
      if (head.later) {
        // Asked now, in the room and under the nick it will be said in.
        head.later = false;
        const ask = publishAsk(client, head.command, this.#config);
        if (ask) this.#ask(client, head, ask);
        else head.settled = true;
      }
      if (!head.settled) break;
      const { command, refusal } = queue.shift()!;
      if (refusal) sendError(client, refusal.code, refusal.message);
      else this.hooks.run(client, command);
    }
    if (queue.length === 0) this.#queues.delete(client);
  }

  /** Applies the app's answer about a message to its waiting frame. */
  #settle(waiting: Waiting, answer: unknown): void {
    waiting.settled = true;
    const verdict = answer instanceof Failure
      ? undefined
      : publishVerdict(answer);
    if (!verdict) {
      if (!(answer instanceof Failure)) this.#badAnswer("publish");
      this.#count("publish", `failed_${this.#config.fail}`);
      if (this.#config.fail === "closed") {
        waiting.refusal = {
          code: "unavailable",
          message: "the chat's app did not answer: try again",
        };
      }
      return;
    }
    if ("refuse" in verdict) {
      this.#count("publish", "refuse");
      waiting.refusal = verdict.refuse;
      return;
    }
    if (verdict.text !== undefined) {
      this.#count("publish", "replace");
      // Checked again by the command as the client's own text is.
      waiting.command = {
        ...waiting.command,
        text: verdict.text,
      } as Command;
      return;
    }
    this.#count("publish", "allow");
  }

  /** One POST of a batch: its answers in order, or why there are none. */
  async #post(url: string, key: string, asks: unknown[]): Promise<Outcome> {
    const kind = key === "connects" ? "connect" : "publish";
    if (this.#closed) return { failure: "the chat is stopping" };
    let client = this.#http.get(url);
    if (!client) this.#http.set(url, client = new WebhookClient(url));
    const body = JSON.stringify({ [key]: asks });
    let headers = "";
    if (this.#config.secret) {
      const timestamp = String(Math.floor(Date.now() / 1000));
      headers =
        `${PROXY_HEADERS.timestamp}: ${timestamp}\r\n${PROXY_HEADERS.signature}: ${
          webhookSignature(this.#config.secret, timestamp, body)
        }\r\n`;
    }
    const started = performance.now();
    let outcome: Outcome;
    try {
      const answer = await client.exchange(
        headers,
        body,
        this.#config.timeoutMs,
        PROXY_MAX_ANSWER_BYTES,
      );
      outcome = answer.status >= 200 && answer.status < 300
        ? resultsOf(decoder.decode(answer.body), asks.length)
        : { failure: `status ${answer.status}` };
    } catch (error) {
      outcome = {
        failure: error instanceof Error ? error.message : String(error),
      };
    }
    const { counters, log } = this.#config;
    const ok = !("failure" in outcome);
    bump(
      counters.proxyRequests,
      `proxy="${kind}",outcome="${ok ? "answered" : "failed"}"`,
    );
    if (ok) {
      observe(counters.proxyLatency, (performance.now() - started) / 1000);
    }
    if (!ok && !this.#failing) {
      this.#failing = true;
      log("warn", "proxy_failed", {
        proxy: kind,
        asks: asks.length,
        error: (outcome as { failure: string }).failure,
        fail: this.#config.fail,
      });
    } else if (ok && this.#failing) {
      this.#failing = false;
      log("info", "proxy_recovered", { proxy: kind });
    }
    return outcome;
  }

  #count(kind: "connect" | "publish", verdict: string): void {
    bump(
      this.#config.counters.proxyVerdicts,
      `proxy="${kind}",verdict="${verdict}"`,
    );
  }

  #badAnswer(kind: "connect" | "publish"): void {
    this.#config.log("warn", "proxy_bad_answer", { proxy: kind });
  }
}

const decoder = new TextDecoder();

/** The answers of a POST's body: `{"results":[...]}`, one per ask. */
function resultsOf(text: string, count: number): Outcome {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { failure: "the answer is not JSON" };
  }
  const results = (parsed as { results?: unknown } | null)?.results;
  if (!Array.isArray(results)) {
    return { failure: 'the answer has no "results" list' };
  }
  if (results.length !== count) {
    return {
      failure: `the answer has ${results.length} results for ${count} asks`,
    };
  }
  return { results };
}

/** What the app is asked about a command, if it is a message worth asking. */
/** A command after which a message is said in another room or nick. */
function movesOrRenames({ command }: Waiting): boolean {
  return command.type === "join" || command.type === "nick";
}

function publishAsk(
  client: ProxyClient,
  command: Command,
  { maxMessageChars }: { maxMessageChars: number },
): PublishAsk | undefined {
  if (
    command.type !== "message" && command.type !== "action" &&
    command.type !== "dm" && command.type !== "edit"
  ) {
    return undefined;
  }
  const text = checkMessage(command.text, maxMessageChars);
  // The chat's own refusals (too long, empty) need no app.
  if (isRefusal(text) || text.length === 0) return undefined;
  return {
    room: client.room.name,
    nick: client.nick,
    address: client.ip,
    ...(client.user !== undefined ? { user: client.user } : {}),
    kind: command.type,
    text,
    ...(command.type === "dm" ? { to: command.to } : {}),
    ...(command.type === "edit" ? { id: command.id } : {}),
    ...("replyTo" in command && command.replyTo !== undefined
      ? { replyTo: command.replyTo }
      : {}),
  };
}

/** A reason the app gave, on one line and not too long; or `fallback`. */
function reasonOf(value: unknown, fallback: string): string {
  if (typeof value !== "string" || value.trim() === "") return fallback;
  return [...oneLine(value.trim())].slice(0, PROXY_MAX_REASON_CHARS).join("");
}

/** An answer about a message, or undefined when it is not one. */
export function publishVerdict(
  answer: unknown,
):
  | { text?: string }
  | { refuse: { code: ErrorCode; message: string } }
  | undefined {
  if (typeof answer !== "object" || answer === null) return undefined;
  const { allow, text, code, reason } = answer as Record<string, unknown>;
  if (allow === true) {
    if (text === undefined) return {};
    return typeof text === "string" ? { text } : undefined;
  }
  if (allow !== false) return undefined;
  return {
    refuse: {
      code:
        (typeof code === "string" && PROXY_ERROR_CODE.test(code)
          ? code
          : REFUSED_BY_APP) as ErrorCode,
      message: reasonOf(reason, "refused by the app"),
    },
  };
}

/** An answer about a connection, or undefined when it is not one. */
export function connectVerdict(answer: unknown): ConnectVerdict | undefined {
  if (typeof answer !== "object" || answer === null) return undefined;
  const { allow, nick, roles, status, reason } = answer as Record<
    string,
    unknown
  >;
  if (allow === true) {
    if (nick !== undefined && typeof nick !== "string") return undefined;
    if (
      roles !== undefined &&
      !(Array.isArray(roles) && roles.every((role) => typeof role === "string"))
    ) {
      return undefined;
    }
    return {
      allow: true,
      ...(nick !== undefined ? { nick } : {}),
      ...(Array.isArray(roles) && roles.includes("op") ? { op: true } : {}),
    };
  }
  if (allow !== false) return undefined;
  // The app's 4xx; anything else it says is a 403.
  const given = typeof status === "number" && Number.isInteger(status) &&
      status >= 400 && status <= 499
    ? status
    : 403;
  return {
    allow: false,
    status: given,
    reason: reasonOf(reason, "The app did not let you in."),
    label: "refused_by_app",
  };
}
