/**
 * Moderation's rules: who may do what, what each command asks of the room
 * store, what the moderator is answered, and the log line that accounts for
 * it. A side module: main.ts hands it a command and the store, and sends and
 * logs what it returns; nothing here keeps state or imports main.ts.
 *
 * @module
 */

import {
  checkModeration,
  type ErrorCode,
  isRefusal,
  type ModeratedFrame,
  MODERATION_USAGE,
  type ModerationCommand,
} from "../wire/protocol.ts";
import type { LogFields, RoomStore } from "../stores/rooms.ts";

/** Who gives a command. */
export interface Actor {
  nick: string;
  /** A moderator (token role `op`, or `--op-key`). */
  op: boolean;
  /** Id of the event that gave them their nick (authorship of a message). */
  claimedId: number;
}

/** What came of a moderation command. */
export type ModerationOutcome =
  /** Refused: the actor gets this error. */
  | { error: ErrorCode; message: string }
  /** Done, and only the moderator is told (mute, unmute, unban). */
  | { reply: ModeratedFrame; log: LogFields }
  /** Done, and the room's event says so. */
  | { log: LogFields };

/** The actions, as `chat_moderation_total`'s label and the log's `action`. */
export type ModerationAction = ModerationCommand["type"];

/**
 * Carries out a moderation command for `actor` in `room`. Everything but
 * `delete` is for moderators; `delete` is also for a message's author. The
 * command's fields are checked here (protocol.ts `checkModeration`), and
 * kept as checked, whoever gave it: a socket, the API, a test.
 */
export async function moderate(
  store: RoomStore,
  room: string,
  actor: Actor,
  given: ModerationCommand,
  now = Date.now(),
): Promise<ModerationOutcome> {
  if (!actor.op && given.type !== "delete") {
    return {
      error: "forbidden",
      message: `only moderators may /${given.type}`,
    };
  }
  const command = checkModeration(given);
  if (command === undefined) {
    return { error: "bad_request", message: MODERATION_USAGE[given.type] };
  }
  if (isRefusal(command)) {
    return { error: command.code, message: command.message };
  }
  const base = { action: command.type, room, by: actor.nick };
  const until = (minutes?: number) =>
    minutes === undefined ? undefined : now + minutes * 60_000;
  const noSuchNick = (nick: string): ModerationOutcome => ({
    error: "no_such_nick",
    message: `nobody here is called ${nick}`,
  });
  switch (command.type) {
    case "kick":
    case "ban": {
      const reason = command.reason;
      const minutes = command.type === "ban" ? command.minutes : undefined;
      const event = await store.kick(room, {
        nick: command.nick,
        by: actor.nick,
        reason,
        ban: command.type === "ban"
          ? { until: until(minutes), minutes }
          : undefined,
      });
      if (event === "no_such_nick") return noSuchNick(command.nick);
      const target = event.type === "kick" ? event.nick : command.nick;
      return {
        log: { ...base, target, minutes, reason: quoted(reason) },
      };
    }
    case "mute": {
      const reason = command.reason;
      const muted = await store.mute(
        room,
        command.nick,
        until(command.minutes),
      );
      if (muted === "no_such_nick") return noSuchNick(command.nick);
      return {
        reply: {
          type: "moderated",
          action: "mute",
          nick: command.nick,
          ...(command.minutes ? { minutes: command.minutes } : {}),
        },
        log: {
          ...base,
          target: command.nick,
          minutes: command.minutes,
          reason: quoted(reason),
        },
      };
    }
    case "unban":
    case "unmute": {
      const lifted = command.type === "unban"
        ? await store.unban(room, command.nick)
        : await store.unmute(room, command.nick);
      if (!lifted) {
        return command.type === "unban"
          ? {
            error: "not_banned",
            message: `${command.nick} is not banned here`,
          }
          : {
            error: "no_such_nick",
            message: `${command.nick} is not muted here`,
          };
      }
      return {
        reply: { type: "moderated", action: command.type, nick: command.nick },
        log: { ...base, target: command.nick },
      };
    }
    case "topic":
      await store.topic(room, {
        type: "topic",
        by: actor.nick,
        text: command.text,
      });
      return { log: base };
    case "slow":
      await store.slow(room, {
        type: "slow",
        by: actor.nick,
        seconds: command.seconds,
      });
      return { log: { ...base, seconds: command.seconds } };
    case "delete": {
      const removed = await store.delete(
        room,
        command.id,
        actor.nick,
        actor.op ? undefined : { nick: actor.nick, since: actor.claimedId },
      );
      if (removed === "no_such_message") {
        return {
          error: "no_such_message",
          message: `no message ${command.id} in this room's history`,
        };
      }
      if (removed === "forbidden") {
        return {
          error: "forbidden",
          message: "only its author or a moderator may delete a message",
        };
      }
      return { log: { ...base, target: command.id } };
    }
  }
}

/** A reason in a log line: quoted, so its spaces cannot make fields. */
function quoted(reason: string | undefined): string | undefined {
  return reason === undefined ? undefined : JSON.stringify(reason);
}

/** Largest close-frame reason, in UTF-8 bytes (RFC 6455 §5.5: 125 - 2). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** A close reason cut to fit a close frame, at a character boundary. */
export function fitCloseReason(reason: string): string {
  const encoder = new TextEncoder();
  let fitted = reason;
  while (encoder.encode(fitted).length > MAX_CLOSE_REASON_BYTES) {
    fitted = [...fitted].slice(0, -1).join("");
  }
  return fitted;
}

/** How a `moderated` answer reads in plain text. */
export function moderatedText(frame: ModeratedFrame): string {
  const how = frame.minutes ? ` for ${frame.minutes} min` : "";
  const done = {
    mute: "muted",
    unmute: "unmuted",
    unban: "unbanned",
  }[frame.action];
  return `${frame.nick} is ${done}${how}.`;
}
