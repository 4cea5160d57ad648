"""The setup password: ``alpaca-focuser hash-password`` makes ``[server] setup_password_hash``, the server checks
HTTP Basic credentials against it.

scrypt from the standard library (memory-hard, so a stolen config file is slow to attack), a random 16-byte salt
per hash, and a constant-time comparison. The stored form is ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the
cost can be raised later without breaking existing hashes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass

SCHEME = "scrypt"
# n=2**14, r=8: 16 MiB and about 0.05 s on a PC, a few tenths of a second on a Pi Zero; checked once per settings
# write, never on the Alpaca API.
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LENGTH = 8


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _scrypt(password: str, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # maxmem: OpenSSL's default limit (32 MiB) is too tight for n=2**15 and up; allow up to 256 MiB
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, N, R, P, salt, HASH_BYTES)
    b64 = base64.b64encode
    return f"{SCHEME}${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def parse_hash(text: str) -> PasswordHash:
    """The parts of a stored hash; ValueError saying what is wrong (used by the config loader)."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f"must look like {SCHEME}$16384$8$1$<salt>$<hash>")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("is damaged (its numbers or base64 parts do not parse)") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n * r > 2**24:
        raise ValueError("has scrypt parameters out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("is damaged (salt or hash too short)")
    return PasswordHash(n, r, p, salt, digest)


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; the final comparison takes the same time however many bytes
    match."""
    h = parse_hash(stored)
    candidate = _scrypt(password, h.n, h.r, h.p, h.salt, len(h.digest))
    return hmac.compare_digest(candidate, h.digest)


# --- `alpaca-focuser hash-password` -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Reads the password twice from the terminal, or once from standard input when that is not a "
                     "terminal (echo -n secret | alpaca-focuser hash-password). Put the printed line in [server] "
                     "as setup_password_hash = \"...\" and restart.")


def run(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        import getpass  # the command line only: keeps termios out of the server

        password = getpass.getpass("Setup password: ")
        if getpass.getpass("Again: ") != password:
            print("alpaca-focuser: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        print(f"alpaca-focuser: use at least {MIN_LENGTH} characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0
