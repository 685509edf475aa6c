/**
 * Start-up failures of the deno-chat CLI worded for a person: one line that
 * names the cause, the flag or value involved and what to do, instead of a
 * Deno error and its stack. main.ts turns the errors of `parseArgs`,
 * `Deno.serve` and the Redis store into these lines; this module knows
 * nothing of main.ts (it is given the flags it needs).
 *
 * @module
 */

import {
  isSentinelUrl,
  parseSentinelUrl,
  redactRedisUrl,
} from "../stores/redis_url.ts";

/** Errors whose message is already worded for the user. */
const WORDED = new WeakSet<Error>();

/**
 * `error` again, with `message` (one line, without the `deno-chat: `
 * prefix) for the CLI to print as it is. It keeps its class, so that a
 * caller of `startChat` can still test for `Deno.errors.AddrInUse`, and has
 * the original as its `cause`.
 */
export function reworded(error: unknown, message: string): Error {
  const Class = error instanceof Error
    ? error.constructor as new (message: string, options: ErrorOptions) => Error
    : Error;
  const worded = new Class(message, { cause: error });
  WORDED.add(worded);
  return worded;
}

/**
 * Edit distance between two strings (optimal string alignment: insertions,
 * deletions, substitutions and swaps of two neighbours each count 1).
 */
export function editDistance(a: string, b: string): number {
  const d = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => i || j),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(
        d[i - 1][j] + 1,
        d[i][j - 1] + 1,
        d[i - 1][j - 1] + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * The known flag closest to `given` (both without dashes), if it is close
 * enough to be a typo: at most 2 edits, and fewer than half its length (so
 * `-x` suggests nothing).
 */
export function nearestFlag(
  given: string,
  flags: readonly string[],
): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const flag of flags) {
    const distance = editDistance(given.toLowerCase(), flag);
    if (distance < bestDistance) [best, bestDistance] = [flag, distance];
  }
  const close = bestDistance <= 2 && bestDistance * 2 < given.length;
  return close ? best : undefined;
}

/**
 * A `node:util` `parseArgs` error as one line (theirs can span three), or
 * undefined for an error that is not one of them. `labels` maps each flag
 * (without dashes) to how the help shows it (`--port N`).
 */
export function flagProblem(
  error: unknown,
  labels: Record<string, string>,
): string | undefined {
  const code = (error as { code?: string })?.code;
  const message = error instanceof Error ? error.message : "";
  const named = message.match(/'(-{1,2}[^' =<]*)/)?.[1] ?? "";
  const flag = named.replace(/^-+/, "");
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const near = nearestFlag(flag, Object.keys(labels));
      return `unknown flag ${named}${near ? `: did you mean --${near}?` : ""}`;
    }
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return labels[flag] && labels[flag] !== named
        ? `${named} needs a value: ${labels[flag]}`
        : `${named} takes no value`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL": {
      const argument = message.match(/'([^']*)'/)?.[1] ?? "";
      // `main.ts 3000` most likely meant the page port.
      const port = /^\d+$/.test(argument) && labels.port
        ? `: did you mean --port ${argument}?`
        : ": every option is a flag";
      return `unexpected argument "${argument}"${port}`;
    }
  }
  return undefined;
}

/** Why `text` is not a `--redis` URL, or undefined when it is one. */
export function redisUrlProblem(text: string): string | undefined {
  const rest = text.includes("://") ? text.split("://")[1] : text;
  const hint = `write it as redis://${rest}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    return `--redis ${text} is not a Redis URL: ${hint}`;
  }
  if (isSentinelUrl(text)) {
    const sentinel = parseSentinelUrl(text);
    return typeof sentinel === "string"
      ? `--redis ${redactRedisUrl(text)} ${sentinel}`
      : undefined;
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `--redis ${text} is not a valid URL: write redis://HOST:PORT`;
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    return `--redis ${text} is not a Redis URL (redis://, rediss:// or redis+sentinel://): ${hint}`;
  }
  return undefined;
}

/** A file named by a flag could not be read: which flag, which file, why. */
export function unreadableFile(
  flag: string,
  path: string,
  error: unknown,
): string {
  const why = error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : (error instanceof Error ? error.message : String(error))
      .replace(/ \(os error \d+\).*$/, "").toLowerCase();
  return `--${flag} ${path}: ${why}: give the path of a readable PEM file`;
}

/** Where a server was to listen: its flag and the TLS text it was given. */
export interface ListenAttempt {
  /** The port's flag without dashes: `port` or `ws-port`. */
  flag: string;
  port: number;
  hostname: string;
  cert?: string;
  key?: string;
}

/**
 * A `Deno.serve` failure {@linkcode reworded} to name the flag at fault, or
 * the error itself when it is none of the known ones.
 */
export function listenFailure(error: unknown, at: ListenAttempt): unknown {
  const { flag, port, hostname } = at;
  if (error instanceof Deno.errors.AddrInUse) {
    return reworded(
      error,
      `--${flag} ${port} is in use (another deno-chat?): choose another with --${flag} N or stop the other process`,
    );
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return reworded(
      error,
      `--${flag} ${port} needs privileges (ports below 1024 do): choose one from 1024 with --${flag} N`,
    );
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return reworded(
      error,
      `--hostname ${hostname} is not an address of this machine: give one of its addresses, or 0.0.0.0 for all`,
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  if (/lookup address/.test(message)) {
    return reworded(
      error,
      `--hostname ${hostname} cannot be resolved: give an address of this machine, or 0.0.0.0 for all`,
    );
  }
  if (at.cert !== undefined && at.key !== undefined) {
    const problem = tlsProblem(message, at.cert, at.key);
    if (problem) return reworded(error, problem);
  }
  return error;
}

/**
 * Starts a server on `at.port` with `serve`; a failure is thrown
 * {@linkcode listenFailure}'s way, naming the flag at fault (a port in use,
 * a bad certificate), not only Deno's error.
 */
export function listening<T>(
  at: ListenAttempt,
  serve: (port: number) => T,
): T {
  try {
    return serve(at.port);
  } catch (error) {
    throw listenFailure(error, at);
  }
}

const CERTIFICATE = "-----BEGIN CERTIFICATE-----";
const PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/** What is wrong with `--cert`/`--key`, from Deno's TLS error and the PEM text. */
function tlsProblem(
  message: string,
  cert: string,
  key: string,
): string | undefined {
  if (!cert.includes(CERTIFICATE) && PRIVATE_KEY.test(cert)) {
    return key.includes(CERTIFICATE)
      ? "--cert holds a private key and --key a certificate: swap the two files"
      : "--cert holds a private key, not a certificate: give the certificate file";
  }
  if (!cert.includes(CERTIFICATE)) {
    return `--cert holds no PEM certificate (${CERTIFICATE}): give the certificate file`;
  }
  if (!PRIVATE_KEY.test(key)) {
    return key.includes(CERTIFICATE)
      ? "--key holds a certificate, not a private key: give the key file"
      : "--key holds no PEM private key (-----BEGIN … PRIVATE KEY-----): give the key file";
  }
  if (/KeyMismatch|not be consistent/i.test(message)) {
    return "--key is not the private key of the --cert certificate: give the key made with it";
  }
  if (/decode certificate/i.test(message)) {
    return "--cert holds a damaged certificate (it does not decode): make or copy it again";
  }
  if (/decode key/i.test(message)) {
    return "--key holds a damaged private key (it does not decode): make or copy it again";
  }
  return undefined;
}

/**
 * Any start-up error as one line: a {@linkcode reworded} one's message, or
 * the first line of another's after its name (never a stack).
 */
export function startupLine(error: unknown): string {
  if (error instanceof Error && WORDED.has(error)) return error.message;
  const message = error instanceof Error
    ? `${error.name === "Error" ? "" : error.name + ": "}${error.message}`
    : String(error);
  return `cannot start: ${message.split("\n")[0]}`;
}

/** The Redis store's failure to connect at start, with what to do. */
export function redisFailure(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return reworded(
    error,
    `${message.split("\n")[0]}: start redis-server there, or correct --redis`,
  );
}
