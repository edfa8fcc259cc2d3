"""Verifies a widget-auth token with PyJWT (a JWT library that is not ours) against a JWKS.

Usage: verify_with_pyjwt.py <jwks json> <token> <audience> <issuer>
Prints the verified claims as JSON; exits non-zero when the token does not verify.
"""
import json
import sys

import jwt

jwks, token, audience, issuer = sys.argv[1:5]
kid = jwt.get_unverified_header(token)["kid"]
key_set = jwt.PyJWKSet.from_dict(json.loads(jwks))
key = next(k for k in key_set.keys if k.key_id == kid)
claims = jwt.decode(
    token,
    key=key.key,
    algorithms=["EdDSA"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]},
)
print(json.dumps(claims))
