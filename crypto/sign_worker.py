"""`python -m crypto.sign_worker`: the signing process `SigningProcess` starts.

A module of its own, which the `crypto` package does not import, so running it
with -m does not load it twice."""

from __future__ import annotations

import sys

from crypto._sign_process import serve

if __name__ == "__main__":
    sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer))
