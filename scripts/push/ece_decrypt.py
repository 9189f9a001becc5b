"""Decrypts Web Push bodies (RFC 8291, aes128gcm) with the independent `http_ece` package.

Reads JSON from stdin: {"private_key": <raw P-256 scalar, base64url>, "auth": <base64url>,
"bodies": [<base64url>, ...]} and prints a JSON list of the plaintexts (UTF-8). The integration
test crates/tidings/tests/push.rs drives it; scripts/test installs http-ece in target/py-venv.
"""

import base64
import json
import sys

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec


def b64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main():
    request = json.load(sys.stdin)
    private_key = ec.derive_private_key(
        int.from_bytes(b64(request["private_key"]), "big"), ec.SECP256R1()
    )
    auth = b64(request["auth"])
    out = []
    for body in request["bodies"]:
        plain = http_ece.decrypt(
            b64(body), private_key=private_key, auth_secret=auth, version="aes128gcm"
        )
        out.append(plain.decode("utf-8"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
