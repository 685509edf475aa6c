/**
 * Prints a login token signed with `AUTH_SECRET` (HS256), for operators and
 * tests: what an app's backend would mint for a signed-in user.
 *
 * ```sh
 * AUTH_SECRET=… deno task token --sub 42 --name ada [--role op] [--ttl 3600]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SignJWT } from "jose";

/** A token's lifetime when `--ttl` is not given, in seconds. */
export const DEFAULT_TTL_SECONDS = 3600;

/** What a token says. */
export interface TokenClaims {
  sub: string;
  name?: string;
  roles?: string[];
  /** Seconds it is valid for. @default {DEFAULT_TTL_SECONDS} */
  ttl?: number;
  audience?: string;
  issuer?: string;
}

/** Signs a token with an HS256 secret. */
export function mintToken(
  secret: string,
  claims: TokenClaims,
): Promise<string> {
  const jwt = new SignJWT({
    ...(claims.name !== undefined ? { name: claims.name } : {}),
    ...(claims.roles?.length ? { roles: claims.roles } : {}),
  })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(claims.sub)
    .setIssuedAt()
    .setExpirationTime(
      Math.floor(Date.now() / 1000) + (claims.ttl ?? DEFAULT_TTL_SECONDS),
    );
  if (claims.audience) jwt.setAudience(claims.audience);
  if (claims.issuer) jwt.setIssuer(claims.issuer);
  return jwt.sign(new TextEncoder().encode(secret));
}

const USAGE =
  `Usage: AUTH_SECRET=… deno task token --sub ID [--name NICK] [--role op] [--ttl SECONDS] [--audience AUD] [--issuer ISS]`;

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      sub: { type: "string" },
      name: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string" },
      audience: { type: "string" },
      issuer: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const secret = Deno.env.get("AUTH_SECRET");
  if (
    values.help || !values.sub || !secret || (values.ttl !== undefined &&
      !/^\d+$/.test(values.ttl))
  ) {
    console.error(
      values.help || secret ? USAGE : `AUTH_SECRET is not set.\n${USAGE}`,
    );
    Deno.exit(values.help ? 0 : 2);
  }
  console.log(
    await mintToken(secret, {
      sub: values.sub,
      name: values.name,
      roles: values.role,
      ttl: values.ttl === undefined ? undefined : Number(values.ttl),
      audience: values.audience,
      issuer: values.issuer,
    }),
  );
}
