/**
 * The HTTP API's handler as a running chat makes it: its settings from the
 * options, and the chat as the API sees it (http_api.ts's
 * {@linkcode ApiBackend}): the store for what every process shares (rooms,
 * history, presence, publishing, dismissing), and what main.ts hands in for
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
import { NoSuchRoom, type RoomStore } from "../stores/rooms.ts";
import {
  type ErrorCode,
  type ModerationCommand,
  Status,
} from "../wire/protocol.ts";

/** The moderator's name the API's actions are logged under (`by=api`). */
export const API_ACTOR = "api";

/** What the API's moderation errors answer with, by the actor's error code. */
const MODERATION_STATUS: Partial<Record<ErrorCode, number>> = {
  no_such_nick: Status.NotFound,
  no_such_message: Status.NotFound,
  forbidden: Status.Forbidden,
};

/** What only the running process can tell or do for the API. */
export interface ThisProcess {
  /** Where the API's log lines go. */
  log: ApiSettings["log"];
  /** Counts a request in `chat_api_requests_total`, by its label set. */
  count(labels: string): void;
  /** `info`'s figures: version, uptime, connections, the store. */
  info(): ProcessInfo;
  /** Moderation as a moderator does it: carried out, logged and counted. */
  moderate(
    room: string,
    actor: Actor,
    command: ModerationCommand,
  ): Promise<ModerationOutcome>;
}

/** The chat as the API sees it: the store (every process) and this process. */
export function apiBackend(store: RoomStore, here: ThisProcess): ApiBackend {
  return {
    async publish(room, from, text) {
      try {
        return await store.append(room, { type: "message", from, text });
      } catch (error) {
        if (error instanceof NoSuchRoom) return undefined;
        throw error;
      }
    },
    once: (key, ttlMs, produce) => store.once(key, ttlMs, produce),
    async presence(room) {
      return (await store.roster(room)).map((entry) => ({
        nick: entry.nick,
        ...(entry.user !== undefined ? { user: entry.user } : {}),
        connections: entry.connections,
        op: entry.op,
      }));
    },
    rooms: () => store.rooms(),
    info: () => here.info(),
    async history(room, before, limit) {
      try {
        return await store.history(room, {
          before: before ?? Number.MAX_SAFE_INTEGER,
          limit,
          // The app reads what everyone in the room may: no private messages.
          visible: (event) => event.type !== "dm",
        });
      } catch (error) {
        if (error instanceof NoSuchRoom) return undefined;
        throw error;
      }
    },
    disconnect: (target, reason) =>
      store.dismiss({
        room: target.room,
        nick: target.nick,
        owner: target.user !== undefined ? ownerOfUser(target.user) : undefined,
      }, fitCloseReason(`disconnected by the app: ${reason}`)),
    async moderate(room, command) {
      const outcome = await here.moderate(
        room,
        { nick: API_ACTOR, op: true, claimedId: 0 },
        command,
      );
      if ("error" in outcome) {
        throw new ApiError(
          MODERATION_STATUS[outcome.error] ?? Status.BadRequest,
          outcome.error,
          outcome.message,
        );
      }
      return "reply" in outcome ? outcome.reply : {};
    },
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
