/**
 * Verified identity: login tokens (JWTs) from the app's own backend,
 * checked with `jose`, and where a handshake carries one; and the session
 * a handshake names. A side module: main.ts makes one {@linkcode Verifier}
 * at start-up and asks it about each upgrade; nothing here keeps process
 * state or imports main.ts.
 *
 * A token is signed with a shared secret (HS256, `--auth-secret`) or with
 * the app's private key, checked against its public key (`--auth-public-key`:
 * RS256, ES256 or EdDSA, told by the key). It must have `sub` (the user id)
 * and `exp`; `nbf`, `aud` and `iss` are checked when present or configured.
 * `name` is the nick to use, `roles` may hold `op` (a moderator everywhere).
 *
 * @module
 */

import { createHash, createPublicKey } from "node:crypto";
import { errors, importSPKI, jwtVerify, type JWTVerifyOptions } from "jose";
import {
  AUTH_PROTOCOL_PREFIX,
  OP_PROTOCOL_PREFIX,
  SESSION_PROTOCOL_PREFIX,
  SESSION_SECRET,
  validNick,
} from "../wire/protocol.ts";
import { sameSecret } from "../stores/rooms.ts";

/** Who a valid token says the connection is. */
export interface Identity {
  /** The user id (`sub`), as the app names it. */
  sub: string;
  /** The nick: the token's `name` if it is a valid one, else `sub` if it is. */
  name?: string;
  /** `roles` holds `op`: a moderator in every room. */
  op: boolean;
}

/** Why a token was refused, as the log's `reason` (never the token). */
export type TokenProblem =
  | "too_long"
  | "malformed"
  | "bad_signature"
  | "bad_algorithm"
  | "expired"
  | "not_yet_valid"
  | "bad_audience"
  | "bad_issuer"
  | "missing_claim";

/** What checks a token: a key and the claims it must have. */
export interface AuthSettings {
  /** HS256 secret (`--auth-secret`). */
  secret?: string;
  /** PEM public key (`--auth-public-key`); RS256, ES256 or EdDSA. */
  publicKey?: string;
  /** Expected `aud`, when set. */
  audience?: string;
  /** Expected `iss`, when set. */
  issuer?: string;
}

/**
 * Longest token read, in characters: a JWT with a handful of claims is a few
 * hundred; anything this long is refused before it is decoded or verified
 * (a 100 KB header costs nothing more than a look at its length).
 */
export const MAX_TOKEN_CHARS = 4096;

/** Seconds of clock difference allowed on `exp` and `nbf`. */
export const CLOCK_TOLERANCE_SECONDS = 5;

/** The role that makes a user a moderator in every room. */
export const OP_ROLE = "op";

/** Checks tokens against one key; made once by {@linkcode makeVerifier}. */
export type Verifier = (token: string) => Promise<Identity | TokenProblem>;

/**
 * The verifier for these settings, or undefined when no key is set (auth
 * is off). Throws when the public key is not a PEM key of a kind we take.
 */
export async function makeVerifier(
  settings: AuthSettings,
): Promise<Verifier | undefined> {
  let key: Uint8Array | CryptoKey;
  let algorithm: string;
  if (settings.publicKey) {
    algorithm = algorithmOf(settings.publicKey);
    key = await importSPKI(settings.publicKey, algorithm);
  } else if (settings.secret) {
    algorithm = "HS256";
    key = new TextEncoder().encode(settings.secret);
  } else return undefined;
  const options: JWTVerifyOptions = {
    algorithms: [algorithm],
    requiredClaims: ["exp", "sub"],
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    ...(settings.audience ? { audience: settings.audience } : {}),
    ...(settings.issuer ? { issuer: settings.issuer } : {}),
  };
  return async (token) => {
    if (token.length > MAX_TOKEN_CHARS) return "too_long";
    try {
      const { payload } = await jwtVerify(token, key, options);
      if (typeof payload.sub !== "string" || payload.sub === "") {
        return "missing_claim";
      }
      return identityOf(payload.sub, payload.name, payload.roles);
    } catch (error) {
      return problemOf(error);
    }
  };
}

/**
 * The algorithm a public key is for, from its type: RSA keys sign RS256,
 * P-256 keys ES256, Ed25519 keys EdDSA. Others are refused at start-up.
 */
export function algorithmOf(pem: string): string {
  const key = createPublicKey(pem);
  const type = key.asymmetricKeyType;
  if (type === "rsa") return "RS256";
  if (type === "ed25519") return "EdDSA";
  if (type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") {
    return "ES256";
  }
  throw new Error(
    `--auth-public-key: an RSA, P-256 or Ed25519 public key is needed, got ${type}`,
  );
}

function identityOf(sub: string, name: unknown, roles: unknown): Identity {
  const wanted = typeof name === "string" ? name.normalize("NFC") : undefined;
  const nick = wanted !== undefined && validNick(wanted)
    ? wanted
    : validNick(sub)
    ? sub
    : undefined;
  return {
    sub,
    name: nick,
    op: Array.isArray(roles) && roles.includes(OP_ROLE),
  };
}

/** jose's error as our reason: what an operator needs, nothing of the token. */
function problemOf(error: unknown): TokenProblem {
  if (error instanceof errors.JWTExpired) return "expired";
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "bad_signature";
  }
  if (error instanceof errors.JOSEAlgNotAllowed) return "bad_algorithm";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") return "not_yet_valid";
    if (error.claim === "aud") return "bad_audience";
    if (error.claim === "iss") return "bad_issuer";
    return "missing_claim";
  }
  return "malformed";
}

/**
 * The token a handshake carries: a `chat.auth.TOKEN` subprotocol (browsers)
 * or `Authorization: Bearer TOKEN` (others). Undefined when there is none.
 */
export function tokenOf(
  offered: readonly string[],
  authorization: string | null,
): string | undefined {
  const protocol = offered.find((name) =>
    name.startsWith(AUTH_PROTOCOL_PREFIX)
  );
  if (protocol !== undefined) {
    return protocol.slice(AUTH_PROTOCOL_PREFIX.length);
  }
  const bearer = authorization?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i);
  return bearer?.[1];
}

/**
 * The store's name for a verified person: one member however many
 * connections, on every process. Hashed so that any `sub` makes a safe key.
 */
export function ownerOf(identity: Identity): string {
  return ownerOfUser(identity.sub);
}

/** The owner of a verified user id (a token's `sub`), as the store knows it. */
export function ownerOfUser(sub: string): string {
  return "u." + createHash("sha256").update(sub).digest("base64url");
}

/**
 * The person a client says it is without a login: its session secret comes
 * as a second subprotocol (`chat.session.SECRET`, never echoed, so it is in
 * no URL or log). The secret itself is kept nowhere: the owner is named by
 * its SHA-256, so a lookup by it tells nothing about the secret (no
 * comparison of secrets is made, timed or not).
 */
export function sessionOf(protocols: readonly string[]): string | undefined {
  const offered = protocols.find((name) =>
    name.startsWith(SESSION_PROTOCOL_PREFIX)
  );
  const secret = offered?.slice(SESSION_PROTOCOL_PREFIX.length);
  if (!secret || !SESSION_SECRET.test(secret)) return undefined;
  return "s." + createHash("sha256").update(secret).digest("base64url");
}

/** Who an upgrade says it is, once its token and op key are checked. */
export interface Claimed {
  /** Who a valid login token says it is. */
  identity?: Identity;
  /** It showed the `--op-key`. */
  op: boolean;
  /** Its session (see {@linkcode sessionOf}). */
  session?: string;
}

/** Why an upgrade is `unauthorized`, as the log's `problem`. */
export type DoorProblem = TokenProblem | "no_token" | "bad_op_key";

/** What the chat port checks who a request is against. */
export interface Door {
  /** Checks login tokens; undefined when no auth key is set. */
  verifier?: Verifier;
  /** `--auth required`: no token, no entry. */
  required: boolean;
  /** `--op-key`; empty when there is none. */
  opKey: string;
}

/**
 * Who an upgrade says it is: its login token verified (a must with
 * `--auth required`), the op key it shows compared with `--op-key` (in
 * constant time), its session named. A refusal says why.
 */
export async function identify(
  offered: readonly string[],
  authorization: string | null,
  door: Door,
): Promise<Claimed | { problem: DoorProblem }> {
  const token = tokenOf(offered, authorization);
  let identity: Identity | undefined;
  if (door.verifier && token !== undefined) {
    const verified = await door.verifier(token);
    if (typeof verified === "string") return { problem: verified };
    identity = verified;
  } else if (door.verifier && door.required) {
    return { problem: "no_token" };
  }
  const opKey = offered.find((name) => name.startsWith(OP_PROTOCOL_PREFIX))
    ?.slice(OP_PROTOCOL_PREFIX.length);
  if (opKey !== undefined && !(door.opKey && sameSecret(opKey, door.opKey))) {
    return { problem: "bad_op_key" };
  }
  return {
    identity,
    op: opKey !== undefined,
    session: sessionOf(offered),
  };
}
