"""Verifies a widget-auth checkpoint with the public JWKS alone, as a third party would
(README "Auditing": this is the snippet shown there). Needs only the `cryptography`
package (tests/requirements.txt brings it with PyJWT[crypto]).

Usage: verify_checkpoint.py <jwks.json> <checkpoint.json>
Prints "ok <keys> keys, <events> events" and exits 0, or names what is wrong and exits 1.
"""
import base64
import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def field(data):
    return struct.pack(">Q", len(data)) + data


def leaf(head):
    data = b"".join(
        field(str(v).encode())
        for v in (head["client_key"], head["sequence"], head["link"])
    )
    return hashlib.sha256(b"\x00" + data).digest()


def root(leaves):  # RFC 9162 section 2.1.1
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + root(leaves[:k]) + root(leaves[k:])).digest()


jwks = json.load(open(sys.argv[1]))
cp = json.load(open(sys.argv[2]))
assert cp["format"] == "widget-auth-checkpoint/1", "not a checkpoint"
jwk = next((k for k in jwks["keys"] if k["kid"] == cp["kid"]), None)
if jwk is None:
    sys.exit(f"signing key {cp['kid']} is not in the JWKS")
message = b"widget-auth-checkpoint/1\n" + (
    f"at={cp['at']}\nevents={cp['events']}\nkeys={cp['keys']}\n"
    f"root={cp['root']}\nkid={cp['kid']}\n"
).encode()
try:
    Ed25519PublicKey.from_public_bytes(b64url(jwk["x"])).verify(
        b64url(cp["signature"]), message
    )
except Exception:
    sys.exit("the signature does not verify")
heads = sorted(cp["heads"], key=lambda h: h["client_key"].encode())
if heads != cp["heads"] or len(heads) != cp["keys"]:
    sys.exit("the heads are not sorted or not counted right")
if sum(h["sequence"] for h in heads) != cp["events"]:
    sys.exit("the heads' sequences do not add up to events")
if root([leaf(h) for h in heads]).hex() != cp["root"]:
    sys.exit("the heads do not hash to the signed root")
print(f"ok {cp['keys']} keys, {cp['events']} events")
