/**
 * Search, written once: the query language (words, "quoted phrases",
 * `prefix*`, `from:NICK`, `before:ID`), parsed once by
 * {@linkcode parseSearch}, and the one matching rule every store follows
 * ({@linkcode matchesQuery}): a text and a query are both cut into words by
 * {@linkcode searchWords}, which normalises as SQLite FTS5's
 * `unicode61 remove_diacritics 2` tokenizer does (NFKD, combining marks
 * removed, lower case; a word is a run of letters, digits and private-use
 * characters), so `cafe` finds `café` and `CAFÉ` in every store. The
 * `--data` file's index (stores/sqlite_store.ts) is built from these words
 * and queried with {@linkcode ftsMatch}, a MATCH expression made from the
 * parsed terms, each quoted: what a person types never reaches FTS5's own
 * syntax.
 *
 * A leaf: no imports (protocol.ts builds the `search` command on it).
 *
 * @module
 */

/** Longest search text (`q`), in characters. @default {200} */
export const MAX_SEARCH_CHARS = 200;
/** Most words in one search, phrases' words included. @default {10} */
export const MAX_SEARCH_WORDS = 10;
/**
 * Fewest letters before a `*`: a one-letter prefix would match much of a
 * room and cost as much to find. @default {2}
 */
export const MIN_PREFIX_CHARS = 2;
/** Results a search returns when it names no `limit`. @default {20} */
export const DEFAULT_SEARCH_LIMIT = 20;
/** Most results one search returns. @default {50} */
export const MAX_SEARCH_LIMIT = 50;

/** The query language in a line, for usage lines and refusals. */
export const SEARCH_RULE =
  `words (all must be in a message), "a phrase", a prefix* (at least ${MIN_PREFIX_CHARS} letters), from:NICK, before:ID; at most ${MAX_SEARCH_CHARS} characters and ${MAX_SEARCH_WORDS} words`;

/**
 * One term of a query: a word (`words` of one), or a phrase (its words in
 * a row); with `prefix`, its last word is a prefix of the text's word.
 */
export interface SearchTerm {
  words: string[];
  prefix: boolean;
}

/** A query as parsed: every term must match. */
export interface SearchQuery {
  terms: SearchTerm[];
  /** `from:NICK`, as typed (the caller checks it is a nick). */
  from?: string;
  /** `before:ID`: only events with ids below it. */
  before?: number;
}

/** Why a query is not one (said to the person as it is). */
export class QueryProblem {
  constructor(readonly message: string) {}
}

// deno-lint-ignore no-control-regex -- all of ASCII, controls included
const ASCII = /^[\x00-\x7f]*$/;
const COMBINING_MARKS = /\p{M}/gu;
/**
 * A word as search compares them: a run of letters, digits and private-use
 * characters (the page marks a result's matched words by it).
 */
export const SEARCH_WORD: RegExp = /[\p{L}\p{N}\p{Co}]+/gu;
const WORD = SEARCH_WORD;

/**
 * A text's words as search compares them: NFKD (so `ﬁ` is `fi` and `Ａ` is
 * `a`), combining marks removed (`é` is `e`), lower case (a final `ς` as
 * `σ`), cut at everything but letters, digits and private-use characters.
 */
export function searchWords(text: string): string[] {
  // Most text is ASCII: nothing to decompose or strip.
  const folded = ASCII.test(text)
    ? text.toLowerCase()
    : text.normalize("NFKD").replace(COMBINING_MARKS, "").toLowerCase()
      .replaceAll("ς", "σ");
  return folded.match(WORD) ?? [];
}

/** Does `words` (a text's {@linkcode searchWords}) hold the term? */
function hasTerm(words: string[], term: SearchTerm): boolean {
  const wanted = term.words;
  const last = wanted.length - 1;
  next: for (let i = 0; i + last < words.length; i++) {
    for (let j = 0; j <= last; j++) {
      const word = words[i + j];
      const match = j === last && term.prefix
        ? word.startsWith(wanted[j])
        : word === wanted[j];
      if (!match) continue next;
    }
    return true;
  }
  return false;
}

/**
 * The matching rule of every store: each of the query's terms is in the
 * text (a word as a whole word, a phrase as its words in a row, a prefix
 * as the start of a word). `from` and `before` are the caller's.
 */
export function matchesQuery(query: SearchQuery, text: string): boolean {
  const words = searchWords(text);
  return query.terms.every((term) => hasTerm(words, term));
}

/**
 * The FTS5 MATCH expression of a query over an index of
 * {@linkcode searchWords}: each term a quoted string (`"new york"`,
 * `"caf"*`), all of them required. Words hold only letters and digits; a
 * quote would be doubled all the same.
 *
 * A prefix longer than `prefixChars` is cut to it: the index keeps
 * prefixes up to that length, so the cut one is a single list read newest
 * first (a longer one would make FTS5 merge the lists of every word that
 * starts so, all of them, before the first result). What it finds is then
 * more than the query asks for, and the caller holds each to the rule
 * ({@linkcode matchesQuery}).
 */
export function ftsMatch(
  query: SearchQuery,
  prefixChars = Infinity,
): string {
  return query.terms.map((term) => {
    let words = term.words;
    if (term.prefix && [...words[words.length - 1]].length > prefixChars) {
      const last = [...words[words.length - 1]].slice(0, prefixChars).join("");
      words = [...words.slice(0, -1), last];
    }
    return `"${words.join(" ").replaceAll('"', '""')}"${
      term.prefix ? "*" : ""
    }`;
  }).join(" ");
}

/** What a search finds in an event: a message's, an action's or a DM's text. */
export function searchableText(
  event: { type: string; text?: unknown },
): string | undefined {
  return (event.type === "message" || event.type === "action" ||
      event.type === "dm") && typeof event.text === "string"
    ? event.text
    : undefined;
}

const STAR_PROBLEM =
  `* ends a word, after at least ${MIN_PREFIX_CHARS} letters (caf* finds cafe and café)`;

/**
 * A search text as a query, or the first thing wrong with it: too long,
 * unbalanced quotes, a `*` that does not end a word of at least
 * {@linkcode MIN_PREFIX_CHARS} letters, more than
 * {@linkcode MAX_SEARCH_WORDS} words, `from:` or `before:` twice or empty,
 * or no word at all. Punctuation between words is ignored (`don't` is the
 * phrase `don t`, as FTS5 reads it); FTS5's own operators (`OR`, `NEAR`,
 * `^`, `-`, parentheses) are words or punctuation here, nothing more.
 */
export function parseSearch(q: string): SearchQuery | QueryProblem {
  if (q.length > MAX_SEARCH_CHARS && [...q].length > MAX_SEARCH_CHARS) {
    return new QueryProblem(
      `a search is at most ${MAX_SEARCH_CHARS} characters`,
    );
  }
  const query: SearchQuery = { terms: [] };
  let words = 0;
  /** Adds a term from a piece of text; a problem, or undefined. */
  const add = (text: string, prefix: boolean): QueryProblem | undefined => {
    const found = searchWords(text);
    if (found.length === 0) {
      // Punctuation alone (or `""`) is nothing; a star on nothing is a mistake.
      return prefix ? new QueryProblem(STAR_PROBLEM) : undefined;
    }
    if (prefix && [...found[found.length - 1]].length < MIN_PREFIX_CHARS) {
      return new QueryProblem(STAR_PROBLEM);
    }
    words += found.length;
    if (words > MAX_SEARCH_WORDS) {
      return new QueryProblem(
        `a search has at most ${MAX_SEARCH_WORDS} words`,
      );
    }
    query.terms.push({ words: found, prefix });
  };
  let i = 0;
  while (i < q.length) {
    if (/\s/.test(q[i])) {
      i++;
      continue;
    }
    let problem: QueryProblem | undefined;
    if (q[i] === '"') {
      const end = q.indexOf('"', i + 1);
      if (end < 0) {
        return new QueryProblem(
          'unbalanced quotes: a "phrase" needs its closing quote',
        );
      }
      const phrase = q.slice(i + 1, end);
      i = end + 1;
      const prefix = q[i] === "*";
      if (prefix) i++;
      if (q[i] === "*") return new QueryProblem(STAR_PROBLEM);
      problem = add(phrase, prefix);
    } else {
      let end = i;
      while (end < q.length && !/\s/.test(q[end]) && q[end] !== '"') end++;
      const chunk = q.slice(i, end);
      i = end;
      const filter = /^(from|before):(.*)$/is.exec(chunk);
      if (filter) {
        problem = addFilter(query, filter[1].toLowerCase(), filter[2]);
      } else {
        const star = chunk.indexOf("*");
        if (star >= 0 && star !== chunk.length - 1) {
          return new QueryProblem(STAR_PROBLEM);
        }
        problem = add(star >= 0 ? chunk.slice(0, -1) : chunk, star >= 0);
      }
    }
    if (problem) return problem;
  }
  if (query.terms.length === 0) {
    return new QueryProblem(
      "nothing to search for: give at least one word (letters or digits)",
    );
  }
  return query;
}

/** `from:NICK` or `before:ID` into the query; a problem, or undefined. */
function addFilter(
  query: SearchQuery,
  name: string,
  value: string,
): QueryProblem | undefined {
  if (name === "from") {
    if (query.from !== undefined) return new QueryProblem("from: given twice");
    if (value === "") return new QueryProblem("from: takes a nick (from:ada)");
    query.from = value;
    return;
  }
  if (query.before !== undefined) {
    return new QueryProblem("before: given twice");
  }
  if (!/^\d{1,15}$/.test(value)) {
    return new QueryProblem("before: takes a message id (before:120)");
  }
  query.before = Number(value);
}
