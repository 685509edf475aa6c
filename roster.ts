/**
 * A room's members as one process of a shared store sees them: kept from the
 * join, leave and nick events it delivers anyway, so that a join there reads
 * nothing that grows with the room (redis_store.ts). It can also say who was
 * in the room just after a recent event: a welcome lists the members as of
 * its `lastId`, while delivery here may already be further on.
 *
 * A leaf: it imports only the wire contract (protocol.ts).
 *
 * @module
 */

import type { RoomEvent } from "./protocol.ts";

/** A member as a baseline read gives it. */
export interface RosterMember {
  nick: string;
  /** Where it goes in the list: the id of its join (members list in join order). */
  order: number;
}

/** One change, kept while a join in flight may need to see past it. */
interface Change {
  /** The event's id. */
  id: number;
  kind: "join" | "leave" | "nick";
  /** The member's place in join order. */
  order: number;
  /** Its nick after the event (join, nick) or before it (leave). */
  nick: string;
  /** A rename's old nick. */
  from?: string;
}

/** The members of one room as of event {@linkcode Roster.id}. */
export class Roster {
  /** Members by place in join order (a Map keeps insertion order). */
  #byOrder = new Map<number, string>();
  #byNick = new Map<string, number>();
  #id: number;
  /** Changes after `#since`, oldest first. */
  #log: Change[] = [];
  #since: number;

  /** The members as of event `id` (a baseline read). */
  constructor(id: number, members: RosterMember[]) {
    this.#id = id;
    this.#since = id;
    for (const member of [...members].sort((a, b) => a.order - b.order)) {
      this.#byOrder.set(member.order, member.nick);
      this.#byNick.set(member.nick, member.order);
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
    return [...this.#byOrder.values()];
  }

  /**
   * Takes the room's next event (the caller delivers in id order, and reads
   * a new baseline when it skipped some). Earlier ids are ignored.
   */
  apply(event: RoomEvent): void {
    if (event.id <= this.#id) return;
    this.#id = event.id;
    if (event.type === "join") {
      this.#byOrder.set(event.id, event.nick);
      this.#byNick.set(event.nick, event.id);
      this.#note(event.id, "join", event.id, event.nick);
    } else if (event.type === "leave") {
      const order = this.#byNick.get(event.nick);
      if (order === undefined) return;
      this.#byOrder.delete(order);
      this.#byNick.delete(event.nick);
      this.#note(event.id, "leave", order, event.nick);
    } else if (event.type === "nick") {
      const order = this.#byNick.get(event.from);
      if (order === undefined) return;
      this.#byNick.delete(event.from);
      this.#byNick.set(event.to, order);
      this.#byOrder.set(order, event.to); // keeps its place
      this.#note(event.id, "nick", order, event.to, event.from);
    }
  }

  /**
   * The nicks, in join order, just after event `id`; undefined when the
   * roster cannot tell (`id` is ahead of it, or older than what it kept).
   * Costs O(members) like the list it answers.
   */
  at(id: number): string[] | undefined {
    if (id === this.#id) return this.nicks();
    if (id > this.#id || id < this.#since) return undefined;
    // The changes after `id`, undone newest first. Members who joined after
    // it are the ones placed after it (a join's place is its id), so they
    // are left out by stopping there; no copy of the roster is made.
    const renamed = new Map<number, string>();
    const back: [number, string][] = [];
    for (let i = this.#log.length - 1; i >= 0; i--) {
      const change = this.#log[i];
      if (change.id <= id) break;
      if (change.order > id) continue;
      if (change.kind === "nick") renamed.set(change.order, change.from!);
      else if (change.kind === "leave") back.push([change.order, change.nick]);
    }
    back.sort((a, b) => a[0] - b[0]);
    const nicks: string[] = [];
    let next = 0;
    for (const [order, nick] of this.#byOrder) {
      if (order > id) break;
      while (next < back.length && back[next][0] < order) {
        nicks.push(this.#then(back[next++], renamed));
      }
      nicks.push(renamed.size > 0 ? renamed.get(order) ?? nick : nick);
    }
    while (next < back.length) nicks.push(this.#then(back[next++], renamed));
    return nicks;
  }

  /** A member who left later, under the nick it had then. */
  #then([order, nick]: [number, string], renamed: Map<number, string>) {
    return renamed.get(order) ?? nick;
  }

  /** Forgets what only `at` for ids before `id` would need. */
  forgetBefore(id: number): void {
    if (id <= this.#since) return;
    this.#since = Math.min(id, this.#id);
    let keep = 0;
    while (keep < this.#log.length && this.#log[keep].id <= this.#since) keep++;
    if (keep > 0) this.#log.splice(0, keep);
  }

  #note(
    id: number,
    kind: Change["kind"],
    order: number,
    nick: string,
    from?: string,
  ): void {
    this.#log.push({ id, kind, order, nick, from });
  }
}
