/**
 * Read markers and what they leave unread, written once for every store: a
 * person's marker in a room moves only forward, within the ids the room has
 * given out, and only in the room's epoch; a person keeps markers in at
 * most {@linkcode MAX_MY_ROOMS} rooms; and what counts as unread and as a
 * mention after a marker ({@linkcode countOf}), capped so that a count is
 * bounded work.
 *
 * The stores keep the markers (rooms.ts `MemoryStore`, with `--data` in the
 * file, with `--redis` in a hash per person) and decide with
 * {@linkcode markRead}; the server (server/unread.ts) counts with
 * {@linkcode countOf}, as the stores' `unread` does over what they keep.
 *
 * A leaf beside room_rules.ts: it imports only the wire contract and the
 * nick key.
 *
 * @module
 */

import {
  MAX_NICK_CHARS,
  MAX_UNREAD_COUNTED,
  type RoomEvent,
} from "../wire/protocol.ts";
import { nickKey } from "./room_rules.ts";

/**
 * Most rooms a person keeps a read marker in: marking one more forgets the
 * least recently marked (a person's list of rooms is at most this long).
 * @default {50}
 */
export const MAX_MY_ROOMS = 50;

export { MAX_UNREAD_COUNTED };

/**
 * Most messages, actions and direct messages a count reads after a marker
 * from a data file (`--data`, where every event retained is counted): with
 * more than this many after it, the count is {@linkcode MAX_UNREAD_COUNTED}.
 * In memory and with Redis a count reads the live window (`--history-size`).
 * @default {3996}
 */
export const MAX_UNREAD_READ = 4 * MAX_UNREAD_COUNTED;

/** A person's read marker in one room. */
export interface ReadMarker {
  room: string;
  /** The room's epoch when it was set: in another epoch it is void. */
  epoch: string;
  /** Everything up to this event id is read. */
  id: number;
  /**
   * The nick the person held in the room when they last marked it: what
   * mentions of them are counted by, and their own messages told by.
   */
  nick: string;
  /** When it last moved (ms since the epoch): a person's rooms are listed newest first. */
  at: number;
}

/** A room as {@linkcode markRead} needs it. */
export interface MarkedRoom {
  epoch: string;
  /** The last id the room gave out. */
  lastId: number;
}

/**
 * A person marks a room read up to event `id`: the marker from now on,
 * `unchanged` when it is at or past `id` already (in the room's epoch:
 * markers only move forward), or `past_newest` when the room has given out
 * no such id yet (or does not exist). A marker of another epoch is void:
 * any id of this one moves it.
 */
export function markRead(
  current: ReadMarker | undefined,
  room: MarkedRoom | undefined,
  mark: { room: string; id: number; nick: string; now: number },
): ReadMarker | "unchanged" | "past_newest" {
  if (!room || mark.id > room.lastId) return "past_newest";
  if (current?.epoch === room.epoch && current.id >= mark.id) {
    return "unchanged";
  }
  return {
    room: mark.room,
    epoch: room.epoch,
    id: mark.id,
    nick: mark.nick,
    at: mark.now,
  };
}

/**
 * The markers a person keeps no more: past {@linkcode MAX_MY_ROOMS}, the
 * least recently moved (`markers` all of theirs, the new one included).
 */
export function forgotten(
  markers: readonly ReadMarker[],
  max: number = MAX_MY_ROOMS,
): ReadMarker[] {
  if (markers.length <= max) return [];
  return newestFirst(markers).slice(max);
}

/** Markers, the most recently moved first (then by room, for a stable order). */
export function newestFirst(markers: readonly ReadMarker[]): ReadMarker[] {
  return [...markers].sort((a, b) =>
    b.at - a.at || (a.room < b.room ? -1 : a.room > b.room ? 1 : 0)
  );
}

/**
 * What {@linkcode countOf} says of one event for one reader: not unread
 * (0: not a message, the reader's own, another's DM, …), unread (1), or
 * unread and mentioning the reader (2: or a DM to them).
 */
export type Counted = 0 | 1 | 2;
const NOT_COUNTED = 0;
const UNREAD = 1;
const MENTION = 2;

/**
 * What one event is to a reader (their nick's key, {@linkcode nickKey}):
 * a message or an action not sent by them is unread, and a mention when a
 * word of it is their nick (`@ada`, `ada,` and `ADA` all are: by nick key,
 * as nicks are compared); a direct message to them is unread and a mention;
 * nothing else counts (joins, renames, moderation, their own, others' DMs).
 * The caller gives only events after the marker that the store keeps (a
 * deleted message is not kept).
 */
export function countOf(event: RoomEvent, readerKey: string): Counted {
  return countFor(factsOf(event), readerKey);
}

/**
 * What {@linkcode countOf} needs of an event, worked out once per event
 * object (an event is counted for every reader watching its room, and
 * again at each count): who sent it, to whom (a DM), the nick keys of its
 * words. Undefined: it never counts.
 */
export interface EventFacts {
  dm: boolean;
  from: string;
  /** A DM's recipient's key. */
  to?: string;
  /** A message's or action's words' nick keys. */
  words?: Set<string>;
}

const facts = new WeakMap<RoomEvent, EventFacts | null>();

/** An event's {@linkcode EventFacts}, remembered for the event object. */
export function factsOf(event: RoomEvent): EventFacts | undefined {
  let known = facts.get(event);
  if (known === undefined) {
    switch (event.type) {
      case "message":
      case "action":
        known = { dm: false, from: keyOf(event.from), words: wordKeys(event) };
        break;
      case "dm":
        known = { dm: true, from: keyOf(event.from), to: keyOf(event.to) };
        break;
      default:
        known = null;
    }
    facts.set(event, known);
  }
  return known ?? undefined;
}

/** {@linkcode countOf} on an event's facts. */
export function countFor(
  event: EventFacts | undefined,
  readerKey: string,
): Counted {
  if (!event || event.from === readerKey) return NOT_COUNTED;
  if (event.dm) return event.to === readerKey ? MENTION : NOT_COUNTED;
  return event.words!.has(readerKey) ? MENTION : UNREAD;
}

/** Unread and mention counts of one room. */
export interface UnreadCounts {
  unread: number;
  mentions: number;
}

/** `counts` with one more event as {@linkcode countOf} said, capped. */
export function addCounted(counts: UnreadCounts, counted: Counted): void {
  if (counted === NOT_COUNTED) return;
  if (counts.unread < MAX_UNREAD_COUNTED) counts.unread++;
  if (counted === MENTION && counts.mentions < MAX_UNREAD_COUNTED) {
    counts.mentions++;
  }
}

/**
 * The counts of a marker's reader over `events` from index `from` (those
 * after the marker that the store keeps, in id order; earlier ones are
 * skipped); `more`:
 * there are more after them than were read ({@linkcode MAX_UNREAD_READ}),
 * so the count is at its cap.
 */
export function countUnread(
  events: readonly RoomEvent[],
  marker: Pick<ReadMarker, "id" | "nick">,
  more = false,
  from = 0,
): UnreadCounts {
  const counts = { unread: 0, mentions: 0 };
  const key = keyOf(marker.nick);
  // A plain loop from `from`: a live window is counted in place, uncopied.
  for (let i = from; i < events.length; i++) {
    const event = events[i];
    if (event.id > marker.id) addCounted(counts, countFor(factsOf(event), key));
  }
  if (more) counts.unread = MAX_UNREAD_COUNTED;
  return counts;
}

/** A word that may be a nick: as a nick's characters (protocol.ts). */
const WORD = /[\p{L}\p{Nd}_-][\p{L}\p{M}\p{Nd}_-]*/gu;

/** The nick keys of the words of a message's text. */
function wordKeys(event: { text: string }): Set<string> {
  const keys = new Set<string>();
  for (const [word] of event.text.matchAll(WORD)) {
    // No nick is longer (code units: a quick bound).
    if (word.length <= 2 * MAX_NICK_CHARS) keys.add(keyOf(word));
  }
  return keys;
}

/**
 * Nick keys of words and nicks seen lately: the same words come again and
 * again, and a key (NFKC, confusable skeleton) costs microseconds.
 */
const keys = new Map<string, string>();

/** Words whose keys {@linkcode keyOf} keeps at most (then it starts over). */
const KEYS_KEPT = 10_000;

/** {@linkcode nickKey}, remembered. */
export function keyOf(word: string): string {
  let key = keys.get(word);
  if (key === undefined) {
    if (keys.size >= KEYS_KEPT) keys.clear();
    key = nickKey(word);
    keys.set(word, key);
  }
  return key;
}
