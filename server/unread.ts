/**
 * Read markers and unread counts on this process: each person (a session
 * or a login) with connections here, the rooms they have a read marker in,
 * and what each leaves unread, told to every connection of theirs: the
 * welcome's `read` and `rooms`, a `read` notice when a marker moves (on any
 * process: the store's `onRead`), an `unread` notice when a message comes,
 * and `rooms` when the list changes (a room marked for the first time, one
 * forgotten, one whose marker became void).
 *
 * A room in someone's list is watched through the store's `subscribe`
 * (with Redis, its channel) while a person here has it in their list. The
 * store counts (`unread`, over what it keeps) when a person arrives, when
 * a marker moves, and when a message after it is deleted or edited; in
 * between each event adds what stores/markers.ts `countOf` says of it, so
 * that an event costs one look per person watching, not a count.
 *
 * @module
 */

import {
  type LiveEvent,
  type ReadNotice,
  type RoomCounts,
  type RoomEvent,
  type RoomsAnswer,
  roomsText,
  type UnreadNotice,
} from "../wire/protocol.ts";
import type { Log, ReadMarker, RoomStore } from "../stores/rooms.ts";
import {
  addCounted,
  countFor,
  factsOf,
  forgotten,
  keyOf,
  newestFirst,
} from "../stores/markers.ts";
import { bump, type Counters } from "./metrics.ts";
import {
  flushRoomOf,
  type Member,
  sendError,
  sendNotice,
  sendToOne,
} from "./delivery.ts";

/** What `read` and `rooms` from a person are refused with otherwise. */
export const NO_MARKERS = "read markers need a session or a login";

/** One of a person's rooms as counted here. */
interface Counted {
  marker: ReadMarker;
  /** The nick key of `marker.nick` (mentions, their own messages). */
  key: string;
  unread: number;
  mentions: number;
  /** The counts include the room's events up to this id. */
  through: number;
  /** Events that came while the store counted (undefined: it is not). */
  waiting?: RoomEvent[];
  /** The latest count asked: an earlier one's answer is dropped. */
  asked: number;
}

/** A person with connections here. */
interface Person {
  owner: string;
  connections: Set<Member>;
  /** Their rooms, by name. */
  rooms: Map<string, Counted>;
  /** Their markers read and counted (resolves, failed or not). */
  loaded: Promise<void>;
  /** Markers moved while theirs were being read, taken once they are. */
  early?: ReadMarker[];
}

/**
 * Most of a watched room's latest events kept here, so that a marker moved
 * among them is counted without asking the store (a round trip with Redis).
 * @default {256}
 */
export const RECENT_EVENTS_KEPT = 256;

/** A room watched for the people here who have it in their list. */
interface Watch {
  people: Set<Person>;
  unsubscribe: () => void;
  /**
   * The room's latest events as they came, ids without a gap (a gap, an
   * edit, a deletion or a new epoch starts it again): those a marker moved
   * past its oldest is counted over.
   */
  recent: RoomEvent[];
}

/** This process's people, their rooms and what is unread there. */
export class ReadState {
  #store: RoomStore;
  #log: Log;
  #people = new Map<string, Person>();
  #watches = new Map<string, Watch>();
  /** People whose counts changed this turn, and in which rooms. */
  #changed = new Map<Person, Set<string>>();
  #flush?: ReturnType<typeof setImmediate>;

  #counters: Counters;

  constructor(store: RoomStore, log: Log, counters: Counters) {
    this.#store = store;
    this.#log = log;
    this.#counters = counters;
  }

  /**
   * A connection arrives: a person's (with a session or a login) is one of
   * theirs from now on; their markers are read and counted with their
   * first. Resolves once they are (the welcome names them).
   */
  attach(client: Member): Promise<void> {
    if (!client.session) return Promise.resolve();
    let person = this.#people.get(client.owner);
    if (!person) {
      const made: Person = {
        owner: client.owner,
        connections: new Set(),
        rooms: new Map(),
        loaded: Promise.resolve(),
        early: [],
      };
      made.loaded = this.#load(made);
      this.#people.set(client.owner, made);
      person = made;
    }
    person.connections.add(client);
    return person.loaded;
  }

  /** A connection is gone: with a person's last, they are forgotten here. */
  detach(client: Member): void {
    const person = this.#people.get(client.owner);
    if (!person || !person.connections.delete(client)) return;
    if (person.connections.size > 0) return;
    this.#people.delete(person.owner);
    this.#changed.delete(person);
    for (const room of person.rooms.keys()) this.#unwatch(room, person);
  }

  /**
   * What a person's welcome to `room` (of `epoch`) says: their marker
   * there (0: none; one of another epoch is void, and forgotten here) and
   * their rooms. Undefined for a connection that is no person.
   */
  welcome(
    client: Member,
    room: string,
    epoch: string,
  ): { read: number; rooms: RoomCounts[] } | undefined {
    const person = client.session ? this.#people.get(client.owner) : undefined;
    if (!person) return undefined;
    const here = person.rooms.get(room);
    if (here && here.marker.epoch !== epoch) {
      this.#drop(person, room);
      this.#sendList(person, client); // the others learn it; this one below
      return { read: 0, rooms: this.#list(person) };
    }
    return { read: here?.marker.id ?? 0, rooms: this.#list(person) };
  }

  /**
   * `read`: the sender's person marks its room read up to `id`. Refused for
   * a connection that is no person and past the room's last id; an id at
   * or below the marker changes nothing. The notice comes through
   * {@linkcode onRead}, as on every process.
   */
  async mark(
    client: Member & { phase: string },
    id: number,
  ): Promise<void> {
    if (!client.session) return sendError(client, "bad_request", NO_MARKERS);
    const room = client.room;
    const marked = await this.#store.markRead(
      room.name,
      client.owner,
      id,
      client.nick,
    );
    if (marked !== "past_newest" || client.phase === "gone") return;
    sendError(client, "bad_request", `no event ${id} in ${room.name} yet`);
  }

  /** `rooms`: the sender's person's rooms with their counts. */
  rooms(client: Member): void {
    if (!client.session) return sendError(client, "bad_request", NO_MARKERS);
    const person = this.#people.get(client.owner);
    const rooms = person ? this.#list(person) : [];
    if (!client.json) return sendNotice(client, roomsText(rooms));
    const answer: RoomsAnswer = { type: "rooms", rooms };
    sendToOne(client, JSON.stringify(answer));
  }

  /**
   * A person's marker moved, on this process or another (the store's
   * `onRead`): if they have connections here, the room is counted again
   * and each of them gets the `read` notice (and the list, when the room
   * is new to it).
   */
  onRead(owner: string, marker: ReadMarker): void {
    const person = this.#people.get(owner);
    if (!person) return;
    if (person.early) return void person.early.push(marker);
    this.#moved(person, marker);
  }

  /** Lets go of every room watched (at shutdown). */
  close(): void {
    if (this.#flush) clearImmediate(this.#flush);
    this.#flush = undefined;
    for (const watch of this.#watches.values()) watch.unsubscribe();
    this.#watches.clear();
    this.#people.clear();
    this.#changed.clear();
  }

  /** Reads a person's markers and counts each room. */
  async #load(person: Person): Promise<void> {
    let markers: ReadMarker[] = [];
    try {
      markers = await this.#store.markers(person.owner);
    } catch (error) {
      this.#log("warn", "markers_failed", { error: String(error) });
    }
    if (this.#people.get(person.owner) !== person) return; // gone meanwhile
    const counted = markers.map((marker) => this.#add(person, marker));
    await Promise.all(counted.map((room) => this.#count(person, room)));
    const early = person.early ?? [];
    person.early = undefined;
    for (const marker of early) this.#moved(person, marker);
  }

  /** A marker moved: counted again, then every connection told. */
  #moved(person: Person, marker: ReadMarker): void {
    let counted = person.rooms.get(marker.room);
    if (
      counted?.marker.epoch === marker.epoch && counted.marker.id >= marker.id
    ) {
      return; // known here already (read with the person's markers)
    }
    const added = !counted;
    const epochKept = counted?.marker.epoch === marker.epoch;
    if (counted) {
      counted.marker = marker;
      counted.key = keyOf(marker.nick);
    } else {
      counted = this.#add(person, marker);
      const markers = [...person.rooms.values()].map((room) => room.marker);
      for (const old of forgotten(markers)) this.#drop(person, old.room);
    }
    const room = counted;
    const tell = () => {
      const notice: ReadNotice = {
        type: "read",
        room: marker.room,
        read: room.marker.id,
        unread: room.unread,
        mentions: room.mentions,
      };
      this.#send(person, JSON.stringify(notice));
      if (added) this.#sendList(person);
    };
    if (!added && epochKept && this.#countHere(room)) {
      bump(this.#counters.unreadCounts, "here");
      return tell();
    }
    this.#count(person, room).then((latest) => {
      if (latest) tell();
    });
  }

  /**
   * Counts a moved marker over the room's recent events here, when they
   * hold every event after it that the counts include: true if it did.
   */
  #countHere(counted: Counted): boolean {
    if (counted.waiting) return false; // the store is counting
    const { id } = counted.marker;
    if (id >= counted.through) {
      // All it counted is read; what comes after the marker is taken live.
      counted.unread = counted.mentions = 0;
      counted.through = id;
      return true;
    }
    const recent = this.#watches.get(counted.marker.room)?.recent ?? [];
    const first = recent[0]?.id ?? Infinity;
    if (first > id + 1 || recent.at(-1)!.id < counted.through) return false;
    const counts = { unread: 0, mentions: 0 };
    for (let i = id + 1 - first; recent[i]?.id <= counted.through; i++) {
      addCounted(counts, countFor(factsOf(recent[i]), counted.key));
    }
    counted.unread = counts.unread;
    counted.mentions = counts.mentions;
    return true;
  }

  /** A room in a person's list from now on, watched (counted by the caller). */
  #add(person: Person, marker: ReadMarker): Counted {
    const counted: Counted = {
      marker,
      key: keyOf(marker.nick),
      unread: 0,
      mentions: 0,
      through: 0,
      asked: 0,
    };
    person.rooms.set(marker.room, counted);
    let watch = this.#watches.get(marker.room);
    if (!watch) {
      const made: Watch = {
        people: new Set(),
        unsubscribe: () => {},
        recent: [],
      };
      this.#watches.set(marker.room, made);
      made.unsubscribe = this.#store.subscribe(
        marker.room,
        (event) => this.#onEvent(made, marker.room, event),
      );
      watch = made;
    }
    watch.people.add(person);
    return counted;
  }

  /** A room out of a person's list. */
  #drop(person: Person, room: string): void {
    if (!person.rooms.delete(room)) return;
    this.#changed.get(person)?.delete(room);
    this.#unwatch(room, person);
  }

  #unwatch(room: string, person: Person): void {
    const watch = this.#watches.get(room);
    if (!watch) return;
    watch.people.delete(person);
    if (watch.people.size > 0) return;
    this.#watches.delete(room);
    watch.unsubscribe();
  }

  /**
   * The store counts what the marker leaves unread; events that come
   * meanwhile wait, and those after what it counted are added then. True
   * when this was the latest count asked and it was taken (a void marker's
   * room leaves the list: the person's connections get the list).
   */
  async #count(person: Person, counted: Counted): Promise<boolean> {
    const asked = ++counted.asked;
    counted.waiting ??= [];
    bump(this.#counters.unreadCounts, "store");
    let counts;
    try {
      counts = await this.#store.unread(counted.marker);
    } catch (error) {
      this.#log("warn", "unread_failed", { error: String(error) });
      counts = null; // the counts as they were, and what came meanwhile
    }
    const room = counted.marker.room;
    if (person.rooms.get(room) !== counted || asked !== counted.asked) {
      return false;
    }
    const waiting = counted.waiting ?? [];
    counted.waiting = undefined;
    if (counts === undefined) {
      this.#drop(person, room);
      if (!person.early) this.#sendList(person);
      return false;
    }
    if (counts) {
      counted.unread = counts.unread;
      counted.mentions = counts.mentions;
      counted.through = counts.through;
    }
    for (const event of waiting) this.#take(person, counted, event);
    return true;
  }

  /** An event of a watched room, for everyone here who has it in their list. */
  #onEvent(watch: Watch, room: string, event: LiveEvent): void {
    if (event.type === "typing" || event.type === "react") return;
    keepRecent(watch.recent, event);
    const facts = factsOf(event); // once, for everyone watching
    for (const person of watch.people) {
      const counted = person.rooms.get(room);
      if (counted) this.#take(person, counted, event, facts);
    }
  }

  /** What one event of the room does to a person's counts there. */
  #take(
    person: Person,
    counted: Counted,
    event: RoomEvent,
    facts = factsOf(event),
  ): void {
    if (counted.waiting) return void counted.waiting.push(event);
    if (event.id <= counted.through) {
      // The room started over (a new epoch): the store says the marker is void.
      if (event.id === 1) this.#recount(person, counted);
      return;
    }
    counted.through = event.id;
    const { id } = counted.marker;
    if (
      (event.type === "delete" && event.deleted > id) ||
      (event.type === "edit" && event.target > id)
    ) {
      // It may have been counted, or be a mention no more (or now).
      return this.#recount(person, counted);
    }
    const before = counted.unread + counted.mentions;
    addCounted(counted, countFor(facts, counted.key));
    if (counted.unread + counted.mentions !== before) {
      this.#changedIn(person, counted.marker.room);
    }
  }

  /** Counted again by the store, then told as an `unread` notice. */
  #recount(person: Person, counted: Counted): void {
    this.#count(person, counted).then((latest) => {
      if (latest) this.#changedIn(person, counted.marker.room);
    });
  }

  /** The person's connections get the room's counts at the end of the turn. */
  #changedIn(person: Person, room: string): void {
    let rooms = this.#changed.get(person);
    if (!rooms) this.#changed.set(person, rooms = new Set());
    rooms.add(room);
    this.#flush ??= setImmediate(() => this.#sendChanged());
  }

  /** Each changed person's `unread` notices: one frame per connection. */
  #sendChanged(): void {
    this.#flush = undefined;
    const changed = this.#changed;
    this.#changed = new Map();
    for (const [person, rooms] of changed) {
      const notices: UnreadNotice[] = [];
      for (const room of rooms) {
        const counted = person.rooms.get(room);
        if (!counted) continue;
        notices.push({
          type: "unread",
          room,
          unread: counted.unread,
          mentions: counted.mentions,
        });
      }
      if (notices.length === 0) continue;
      this.#send(
        person,
        JSON.stringify(notices.length === 1 ? notices[0] : notices),
      );
    }
  }

  /** A person's rooms with their counts, the most recently marked first. */
  #list(person: Person): RoomCounts[] {
    const byMarker = new Map(
      [...person.rooms.values()].map((counted) => [counted.marker, counted]),
    );
    return newestFirst([...byMarker.keys()]).map((marker) => {
      const counted = byMarker.get(marker)!;
      return {
        room: marker.room,
        read: marker.id,
        unread: counted.unread,
        mentions: counted.mentions,
      };
    });
  }

  /** The person's rooms to each of their connections (but `except`). */
  #sendList(person: Person, except?: Member): void {
    const answer: RoomsAnswer = { type: "rooms", rooms: this.#list(person) };
    this.#send(person, JSON.stringify(answer), except);
  }

  /**
   * A frame to each of a person's JSON connections that has its welcome
   * (one still joining gets what is now in its welcome), after the events
   * its room has batched for this turn.
   */
  #send(person: Person, frame: string, except?: Member): void {
    for (const client of person.connections) {
      if (
        client === except || !client.json ||
        !client.room.jsonSockets.has(client.socket)
      ) {
        continue;
      }
      flushRoomOf(client);
      sendToOne(client, frame);
    }
  }
}

/**
 * A watched room's event joins its recent ones: after a gap (missed
 * events), an edit or a deletion (earlier events changed) or in a new
 * epoch (ids start again), they start again from it.
 */
function keepRecent(recent: RoomEvent[], event: RoomEvent): void {
  const last = recent.at(-1);
  if (
    last && (event.id !== last.id + 1 || event.type === "edit" ||
      event.type === "delete")
  ) {
    recent.length = 0;
  }
  recent.push(event);
  // Dropped in halves: one copy per RECENT_EVENTS_KEPT / 2 events.
  if (recent.length > RECENT_EVENTS_KEPT) {
    recent.splice(0, RECENT_EVENTS_KEPT / 2);
  }
}
