/**
 * The HTTP API's handler as a running chat makes it: its settings from the
 * options, and the chat as the API sees it (http_api.ts's
 * {@linkcode ApiBackend}): the store for what every process shares (rooms,
 * history, presence, publishing, disconnecting), and what main.ts hands in for
 * this process: its figures, its log and counts, and moderation carried
 * out, logged and counted as for a person.
 *
 * @module
 */

import {
  type ApiBackend,
  ApiError,
  apiHandler,
  type ApiSettings,
  type ProcessInfo,
} from "./http_api.ts";
import type { Settings } from "./options.ts";
import { ownerOfUser } from "./auth.ts";
import {
  type Actor,
  fitCloseReason,
  type ModerationOutcome,
} from "./moderation.ts";
import type { AccessActor, AccessOutcome } from "./invites.ts";
import {
  type Author,
  type EditRefusal,
  NoSuchRoom,
  type Reactor,
  type ReactRefusal,
  type RoomStore,
} from "../stores/rooms.ts";
import type { Speaker } from "./http_api.ts";
import { withReactions } from "./delivery.ts";
import {
  type AccessCommand,
  type ErrorCode,
  type ModerationCommand,
  REFUSALS,
  Status,
} from "../wire/protocol.ts";

/** The moderator's name the API's actions are logged under (`by=api`). */
export const API_ACTOR = "api";

/**
 * What the API's moderation errors answer with, by the actor's error code:
 * the status, and the parameter at fault.
 */
const MODERATION_ERRORS: Partial<
  Record<ErrorCode, { status: number; field?: string }>
> = {
  no_such_nick: { status: Status.NotFound, field: "nick" },
  no_such_message: { status: Status.NotFound, field: "id" },
  not_banned: { status: Status.BadRequest, field: "nick" },
  forbidden: { status: Status.Forbidden },
  not_invited: { status: Status.BadRequest },
  invite_limit: { status: Status.BadRequest, field: "room" },
};

/** What the API answers an edit the store refused with, by its reason. */
const EDIT_REFUSALS: Record<
  EditRefusal["refused"],
  { status: number; message: (id: number) => string; field?: string }
> = {
  no_such_message: {
    status: Status.NotFound,
    message: (id) => `no message ${id} in this room's history`,
    field: "id",
  },
  forbidden: {
    status: Status.Forbidden,
    message: (id) => `message ${id} was not posted as this from`,
    field: "from",
  },
  edit_window: {
    status: Status.BadRequest,
    message: () => "too late to edit it (--edit-window)",
    field: "id",
  },
  muted: {
    status: Status.Forbidden,
    message: () => "the user is muted in this room",
    field: "user",
  },
};

/** What the API answers a reaction the store refused with, by its reason. */
const REACT_REFUSALS: Record<
  ReactRefusal["refused"],
  { status: number; message: (id: number) => string; field?: string }
> = {
  no_such_message: EDIT_REFUSALS.no_such_message,
  reaction_limit: {
    status: Status.BadRequest,
    message: (id) => `message ${id} has as many different reactions as it may`,
    field: "key",
  },
  muted: EDIT_REFUSALS.muted,
};

/**
 * The author an API edit is done as: the app holds its names for good (any
 * message it posted is its); a verified user, only what they sent signed in.
 */
function authorOf(as: Speaker): Author {
  return as.user === undefined ? { nick: as.from, since: 0, keys: [] } : {
    nick: as.from,
    since: 0,
    keys: [ownerOfUser(as.user)],
    verified: true,
  };
}

/** Who an API reaction is: the app's name, or the verified user. */
function reactorOf(as: Speaker): Reactor {
  if (as.user === undefined) {
    return { owner: `api:${as.from}`, nick: as.from, keys: [] };
  }
  const owner = ownerOfUser(as.user);
  return { owner, nick: as.from, keys: [owner] };
}

/** What only the running process can tell or do for the API. */
export interface ThisProcess {
  /** Where the API's log lines go. */
  log: ApiSettings["log"];
  /** Counts a request in `chat_api_requests_total`, by its label set. */
  count(labels: string): void;
  /** How long after sending a message may be edited (`--edit-window`). */
  editWindowMs: number;
  /** `info`'s figures: version, uptime, connections, the store. */
  info(): ProcessInfo;
  /** Moderation as a moderator does it: carried out, logged and counted. */
  moderate(
    room: string,
    actor: Actor,
    command: ModerationCommand,
  ): Promise<ModerationOutcome>;
  /** A private-room command as a moderator gives it: logged and counted. */
  access(
    room: string,
    actor: AccessActor,
    command: AccessCommand,
  ): Promise<AccessOutcome>;
  /** The page's URL, for the invite links the API makes. */
  pageUrl(): string;
}

/** The chat as the API sees it: the store (every process) and this process. */
export function apiBackend(store: RoomStore, here: ThisProcess): ApiBackend {
  /**
   * Runs `act` with the room held (rooms.ts `RoomStore.visit`): a room
   * nobody is in that the store keeps is there for it, and with `create`
   * (`publish`) a room never made is made. `act` is told whether the room
   * exists; one that went meanwhile is 404, as is any the store has not.
   */
  async function inRoom<T>(
    room: string,
    create: boolean,
    act: (exists: boolean) => Promise<T>,
  ): Promise<T> {
    const visit = await store.visit(room, create);
    if (visit === "full") {
      throw new ApiError(
        REFUSALS.max_rooms.status,
        "max_rooms",
        `${room} would be a room more than --max-rooms allows here`,
        "room",
      );
    }
    try {
      return await act(visit === "held");
    } catch (error) {
      if (!(error instanceof NoSuchRoom)) throw error;
      throw new ApiError(
        Status.NotFound,
        "no_such_room",
        `there is no room ${room}`,
        "room",
      );
    } finally {
      if (visit === "held") store.release(room);
    }
  }
  return {
    publish: (room, from, text) =>
      inRoom(
        room,
        true,
        async (exists) =>
          exists
            ? await store.append(room, { type: "message", from, text })
            : undefined,
      ),
    once: (key, ttlMs, produce) => store.once(key, ttlMs, produce),
    async presence(room) {
      return (await store.roster(room)).map((entry) => ({
        nick: entry.nick,
        ...(entry.user !== undefined ? { user: entry.user } : {}),
        connections: entry.connections,
        op: entry.op,
      }));
    },
    // Private rooms are listed to nobody: the app is in none of them.
    rooms: async () =>
      (await store.rooms()).filter((entry) => !entry.private)
        .map(({ room, members }) => ({ room, members })),
    info: () => here.info(),
    history: (room, before, limit) =>
      inRoom(room, false, async (exists) => {
        if (!exists) return undefined;
        const page = await store.history(room, {
          before: before ?? Number.MAX_SAFE_INTEGER,
          limit,
          // The app reads what everyone in the room may: no private messages.
          visible: (event) => event.type !== "dm",
        });
        // Reactions counted, as a person sees them (the app is nobody's `me`).
        return {
          events: withReactions(page.events, page.reactions),
          more: page.more,
        };
      }),
    search: (room, query, limit) =>
      inRoom(room, false, async (exists) => {
        if (!exists) return undefined;
        const page = await store.search(room, {
          query,
          limit,
          // As for history: the app sees no private messages.
          visible: (event) => event.type !== "dm",
        });
        return {
          events: withReactions(page.events, page.reactions),
          more: page.more,
          ...(page.more ? { before: page.before } : {}),
          scope: page.scope,
        };
      }),
    disconnect: (target, reason) =>
      store.disconnect({
        room: target.room,
        nick: target.nick,
        owner: target.user !== undefined ? ownerOfUser(target.user) : undefined,
      }, fitCloseReason(`disconnected by the app: ${reason}`)),
    edit: (room, as, id, text) =>
      inRoom(room, false, async (exists) => {
        if (!exists) throw new NoSuchRoom(room);
        const edited = await store.edit(
          room,
          authorOf(as),
          id,
          text,
          here.editWindowMs,
        );
        if (!("refused" in edited)) return edited;
        const { status, message, field } = EDIT_REFUSALS[edited.refused];
        throw new ApiError(status, edited.refused, message(id), field);
      }),
    react: (room, as, id, key, on) =>
      inRoom(room, false, async (exists) => {
        if (!exists) throw new NoSuchRoom(room);
        const reacted = await store.react(room, reactorOf(as), id, key, on);
        if (!("refused" in reacted)) {
          return { on: reacted.on, count: reacted.count };
        }
        const { status, message, field } = REACT_REFUSALS[reacted.refused];
        throw new ApiError(status, reacted.refused, message(id), field);
      }),
    // Run whether or not the room exists: its bans and mutes outlive it
    // (`unban`), and the store says `no_such_room` where a command needs it.
    moderate: (room, command) =>
      inRoom(room, false, async () => {
        const outcome = await here.moderate(
          room,
          { nick: API_ACTOR, op: true, claimedId: 0 },
          command,
        );
        if ("error" in outcome) {
          const known = MODERATION_ERRORS[outcome.error];
          throw new ApiError(
            known?.status ?? Status.BadRequest,
            outcome.error,
            outcome.message,
            known?.field,
          );
        }
        return "reply" in outcome ? outcome.reply : {};
      }),
    // As `moderate`: private state and invites outlive a room's members.
    access: (room, command) =>
      inRoom(room, false, async () => {
        const outcome = await here.access(
          room,
          { nick: API_ACTOR, op: true, pageUrl: here.pageUrl() },
          command,
        );
        if ("error" in outcome) {
          const known = MODERATION_ERRORS[outcome.error];
          // The parameter that named the target (`nick`, `user`, …).
          const target = ["nick", "user", "code", "link"].find((name) =>
            name in command
          );
          throw new ApiError(
            known?.status ?? Status.BadRequest,
            outcome.error,
            outcome.message,
            known?.field ?? target,
          );
        }
        if (command.type === "private") return { private: command.on };
        const { type: _, ...answer } = outcome.reply!;
        return answer;
      }),
  };
}

/** The API's handler, made once at start-up; undefined without `--api-key`. */
export function makeApi(
  settings: Settings,
  store: RoomStore,
  here: ThisProcess,
  version: string,
): ((req: Request) => Promise<Response>) | undefined {
  if (!settings.apiKey) return undefined;
  return apiHandler(apiBackend(store, here), {
    key: settings.apiKey,
    name: settings.apiName,
    maxMessageChars: settings.maxMessageChars,
    rate: settings.apiRate,
    log: here.log,
    count: (method, status) =>
      here.count(
        `method="${method.replace(/[^a-z_.]/g, "?")}",status="${status}"`,
      ),
  }, version);
}
