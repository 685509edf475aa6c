/**
 * Private rooms' commands: `/private on|off`, `/invite NICK`, `/invite link
 * [uses] [hours]`, `/uninvite NICK|CODE`, `/uninvite link ID` and
 * `/invites` (and their JSON forms and API methods): who may give them,
 * what each asks of the room store, what the moderator is answered, and the
 * log line that accounts for it. Invite codes are made and hashed here: a
 * code is shown once, to the moderator who asked for it, and only its hash
 * is kept (so a store that leaks gives no working code).
 *
 * A side module, as moderation.ts: main.ts hands it a command and the store,
 * and sends and logs what it returns; nothing here keeps state.
 *
 * @module
 */

import { createHash, randomBytes } from "node:crypto";
import {
  ACCESS_USAGE,
  type AccessCommand,
  checkAccess,
  type ErrorCode,
  INVITE_CODE,
  INVITE_CODE_BYTES,
  type InviteFrame,
  inviteText,
  isRefusal,
  MAX_ROOM_INVITES,
  systemText,
} from "../wire/protocol.ts";
import { linkId, type LogFields, type RoomStore } from "../stores/rooms.ts";
import { ownerOfUser } from "./auth.ts";
import { type Member, sendError, sendToOne } from "./delivery.ts";

/** Who gives a private-room command. */
export interface AccessActor {
  nick: string;
  /** A moderator (token role `op`, or `--op-key`). */
  op: boolean;
  /**
   * The page's address, as the actor reached it (a browser's origin), for
   * an invite link: `PAGE#ROOM&invite=CODE`.
   */
  pageUrl: string;
}

/** What came of a private-room command. */
export type AccessOutcome =
  /** Refused: the actor gets this error. */
  | { error: ErrorCode; message: string }
  /** Done: the actor gets `reply` (none for `/private`: the room's event says it); logged when `log`. */
  | { reply?: InviteFrame; log?: LogFields };

/** A new invite code: {@linkcode INVITE_CODE_BYTES} random bytes, base64url. */
export function newInviteCode(): string {
  return randomBytes(INVITE_CODE_BYTES).toString("base64url");
}

/**
 * What a store keeps of an invite code, and looks one up by: its SHA-256
 * (base64url). A code is random and long, so no salt or slow hash is
 * needed: nobody can search for one from its hash.
 */
export function inviteCodeHash(code: string): string {
  return createHash("sha256").update(code).digest("base64url");
}

/**
 * The hash of a code brought to the door (`?invite=`), or undefined for
 * one that is no code at all (not even looked up, and refused as none).
 */
export function broughtCode(code: string | null): string | undefined {
  return code !== null && INVITE_CODE.test(code)
    ? inviteCodeHash(code)
    : undefined;
}

/**
 * Carries out a private-room command for `actor` in `room`: moderators
 * only. The command's fields are checked here (protocol.ts `checkAccess`),
 * whoever gave it: a socket, the API, a test. `now` is when a link's hours
 * start.
 */
export async function access(
  store: RoomStore,
  room: string,
  actor: AccessActor,
  given: AccessCommand,
  now = Date.now(),
): Promise<AccessOutcome> {
  if (!actor.op) {
    return {
      error: "forbidden",
      message: `only moderators may /${given.type}`,
    };
  }
  const command = checkAccess(given as unknown as Record<string, unknown>);
  if (command === undefined) {
    return { error: "bad_request", message: ACCESS_USAGE[given.type] };
  }
  if (isRefusal(command)) {
    return { error: command.code, message: command.message };
  }
  const base = { action: command.type, room, by: actor.nick };
  switch (command.type) {
    case "private":
      await store.private(room, {
        type: "private",
        by: actor.nick,
        on: command.on,
      });
      return { log: { ...base, on: command.on } };
    case "invite": {
      if ("link" in command) {
        const code = newInviteCode();
        const hash = inviteCodeHash(code);
        const until = now + command.link.hours * 3_600_000;
        const given = await store.invite(room, {
          by: actor.nick,
          link: { hash, uses: command.link.uses, until },
        });
        if (given === "invite_limit") return tooMany();
        const link = linkId(hash);
        return {
          reply: {
            type: "invite_link",
            link,
            code,
            url: `${actor.pageUrl}#${room}&invite=${code}`,
            uses: command.link.uses,
            until,
          },
          log: {
            ...base,
            target: `link:${link}`,
            uses: command.link.uses,
            hours: command.link.hours,
          },
        };
      }
      const given = await store.invite(
        room,
        "nick" in command ? { by: actor.nick, nick: command.nick } : {
          by: actor.nick,
          user: command.user,
          owner: ownerOfUser(command.user),
        },
      );
      if (given === "invite_limit") return tooMany();
      if (given === "no_such_nick") {
        return {
          error: "no_such_nick",
          message: `nobody here is or was signed in as ${
            "nick" in command ? command.nick : command.user
          }`,
        };
      }
      return "nick" in command
        ? {
          reply: { type: "invited", nick: command.nick },
          log: { ...base, target: command.nick },
        }
        : {
          reply: { type: "invited", user: command.user },
          log: { ...base, target: `user:${command.user}` },
        };
    }
    case "uninvite": {
      const revoked = await store.uninvite(
        room,
        "nick" in command
          ? { nick: command.nick }
          : "user" in command
          ? { owner: ownerOfUser(command.user) }
          : "code" in command
          ? { hash: inviteCodeHash(command.code) }
          : { link: command.link },
      );
      const what = "nick" in command
        ? command.nick
        : "user" in command
        ? `user ${command.user}`
        : "code" in command
        ? "that code"
        : `link ${command.link}`;
      if (revoked === 0) {
        return { error: "not_invited", message: `${what} is not invited here` };
      }
      const reply: InviteFrame = "nick" in command
        ? { type: "uninvited", nick: command.nick }
        : "user" in command
        ? { type: "uninvited", user: command.user }
        : {
          type: "uninvited",
          link: "code" in command
            ? linkId(inviteCodeHash(command.code))
            : command.link,
        };
      return {
        reply,
        log: {
          ...base,
          target: "link" in reply
            ? `link:${reply.link}`
            : "user" in reply
            ? `user:${reply.user}`
            : reply.nick,
        },
      };
    }
    case "invites":
      return { reply: { type: "invites", ...await store.invites(room) } };
  }
}

/** The refusal of an invite past {@linkcode MAX_ROOM_INVITES}. */
function tooMany(): AccessOutcome {
  return {
    error: "invite_limit",
    message:
      `this room has ${MAX_ROOM_INVITES} invites: revoke some (/uninvite) first`,
  };
}

/** A private-room command's answer to the moderator: its error or its reply. */
export function answerAccess(client: Member, outcome: AccessOutcome): void {
  if ("error" in outcome) {
    return sendError(client, outcome.error, outcome.message);
  }
  if (!outcome.reply) return;
  sendToOne(
    client,
    client.json
      ? JSON.stringify(outcome.reply)
      : systemText(inviteText(outcome.reply)),
  );
}
