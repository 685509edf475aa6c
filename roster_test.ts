import assert from "node:assert/strict";
import { Roster } from "./roster.ts";
import type { RoomEvent } from "./protocol.ts";

const join = (id: number, nick: string): RoomEvent => ({
  type: "join",
  id,
  ts: 0,
  nick,
});
const leave = (id: number, nick: string): RoomEvent => ({
  type: "leave",
  id,
  ts: 0,
  nick,
});
const rename = (id: number, from: string, to: string): RoomEvent => ({
  type: "nick",
  id,
  ts: 0,
  from,
  to,
});

Deno.test("roster: members in join order, a rename keeps its place", () => {
  const roster = new Roster(4, [
    { nick: "bob", order: 3 },
    { nick: "ann", order: 1 },
  ]);
  assert.deepEqual(roster.nicks(), ["ann", "bob"]);
  roster.apply(join(5, "cy"));
  roster.apply(rename(6, "ann", "anna"));
  roster.apply({ type: "message", id: 7, ts: 0, from: "cy", text: "hi" });
  roster.apply(leave(8, "bob"));
  roster.apply(join(3, "old")); // in the baseline already: ignored
  assert.deepEqual(roster.nicks(), ["anna", "cy"]);
  assert.equal(roster.id, 8);
});

Deno.test("roster: who was in the room just after an earlier event", () => {
  const roster = new Roster(2, [
    { nick: "ann", order: 1 },
    { nick: "bob", order: 2 },
  ]);
  roster.apply(join(3, "cy"));
  roster.apply(leave(4, "ann"));
  roster.apply(rename(5, "bob", "rob"));
  roster.apply(join(6, "dee"));
  assert.deepEqual(roster.at(6), ["rob", "cy", "dee"]);
  assert.deepEqual(roster.at(5), ["rob", "cy"]);
  assert.deepEqual(roster.at(4), ["bob", "cy"]);
  assert.deepEqual(roster.at(3), ["ann", "bob", "cy"], "ann back in place");
  assert.deepEqual(roster.at(2), ["ann", "bob"]);
  assert.equal(roster.at(1), undefined, "before the baseline");
  assert.equal(roster.at(7), undefined, "not there yet");
  roster.forgetBefore(4);
  assert.equal(roster.at(3), undefined, "forgotten");
  assert.deepEqual(roster.at(4), ["bob", "cy"]);
  roster.forgetBefore(100);
  assert.deepEqual(roster.at(6), ["rob", "cy", "dee"]);
  assert.equal(roster.at(5), undefined);
});

Deno.test("roster: someone renamed, then left, comes back under the old nick", () => {
  const roster = new Roster(2, [
    { nick: "ann", order: 1 },
    { nick: "bob", order: 2 },
  ]);
  roster.apply(rename(3, "bob", "rob"));
  roster.apply(join(4, "cy"));
  roster.apply(leave(5, "rob"));
  roster.apply(leave(6, "ann"));
  assert.deepEqual(roster.at(2), ["ann", "bob"]);
  assert.deepEqual(roster.at(4), ["ann", "rob", "cy"]);
  assert.deepEqual(roster.at(5), ["ann", "cy"]);
  assert.deepEqual(roster.nicks(), ["cy"]);
});
