"""Verifies one JWT the way a Python relying party would, with PyJWT (pinned in
requirements.txt, installed into .pydeps by install.sh). Called by tests/interop.rs.

stdin: {"jwks": {...}, "token": "...", "alg": "RS256", "typ": "at+jwt" | null,
        "issuer": "...", "audience": "...", "claims": {...} | null}
`claims`, when given, must equal the token's claims but for iat, exp, nbf and jti.
Exit 0 silently when everything holds; otherwise exit 1 with the reason on stderr.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".pydeps"))

import jwt  # noqa: E402

TIME_CLAIMS = ("iat", "exp", "nbf", "jti")


def fail(msg):
    print(f"PyJWT {jwt.__version__}: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    want = json.load(sys.stdin)
    token = want["token"]
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != want["alg"]:
            fail(f"header alg {header.get('alg')!r}, expected {want['alg']!r}")
        # PyJWT does not check typ; a relying party that pins it compares it itself.
        if header.get("typ") != want["typ"]:
            fail(f"header typ {header.get('typ')!r}, expected {want['typ']!r}")
        key = jwt.PyJWKSet.from_dict(want["jwks"])[header["kid"]]
        claims = jwt.decode(
            token,
            key,
            algorithms=[header["alg"]],
            issuer=want["issuer"],
            audience=want["audience"],
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as e:
        fail(f"{type(e).__name__}: {e}")
    except KeyError as e:
        fail(f"no key {e} in the JWKS")
    if want.get("claims") is not None:
        strip = lambda c: {k: v for k, v in c.items() if k not in TIME_CLAIMS}  # noqa: E731
        got, expected = strip(claims), strip(want["claims"])
        if got != expected:
            fail(f"claims differ: got {sorted(got.items())}, expected {sorted(expected.items())}")


if __name__ == "__main__":
    main()
