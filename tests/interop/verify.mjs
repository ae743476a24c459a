// Verifies one JWT the way a Node relying party would, with jose (pinned in package-lock.json,
// installed into node_modules by install.sh). Called by tests/interop.rs.
//
// stdin: {"jwks": {...}, "token": "...", "alg": "RS256", "typ": "at+jwt" | null,
//         "issuer": "...", "audience": "...", "claims": {...} | null}
// `claims`, when given, must equal the token's claims but for iat, exp, nbf and jti.
// Exit 0 silently when everything holds; otherwise exit 1 with the reason on stderr.
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const TIME_CLAIMS = ['iat', 'exp', 'nbf', 'jti'];

function fail(msg) {
  process.stderr.write(`jose: ${msg}\n`);
  process.exit(1);
}

const want = JSON.parse(readFileSync(0, 'utf8'));
let payload;
try {
  const header = decodeProtectedHeader(want.token);
  // jose checks typ only when asked; a token without one must not pass where one is expected.
  if ((header.typ ?? null) !== want.typ) fail(`header typ ${header.typ}, expected ${want.typ}`);
  ({ payload } = await jwtVerify(want.token, createLocalJWKSet(want.jwks), {
    algorithms: [want.alg],
    issuer: want.issuer,
    audience: want.audience,
    ...(want.typ ? { typ: want.typ } : {}),
    requiredClaims: ['exp', 'iat', 'iss', 'aud'],
  }));
} catch (e) {
  fail(`${e.code ?? e.name}: ${e.message}`);
}
if (want.claims != null) {
  const strip = (c) => Object.fromEntries(Object.entries(c).filter(([k]) => !TIME_CLAIMS.includes(k)));
  const [got, expected] = [strip(payload), strip(want.claims)];
  if (!isDeepStrictEqual(got, expected)) {
    fail(`claims differ: got ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
  }
}
