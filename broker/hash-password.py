#!/usr/bin/env python3
"""Print a RabbitMQ password hash for broker/definitions.json.

Usage: broker/hash-password.py PASSWORD   (or no argument: read it from stdin)

The format is RabbitMQ's rabbit_password_hashing_sha256 (its default):
    base64(salt + sha256(salt + utf8(password)))   with a random 4-byte salt.
Put the output in a user's "password_hash" and keep
"hashing_algorithm": "rabbit_password_hashing_sha256".

The users in definitions.json ship with placeholder passwords
(lanes-server: change-me-server, lanes-worker: change-me-worker,
lanes-publisher: change-me-publisher, lanes-admin: change-me-admin):
change them before any real deployment, and the URLs in docker-compose.yml with them.
"""
import base64
import hashlib
import os
import sys


def rabbit_sha256_hash(password, salt=None):
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def main():
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    password = sys.argv[1] if len(sys.argv) == 2 else sys.stdin.readline().rstrip("\n")
    if not password:
        sys.exit("empty password")
    print(rabbit_sha256_hash(password))


if __name__ == "__main__":
    main()
