"""`python -m crypto.sign_worker`: the signing process `SigningProcess` starts.

A module of its own, which the `crypto` package does not import, so running it
with -m does not load it twice.

The process ends when its input ends (the service closed the pipe, or died).
It ignores SIGINT and SIGTERM: a Ctrl-C in a terminal, or a stop signal sent
to the whole process group, reaches it too, and it must keep signing while
the service drains the charges already accepted. Its standard output is the
protocol channel, so anything printed goes to standard error instead.
"""

from __future__ import annotations

import os
import signal
import sys

from crypto._sign_process import serve


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        return serve(channel_in, channel_out)
    except BrokenPipeError:
        # The service closed the pipe before reading us: it is stopping (its
        # port was taken, say). The same as end of input, not a crash to print;
        # devnull keeps the final flush at exit from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), channel_out.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
