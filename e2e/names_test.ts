/// <reference lib="dom" />
/**
 * Browser tests of names on the page (issue 17, points 5, 7 and 9): the
 * first-visit dialog and a name the server refuses, what is "mine" when a
 * name had an earlier holder, long names, the phone's online list and the
 * nick colours.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  chooseName,
  logLines,
  myNick,
  say,
  waitForLine,
  waitForUsers,
} from "./browser.ts";
import { axeViolations, browserTest } from "./harness.ts";

const PHONE = { width: 375, height: 667 };

/** Waits until the name dialog has closed or shows a reason; returns which. */
async function dialogOutcome(page: Page): Promise<string> {
  const handle = await page.waitForFunction(() => {
    const dialog = document.getElementById("name-dialog") as HTMLDialogElement;
    const reason = document.getElementById("name-error")?.textContent ?? "";
    return !dialog.open ? "closed" : reason !== "" && reason;
  }, { polling: "mutation" });
  const outcome = String(await handle.jsonValue());
  await handle.dispose();
  return outcome;
}

browserTest(
  "first visit: a name taken here keeps the dialog open with the reason; the next one is granted",
  async ({ url, open, visitor }) => {
    const ada = await visitor("ada");
    // The harness answers the dialog with "ADA" and waits until connected:
    // the server lets the tab in under a random name meanwhile.
    const { page } = await open(url(), undefined, { nick: "ADA" });
    assert.equal(
      await dialogOutcome(page),
      '"ADA" is taken in #lobby: choose another name.',
    );
    assert.deepEqual(
      await page.evaluate(() => ({
        value: (document.getElementById("name-input") as HTMLInputElement)
          .value,
        focus: document.activeElement?.id,
        kept: localStorage.getItem("deno-chat.nick"),
      })),
      { value: "ADA", focus: "name-input", kept: null },
    );
    // The refusal is said in the dialog, not as a red line behind it.
    assert.deepEqual(
      (await logLines(page)).filter((line) => /\berror\b/.test(line.className)),
      [],
    );
    assert.deepEqual(await axeViolations(page), []);

    // A name that is free: granted (as a rename of the random one).
    const random = await myNick(page);
    await chooseName(page, "ada_2");
    assert.equal(await dialogOutcome(page), "closed");
    await waitForUsers(page, ["ada", "ada_2"]);
    assert.equal(await myNick(page), "ada_2");
    assert.equal(
      await page.evaluate(() => localStorage.getItem("deno-chat.nick")),
      "ada_2",
    );
    // Focus moves in the dialog's `close` event, a task queued after `open`
    // turns false: waited for, not read at once.
    await page.waitForFunction(
      () => document.activeElement?.id === "input",
      { timeout: 5_000 },
    );
    await ada.nextMatching(
      new RegExp(`^ \\.\\.\\.\\. ${random} is now known as ada_2\\.$`),
    );

    // The next visit asks nothing: the granted name is kept.
    await page.reload();
    await page.waitForSelector('#state[data-state="connected"]');
    assert.equal(
      await page.$eval(
        "#name-dialog",
        (el) => (el as HTMLDialogElement).open,
      ),
      false,
    );
    assert.equal(await myNick(page), "ada_2");
  },
);

/** The log's lines: text (no time), whether mine or a mention, the marks. */
function marked(page: Page) {
  return page.$$eval("#lines li", (items) =>
    items.map((li) => ({
      text: [...li.childNodes].filter((node) => node.nodeName !== "TIME")
        .map((node) => node.textContent).join(""),
      mine: li.classList.contains("mine"),
      mention: li.classList.contains("mention"),
      marks: [...li.querySelectorAll("mark")].map((m) => m.textContent),
    })));
}

browserTest(
  "mine: my own nick is not marked as a mention in my own messages",
  async ({ url, open, visitor }) => {
    const bob = await visitor("bob");
    const { page } = await open(url(), undefined, { nick: "ada" });
    await say(page, "ada here: call me ada");
    await waitForLine(page, "ada: ada here: call me ada");
    await say(page, "/me is ada");
    await waitForLine(page, "* ada is ada");
    bob.send("hi ada");
    await waitForLine(page, "bob: hi ada");
    const lines = (await marked(page)).filter((line) =>
      !line.text.endsWith("joined.")
    );
    assert.deepEqual(lines, [
      {
        text: "ada: ada here: call me ada",
        mine: true,
        mention: false,
        marks: [],
      },
      { text: "* ada is ada", mine: true, mention: false, marks: [] },
      { text: "bob: hi ada", mine: false, mention: true, marks: ["ada"] },
    ]);
  },
);

browserTest(
  "mine: an earlier holder of my name is somebody else: their lines are not mine, their rename is not mine",
  async ({ url, open, visitor }) => {
    await visitor("bob"); // keeps the room (and its history) alive
    // Two earlier holders of "ada": one says something and leaves, the
    // next says something and renames herself away.
    const first = await visitor("ada");
    first.send("the first holder speaking");
    await first.nextMatching(/^ada: the first holder speaking$/);
    await first.close();
    const second = await visitor("ada");
    second.send("the second holder speaking");
    second.send("/nick zed");
    await second.nextMatching(/is now known as zed\.$/);

    const { page } = await open(url(), undefined, { nick: "ada" });
    await say(page, "the new holder speaking");
    await waitForLine(page, "ada: the new holder speaking");
    const lines = await marked(page);
    const line = (text: string) => lines.find((l) => l.text === text);
    assert.deepEqual(
      [
        "ada: the first holder speaking",
        "ada: the second holder speaking",
        "ada: the new holder speaking",
      ].map((text) => [text, line(text)?.mine]),
      [
        ["ada: the first holder speaking", false],
        ["ada: the second holder speaking", false],
        ["ada: the new holder speaking", true],
      ],
    );
    // The rename in the history was the earlier holder's: I am still ada.
    assert.ok(line("ada is now known as zed."), JSON.stringify(lines));
    await waitForUsers(page, ["ada", "bob", "zed"]);
    assert.equal(await myNick(page), "ada");
    assert.equal(
      await page.evaluate(() => localStorage.getItem("deno-chat.nick")),
      "ada",
    );
  },
);

browserTest(
  "long names: shown whole in the online list and the log at 1280 px, the colon right after the name",
  async ({ url, open, visitor }) => {
    const names = ["kwame-mensah-asante", "kwame-mensah-asante36"];
    const people = [];
    for (const nick of names) people.push(await visitor(nick));
    const { page } = await open(url(), async (page) => {
      await page.setViewport({ width: 1280, height: 800 });
    }, { nick: "ada" });
    await waitForUsers(page, ["ada", ...names]);
    for (const [i, peer] of people.entries()) {
      peer.send("msg");
      await waitForLine(page, `${names[i]}: msg`);
    }
    const shown = await page.evaluate(() => {
      // Is the text shown whole, on one line (not cut, not wrapped)?
      const isWhole = (el: Element) => {
        const range = document.createRange();
        range.selectNodeContents(el);
        const text = range.getBoundingClientRect();
        const box = el.getBoundingClientRect();
        return range.getClientRects().length === 1 &&
          text.width <= box.width + 0.5;
      };
      const nicks = (selector: string) =>
        [...document.querySelectorAll(selector)].map((el) => [
          el.textContent,
          isWhole(el),
        ]);
      // The gap between a name's last letter and its colon.
      const gaps = [...document.querySelectorAll("#lines li.message")].map(
        (li) => {
          const range = document.createRange();
          range.selectNodeContents(li.querySelector(".nick")!);
          const sep = li.querySelector(".sep")!.getBoundingClientRect();
          return Math.round(sep.left - range.getBoundingClientRect().right);
        },
      );
      return {
        list: nicks("#users .nick"),
        log: nicks("#lines li.message .nick"),
        gaps,
      };
    });
    assert.deepEqual(shown, {
      list: [["ada", true], ...names.map((nick) => [nick, true])],
      log: names.map((nick) => [nick, true]),
      gaps: [0, 0],
    });
  },
);

browserTest(
  "phone: 52 online is one row that opens into a list, one name a line; choosing a name closes it",
  async ({ url, open, visitor }) => {
    const nicks: string[] = [];
    for (let i = 1; i <= 51; i++) {
      const nick = `person-${String(i).padStart(2, "0")}`;
      await visitor(nick);
      nicks.push(nick);
    }
    const { page } = await open(url(), async (page) => {
      await page.setViewport(PHONE);
    }, { nick: "ada" });
    await waitForUsers(page, ["ada", ...nicks]);

    // Closed: one row that does not scroll sideways.
    const row = await page.$eval("aside", (aside) => ({
      sideways: aside.scrollWidth > aside.clientWidth,
      height: Math.round(aside.getBoundingClientRect().height),
      listShown: document.getElementById("users")!.offsetParent !== null,
    }));
    assert.equal(row.sideways, false, "the row scrolls sideways");
    assert.equal(row.listShown, false);
    assert.ok(row.height < 48, `the row is ${row.height} px high`);
    assert.deepEqual(
      await page.$eval("#people", (el) => [
        el.querySelector("#people-count")!.textContent,
        el.getAttribute("aria-expanded"),
      ]),
      ["52 online", "false"],
    );

    // Open: every name on a line of its own, in a list that scrolls, and
    // the conversation still in view.
    await page.click("#people");
    const list = await page.$eval("#users", (ul) => {
      const items = [...ul.children].map((li) => li.getBoundingClientRect());
      return {
        expanded: document.getElementById("people")!.getAttribute(
          "aria-expanded",
        ),
        items: items.length,
        oneColumn: items.every((r) => r.left === items[0].left),
        ownLines: items.every((r, i) =>
          i === 0 || r.top >= items[i - 1].bottom
        ),
        inside: items.every((r) => r.right <= innerWidth),
        scrolls: ul.scrollHeight > ul.clientHeight,
        logHeight: document.getElementById("log")!.clientHeight,
      };
    });
    assert.deepEqual(
      { ...list, logHeight: list.logHeight > 150 },
      {
        expanded: "true",
        items: 52,
        oneColumn: true,
        ownLines: true,
        inside: true,
        scrolls: true,
        logHeight: true,
      },
    );
    for (const theme of ["light", "dark"]) {
      await page.emulateMediaFeatures([
        { name: "prefers-color-scheme", value: theme },
      ]);
      assert.deepEqual(await axeViolations(page), [], theme);
    }

    // A name starts a private message, and the list closes.
    await page.click("#users .who");
    assert.equal(
      await page.$eval("textarea#input", (el) => el.value),
      "/msg person-01 ",
    );
    assert.equal(
      await page.$eval("#people", (el) => el.getAttribute("aria-expanded")),
      "false",
    );
  },
  { connectBurst: 100 },
);

/** sRGB "rgb(r, g, b)" to CIE L*a*b* (D65). */
function lab(css: string): [number, number, number] {
  const [r, g, b] = css.match(/[\d.]+/g)!.slice(0, 3).map((v) => {
    const c = Number(v) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const f = (t: number) =>
    t > 216 / 24389 ? Math.cbrt(t) : (24389 / 27 * t + 16) / 116;
  const x = f((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047);
  const y = f(0.2126 * r + 0.7152 * g + 0.0722 * b);
  const z = f((0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883);
  return [116 * y - 16, 500 * (x - y), 200 * (y - z)];
}

/** CIEDE2000 colour difference (Sharma, Wu and Dalal's formulation). */
function deltaE2000(
  [l1, a1, b1]: number[],
  [l2, a2, b2]: number[],
): number {
  const rad = Math.PI / 180;
  const cBar = (Math.hypot(a1, b1) + Math.hypot(a2, b2)) / 2;
  const g = 0.5 * (1 - Math.sqrt(cBar ** 7 / (cBar ** 7 + 25 ** 7)));
  const [p1, p2] = [(1 + g) * a1, (1 + g) * a2];
  const [c1, c2] = [Math.hypot(p1, b1), Math.hypot(p2, b2)];
  const hue = (b: number, a: number) => (Math.atan2(b, a) / rad + 360) % 360;
  const [h1, h2] = [hue(b1, p1), hue(b2, p2)];
  let dh = c1 * c2 === 0 ? 0 : h2 - h1;
  if (dh > 180) dh -= 360;
  else if (dh < -180) dh += 360;
  const dH = 2 * Math.sqrt(c1 * c2) * Math.sin(dh * rad / 2);
  const lBar = (l1 + l2) / 2, cBarP = (c1 + c2) / 2;
  let hBar = h1 + h2;
  if (c1 * c2 !== 0) {
    if (Math.abs(h1 - h2) > 180) hBar += hBar < 360 ? 360 : -360;
    hBar /= 2;
  }
  const t = 1 - 0.17 * Math.cos((hBar - 30) * rad) +
    0.24 * Math.cos(2 * hBar * rad) + 0.32 * Math.cos((3 * hBar + 6) * rad) -
    0.2 * Math.cos((4 * hBar - 63) * rad);
  const dTheta = 30 * Math.exp(-(((hBar - 275) / 25) ** 2));
  const rc = 2 * Math.sqrt(cBarP ** 7 / (cBarP ** 7 + 25 ** 7));
  const sl = 1 + 0.015 * (lBar - 50) ** 2 / Math.sqrt(20 + (lBar - 50) ** 2);
  const sc = 1 + 0.045 * cBarP, sh = 1 + 0.015 * cBarP * t;
  const rt = -Math.sin(2 * dTheta * rad) * rc;
  const [dl, dc, dhs] = [(l2 - l1) / sl, (c2 - c1) / sc, dH / sh];
  return Math.sqrt(dl ** 2 + dc ** 2 + dhs ** 2 + rt * dc * dhs);
}

/** WCAG contrast ratio of two "rgb(…)" colours. */
function contrast(a: string, b: string): number {
  const luminance = (css: string) => {
    const [r, g, bl] = css.match(/[\d.]+/g)!.slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}

browserTest(
  "nick colours: every two clearly apart (CIEDE2000 ≥ 15), each ≥ 4.5:1 on every line background, light and dark",
  async ({ url, open }) => {
    const { page } = await open(url(), undefined, { nick: "ada" });
    for (const theme of ["light", "dark"]) {
      await page.emulateMediaFeatures([
        { name: "prefers-color-scheme", value: theme },
      ]);
      // Each colour class and each background a line can have, as the
      // browser computes them.
      const count = Number(await page.evaluate("COLORS"));
      const { colors, backgrounds } = await page.evaluate((count: number) => {
        const probe = document.createElement("span");
        document.body.append(probe);
        const computed = (prop: string, value: string) => {
          probe.style.setProperty(prop, value);
          return getComputedStyle(probe).getPropertyValue(prop);
        };
        const colors = [...Array(count).keys()].map((i) =>
          computed("color", `var(--c${i})`)
        );
        const backgrounds = ["--bg", "--panel", "--mine", "--mention", "--dm"]
          .map((name) => computed("background-color", `var(${name})`));
        probe.remove();
        return { colors, backgrounds };
      }, count);
      assert.ok(colors.length >= 6, `${colors.length} colours`);
      assert.equal(new Set(colors).size, colors.length, colors.join(" "));
      for (const [i, a] of colors.entries()) {
        for (const b of colors.slice(i + 1)) {
          const difference = deltaE2000(lab(a), lab(b));
          assert.ok(
            difference >= 15,
            `${theme}: ${a} and ${b} are alike (ΔE00 ${difference.toFixed(1)})`,
          );
        }
        for (const background of backgrounds) {
          const ratio = contrast(a, background);
          assert.ok(
            ratio >= 4.5,
            `${theme}: ${a} on ${background} is ${ratio.toFixed(2)}:1`,
          );
        }
      }
    }
  },
);
