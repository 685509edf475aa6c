/**
 * The chat's log lines: one per event worth knowing, never message content,
 * as `text` (`… WARN frame_too_big nick=ann peer=… bytes=70000`) or `json`
 * (`--log-format`), to the `logSink` (stderr by default); `--quiet` drops
 * the `info` ones. main.ts's `log` writes through here with the running
 * chat's settings.
 *
 * @module
 */

import type { Log, LogFields } from "../stores/rooms.ts";
import type { Settings } from "./options.ts";

/** Writes one log line as `settings` say (format, sink, `quiet`). */
export function writeLog(
  settings: Pick<Settings, "quiet" | "logFormat" | "logSink">,
  level: Parameters<Log>[0],
  event: string,
  fields: LogFields = {},
): void {
  if (level === "info" && settings.quiet) return;
  const ts = new Date().toISOString();
  if (settings.logFormat === "json") {
    settings.logSink(JSON.stringify({ ts, level, event, ...fields }));
    return;
  }
  const rest = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
  settings.logSink(
    `${ts} ${level.toUpperCase()} ${event}${rest ? " " + rest : ""}`,
  );
}
