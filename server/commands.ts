/**
 * What the commands that go to the store ask of it, and what their sender
 * is told: a message or action posted (or refused: muted, slow mode), a
 * direct message, `/nick`, a page of history, `/who`, and a moderation
 * command carried out and answered. main.ts's command table (`execute`)
 * calls them; each waits on the store and throws what it cannot handle,
 * for main.ts's `failed`.
 *
 * @module
 */

import {
  checkMessage,
  checkReactionKey,
  type HistoryAnswer,
  isRefusal,
  MAX_REACTION_KEYS,
  type ModerationCommand,
  type NewEvent,
  NICK_ERRORS,
  oneLine,
  renderText,
  type SearchCommand,
  type SearchResults,
  type SearchScope,
  systemText,
} from "../wire/protocol.ts";
import { nickKey, type RoomStore } from "../stores/rooms.ts";
import { bump } from "./metrics.ts";
import {
  type Member,
  sendError,
  sendNotice,
  sendToOne,
  visibleTo,
  withReactions,
} from "./delivery.ts";
import {
  type Actor,
  moderatedText,
  type ModerationOutcome,
} from "./moderation.ts";

/** A connection that sends commands: a member, and who it is to the store. */
export interface Sender extends Member {
  /** Where it is in its life; `gone` once it is out. */
  phase: string;
  /** What a ban or mute of it holds against (rooms.ts `JoinRequest.keys`). */
  keys: string[];
  /** The oldest event id it has been shown (where `/history` reads back from). */
  oldestSeen: number;
}

/**
 * A message or action goes through the store's `post`, which refuses it
 * while its sender is muted or slow mode says it is too early, or when it
 * replies (`replyTo`) to no message the room keeps.
 */
export async function post(
  store: RoomStore,
  client: Sender,
  body: NewEvent & { type: "message" | "action" },
  replyTo?: number,
): Promise<void> {
  const poster = { owner: client.owner, keys: client.keys, op: client.op };
  const posted = await store.post(
    client.room.name,
    poster,
    client.verified ? { ...body, verified: true } : body,
    replyTo,
  );
  if (!("refused" in posted)) {
    const kind = replyTo === undefined ? body.type : "reply";
    return bump(client.room.outbox.counters.said, kind);
  }
  if (posted.refused === "no_such_message") {
    return sendError(
      client,
      "no_such_message",
      `no message ${replyTo} to reply to in this room's history`,
    );
  }
  const seconds = posted.until === undefined
    ? undefined
    : Math.max(1, Math.ceil((posted.until - Date.now()) / 1000));
  if (posted.refused === "muted") {
    return sendError(
      client,
      "muted",
      seconds === undefined
        ? "you are muted in this room"
        : `you are muted in this room for ${seconds} s more`,
      seconds,
    );
  }
  sendError(
    client,
    "slow_mode",
    `slow mode: you may post again in ${seconds} s`,
    seconds,
  );
}

/**
 * `/edit ID TEXT`: the author's new text for their message (held to the
 * message's limits, and not empty), through the store's `edit` (refused
 * when it is not theirs, is gone, is past `windowMs`, or they are muted).
 */
export async function editMessage(
  store: RoomStore,
  client: Sender,
  { id, text: typed }: { id: number; text: string },
  { maxChars, windowMs }: { maxChars: number; windowMs: number },
): Promise<void> {
  const text = checkMessage(typed, maxChars);
  if (isRefusal(text)) return sendError(client, text.code, text.message);
  if (text.length === 0) {
    return sendError(
      client,
      "bad_request",
      "an edit needs text (/delete removes a message)",
    );
  }
  const edited = await store.edit(
    client.room.name,
    {
      nick: client.nick,
      since: client.claimedId,
      keys: client.keys,
      verified: client.verified,
    },
    id,
    text,
    windowMs,
  );
  if (!("refused" in edited)) {
    return bump(client.room.outbox.counters.said, "edit");
  }
  switch (edited.refused) {
    case "muted":
    case "no_such_message":
      return refuseOn(client, id, edited.refused);
    case "forbidden":
      return sendError(
        client,
        "forbidden",
        "only its author may edit a message",
      );
    case "edit_window":
      return sendError(
        client,
        "edit_window",
        windowMs === 0
          ? "messages cannot be edited here"
          : `a message may be edited for ${
            Math.round(windowMs / 1000)
          } s after it is sent`,
      );
  }
}

/**
 * `/react ID KEY`: adds the sender's person's reaction to a message, or
 * takes it back (`on`; absent: toggles), through the store's `react`
 * (refused for no such message, a new key past the limit, or a mute). The
 * room's notice is the answer.
 */
export async function react(
  store: RoomStore,
  client: Sender,
  { id, key: typed, on }: { id: number; key: string; on?: boolean },
): Promise<void> {
  const key = checkReactionKey(typed);
  if (isRefusal(key)) return sendError(client, key.code, key.message);
  const reacted = await store.react(
    client.room.name,
    { owner: client.owner, nick: client.nick, keys: client.keys },
    id,
    key,
    on,
  );
  if ("unchanged" in reacted) return;
  if (!("refused" in reacted)) {
    const change = reacted.on ? "added" : "taken_back";
    return bump(client.room.outbox.counters.reactions, change);
  }
  switch (reacted.refused) {
    case "muted":
    case "no_such_message":
      return refuseOn(client, id, reacted.refused);
    case "reaction_limit":
      return sendError(
        client,
        "reaction_limit",
        `a message takes at most ${MAX_REACTION_KEYS} different reactions`,
      );
  }
}

/** What an edit or a reaction of message `id` is told when a rule refused it. */
function refuseOn(
  client: Sender,
  id: number,
  refused: "muted" | "no_such_message",
): void {
  if (refused === "muted") {
    return sendError(client, "muted", "you are muted in this room");
  }
  sendError(
    client,
    "no_such_message",
    `no message ${id} in this room's history`,
  );
}

/** `/msg NICK text`: to one member, and the sender's own connections. */
export async function sendDirect(
  store: RoomStore,
  client: Sender,
  to: string,
  text: string,
): Promise<void> {
  const room = client.room.name;
  const recipient = (await store.members(room))
    .find((nick) => nickKey(nick) === nickKey(to));
  if (!recipient) {
    return sendError(client, "no_such_nick", `nobody here is called ${to}`);
  }
  await store.append(room, {
    type: "dm",
    from: client.nick,
    to: recipient,
    text,
    ...(client.verified ? { verified: true } : {}),
  });
  bump(client.room.outbox.counters.said, "dm");
}

/**
 * `/nick NICK`, a valid nick not its own: the store renames its holder
 * unless another holds it.
 */
export async function rename(
  store: RoomStore,
  client: Sender,
  nick: string,
): Promise<void> {
  const renamed = await store.rename(
    client.room.name,
    client.owner,
    client.nick,
    nick,
  );
  if (renamed === "nick_taken") {
    return sendError(client, "nick_taken", NICK_ERRORS.nick_taken);
  }
  client.nick = nick;
}

/**
 * Older events, by `visibleTo` (the one filter of what a client may see;
 * the store's paging leaves deleted messages out): JSON gets one `history`
 * answer; plain text gets the tutorial's lines, and a line when nothing
 * older is left. Without `before` (plain text), it reads back from the
 * oldest event the connection has been shown.
 */
export async function readHistory(
  store: RoomStore,
  client: Sender,
  before: number | undefined,
  limit: number,
): Promise<void> {
  const room = client.room;
  const page = await store.history(room.name, {
    before: before ?? client.oldestSeen,
    limit,
    visible: (event) => visibleTo(event, client),
  });
  // Gone, or moved on (`/join`) meanwhile: the page is for nobody.
  if (client.phase === "gone" || client.room !== room) return;
  const oldest = page.events[0]?.id;
  if (oldest !== undefined && oldest < client.oldestSeen) {
    client.oldestSeen = oldest;
  }
  if (client.json) {
    const answer: HistoryAnswer = {
      type: "history",
      events: withReactions(page.events, page.reactions, client.owner),
      more: page.more,
    };
    return sendToOne(client, JSON.stringify(answer));
  }
  for (const event of page.events) sendToOne(client, renderText(event));
  if (!page.more) {
    sendNotice(client, `this is the beginning of ${room.name}.`);
  }
}

/**
 * What a search costs of its sender's message rate (`--rate`, `--burst`),
 * in messages: reading a room's index is worth more than a post, so a
 * flood of searches is refused (`rate_limited`) sooner than one of posts.
 * @default {5}
 */
export const SEARCH_COST = 5;

/** What a search looked through, in plain text's last line. */
const SCOPE_TEXT: Record<SearchScope, string> = {
  all: "in everything this room keeps",
  window:
    "in the recent events this server keeps (older ones are not searched)",
};

/**
 * `search`: the room's messages that match, by the store's `search` and
 * `visibleTo` (a DM only to its parties; never a deleted message). JSON
 * gets one `search_results` answer; plain text a line per result with its
 * id (` .... #12 ada: text`), then one saying how many, what was searched,
 * and how to go on.
 */
export async function search(
  store: RoomStore,
  client: Sender,
  command: SearchCommand,
): Promise<void> {
  const room = client.room;
  const page = await store.search(room.name, {
    query: command.query,
    limit: command.limit,
    visible: (event) => visibleTo(event, client),
  });
  // Gone, or moved on (`/join`) meanwhile: the answer is for nobody.
  if (client.phase === "gone" || client.room !== room) return;
  if (client.json) {
    const answer: SearchResults = {
      type: "search_results",
      q: command.q,
      events: withReactions(page.events, page.reactions, client.owner),
      more: page.more,
      ...(page.more ? { before: page.before } : {}),
      scope: page.scope,
    };
    return sendToOne(client, JSON.stringify(answer));
  }
  for (const event of page.events) {
    sendNotice(client, `#${event.id} ${renderText(event)}`);
  }
  const q = oneLine(command.q);
  const found = page.events.length === 0
    ? `nothing found for "${q}"`
    : `${page.events.length} found for "${q}", newest first,`;
  // The same search from where this one stopped.
  const again = page.more
    ? ` Older: /search ${
      q.replace(/(^|\s)before:\S*/gi, "").trim()
    } before:${page.before}`
    : "";
  sendNotice(client, `${found} ${SCOPE_TEXT[page.scope]}.${again}`);
}

/** `/who`: the members, then the moderators and verified ones, if any. */
export async function who(store: RoomStore, client: Sender): Promise<void> {
  const room = client.room.name;
  const roster = await store.roster(room);
  const nicks = (entries: typeof roster) =>
    entries.map((entry) => entry.nick).join(", ");
  const moderators = roster.filter((entry) => entry.op);
  const verified = roster.filter((entry) => entry.verified);
  sendNotice(
    client,
    `in ${room}: ${nicks(roster)}` +
      (moderators.length ? `; moderators: ${nicks(moderators)}` : "") +
      (verified.length ? `; verified: ${nicks(verified)}` : ""),
  );
}

/**
 * A member's moderation command, carried out by `moderate` (main.ts's
 * `moderateAs`: the rules of moderation.ts, logged and counted, as for the
 * API), and answered.
 */
export async function moderateFor(
  client: Sender,
  command: ModerationCommand,
  moderate: (
    room: string,
    actor: Actor,
    command: ModerationCommand,
  ) => Promise<ModerationOutcome>,
): Promise<void> {
  const actor = {
    nick: client.nick,
    op: client.op,
    claimedId: client.claimedId,
  };
  answerModeration(client, await moderate(client.room.name, actor, command));
}

/** A moderation command's answer to the moderator: its error or its reply. */
function answerModeration(
  client: Sender,
  outcome: ModerationOutcome,
): void {
  if ("error" in outcome) {
    return sendError(client, outcome.error, outcome.message);
  }
  if ("reply" in outcome) {
    sendToOne(
      client,
      client.json
        ? JSON.stringify(outcome.reply)
        : systemText(moderatedText(outcome.reply)),
    );
  }
}
