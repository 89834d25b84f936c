"""A broken stdio "server" that floods its stdout instead of speaking MCP.

``python flood_server.py MODE [MARKER]``; MODE is one of:

- ``garbage``: a megabyte of random bytes (newlines included), then silence;
- ``bigline``: one 50 MB line that is not JSON, then silence;
- ``endless``: bytes without a newline, forever (a line with no end);
- ``stderr``: a 50 MB stderr line, then a valid-looking but wrong answer.

It never answers ``initialize``; it stays alive after writing, so the
controller must decide it is broken from what it wrote, not from an exit.
Plain Python, no SDK: it starts in milliseconds.
"""

from __future__ import annotations

import os
import sys
import time

MEGABYTE = 1024 * 1024


def main(mode: str) -> None:
    out = sys.stdout.buffer
    if mode == "garbage":
        out.write(os.urandom(MEGABYTE))
    elif mode == "bigline":
        chunk = b"x" * MEGABYTE
        for _ in range(50):
            out.write(chunk)
        out.write(b"\n")
    elif mode == "endless":
        chunk = b"y" * MEGABYTE
        while True:
            out.write(chunk)
    elif mode == "stderr":
        chunk = b"e" * MEGABYTE
        for _ in range(50):
            sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        out.write(b'{"jsonrpc":"2.0","id":"not-yours","result":{}}\n')
    out.flush()
    time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1])
