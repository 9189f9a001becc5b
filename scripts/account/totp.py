"""TOTP codes from pyotp, an implementation independent of the server's, for
crates/tidings/tests/account_security.rs.

  totp.py code SECRET OFFSET   prints the code of the step OFFSET steps from now (30 s each)
  totp.py uri URI              prints the parameters pyotp reads from an otpauth:// URI, as JSON
"""

import json
import sys
import time

import pyotp


def main() -> None:
    command = sys.argv[1]
    if command == "code":
        secret, offset = sys.argv[2], int(sys.argv[3])
        totp = pyotp.TOTP(secret)
        print(totp.at(time.time() + offset * totp.interval))
    elif command == "uri":
        totp = pyotp.parse_uri(sys.argv[2])
        print(json.dumps({
            "secret": totp.secret,
            "digits": totp.digits,
            "interval": totp.interval,
            "issuer": totp.issuer,
            "name": totp.name,
            "digest": totp.digest().name,
        }))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
