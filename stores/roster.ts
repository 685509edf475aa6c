/**
 * A room's members as one process of a shared store sees them: kept from the
 * join, leave, kick and nick events it delivers anyway (and the store's
 * notices of members removed without an event), so that a join there reads
 * nothing that grows with the room (redis_store.ts). It can also say who was
 * in the room just after a recent event: a welcome lists the members as of
 * its `lastId`, while delivery here may already be further on.
 *
 * A leaf: it imports only the wire contract (protocol.ts). Members are held
 * by nick key, given by the store (rooms.ts `nickKey`), as the store holds
 * them: two members never share a key.
 *
 * @module
 */

import type { RoomEvent } from "../wire/protocol.ts";

/** A member as a baseline read gives it, and as `at` answers. */
export interface RosterMember {
  nick: string;
  /**
   * Where it goes in the list (members list in join order): the id of its
   * join event, or an earlier id it was given back (no later than any time
   * it was present).
   */
  order: number;
  /** Signed in by a login token (its join said so). */
  verified: boolean;
}

/** Who was in the room at an id, as a welcome lists them. */
export interface RosterAt {
  /** Every member's nick, in join order. */
  nicks: string[];
  /** Those signed in by a login token, in join order. */
  verified: string[];
}

/** One change, kept while a join in flight may need to see past it. */
interface Change {
  /**
   * The event's id; a removal without an event is placed half-way after the
   * event it followed (it happened after that event, before the next).
   */
  id: number;
  kind: "leave" | "nick";
  /** The member as it was just before the change. */
  member: RosterMember;
  /** A rename's old nick. */
  from?: string;
}

/** The members of one room as of event {@linkcode Roster.id}. */
export class Roster {
  /** Members by place in join order (a Map keeps insertion order). */
  #byOrder = new Map<number, RosterMember>();
  /** Places by nick key. */
  #byKey = new Map<string, number>();
  #key: (nick: string) => string;
  #id: number;
  /** Changes after `#since`, oldest first. */
  #log: Change[] = [];
  #since: number;

  /**
   * The members as of event `id` (a baseline read), held by `key` (the
   * store's nick key; by default the nick itself).
   */
  constructor(
    id: number,
    members: RosterMember[],
    key: (nick: string) => string = (nick) => nick,
  ) {
    this.#id = id;
    this.#since = id;
    this.#key = key;
    for (const member of [...members].sort((a, b) => a.order - b.order)) {
      this.#add({ ...member });
    }
  }

  /** The id of the last event taken into account. */
  get id(): number {
    return this.#id;
  }

  get size(): number {
    return this.#byOrder.size;
  }

  /** The nicks now, in join order. */
  nicks(): string[] {
    return [...this.#byOrder.values()].map((member) => member.nick);
  }

  /**
   * Takes the room's next event (the caller delivers in id order, and reads
   * a new baseline when it skipped some). Earlier ids are ignored.
   */
  apply(event: RoomEvent): void {
    if (event.id <= this.#id) return;
    this.#id = event.id;
    if (event.type === "join") {
      // A holder of the same key must be gone without this roster seeing
      // it (the store never has two): out just before this join.
      const stale = this.#byKey.get(this.#key(event.nick));
      if (stale !== undefined) this.#remove(stale, event.id - 0.5);
      const member = {
        nick: event.nick,
        order: event.id,
        verified: event.verified === true,
      };
      // Not logged: `at` leaves out members placed after its id anyway.
      this.#add(member);
    } else if (event.type === "leave" || event.type === "kick") {
      const order = this.#byKey.get(this.#key(event.nick));
      if (order !== undefined) this.#remove(order, event.id);
    } else if (event.type === "nick") {
      const order = this.#byKey.get(this.#key(event.from));
      if (order === undefined) return;
      const member = this.#byOrder.get(order)!;
      this.#log.push({ id: event.id, kind: "nick", member, from: event.from });
      const renamed = { ...member, nick: event.to }; // keeps its place
      this.#byKey.delete(this.#key(event.from));
      this.#byKey.set(this.#key(event.to), order);
      this.#byOrder.set(order, renamed);
    }
  }

  /**
   * The member holding `nick` went without an event, after event `after`
   * (the store's notice): a process's members at its shutdown. The caller gives it once the roster has taken
   * event `after` (in order with the events, as the store published it);
   * it is placed just after that event. Only a member that was in the room then (its
   * place no later than `after`) is removed: a later holder of the nick is
   * someone else.
   */
  gone(nick: string, after: number): void {
    const order = this.#byKey.get(this.#key(nick));
    if (order === undefined || order > after) return;
    this.#remove(order, after + 0.5);
  }

  /**
   * The members, in join order, just after event `id`; undefined when the
   * roster cannot tell (`id` is ahead of it, or older than what it kept).
   * Costs O(members) like the list it answers: one pass, no copy of the
   * roster (it runs for every join).
   */
  at(id: number): RosterAt | undefined {
    if (id > this.#id || id < this.#since) return undefined;
    // The changes after `id`, undone newest first. Members who joined after
    // it are the ones placed after it (a join's place is its id), so they
    // are left out by stopping there; no copy of the roster is made.
    const renamed = new Map<number, RosterMember>();
    const back: RosterMember[] = [];
    for (let i = this.#log.length - 1; i >= 0; i--) {
      const change = this.#log[i];
      if (change.id <= id) break;
      const member = change.member;
      if (member.order > id) continue;
      if (change.kind === "nick") renamed.set(member.order, member);
      else back.push(member); // its renames before the leave come next
    }
    back.sort((a, b) => a.order - b.order);
    const nicks: string[] = [];
    const verified: string[] = [];
    const add = (member: RosterMember) => {
      nicks.push(member.nick);
      if (member.verified) verified.push(member.nick);
    };
    let next = 0;
    for (const [order, member] of this.#byOrder) {
      if (order > id) break;
      while (next < back.length && back[next].order < order) {
        add(this.#then(back[next++], renamed));
      }
      add(renamed.size > 0 ? renamed.get(order) ?? member : member);
    }
    while (next < back.length) add(this.#then(back[next++], renamed));
    return { nicks, verified };
  }

  /** A member who left later, as it was just after the id. */
  #then(member: RosterMember, renamed: Map<number, RosterMember>) {
    return renamed.get(member.order) ?? member;
  }

  /** Forgets what only `at` for ids before `id` would need. */
  forgetBefore(id: number): void {
    if (id <= this.#since) return;
    this.#since = Math.min(id, this.#id);
    let keep = 0;
    while (keep < this.#log.length && this.#log[keep].id <= this.#since) keep++;
    if (keep > 0) this.#log.splice(0, keep);
  }

  #add(member: RosterMember): void {
    this.#byOrder.set(member.order, member);
    this.#byKey.set(this.#key(member.nick), member.order);
  }

  /**
   * The member at `order` is out, as of change `id`: logged in id order, if
   * `at` may need it (a removal before what is kept changes no answer).
   */
  #remove(order: number, id: number): void {
    const member = this.#byOrder.get(order)!;
    this.#byOrder.delete(order);
    this.#byKey.delete(this.#key(member.nick));
    if (id < this.#since) return;
    const change: Change = { id, kind: "leave", member };
    let i = this.#log.length;
    while (i > 0 && this.#log[i - 1].id > id) i--;
    this.#log.splice(i, 0, change);
  }
}
