"""A stdio server whose answer to ``initialize`` comes late, or never.

Tests use it for a server that hangs in its first handshake: a runtime
starts it, the readiness probe sends ``initialize`` and waits for the whole
probe timeout. It reads stdin line by line and ignores every message; it
exits when stdin closes, as stdio servers do. With ``--answer-after SECONDS``
it answers ``initialize`` (and nothing else) that long after the request: a
merely slow server, or with 0 a quick one. It imports nothing from the SDK,
so it is up within milliseconds (the echo server takes seconds to import
the SDK on a loaded machine): only its handshake is as slow as asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answer-after", type=float, default=None)
    parser.add_argument("marker", nargs="?", default="")  # shows in the process list only
    args = parser.parse_args()
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if args.answer_after is None or not isinstance(message, dict):
            continue
        if message.get("method") != "initialize" or "id" not in message:
            continue
        time.sleep(args.answer_after)
        answer = {
            "jsonrpc": "2.0",
            "id": message["id"],
            "result": {
                "protocolVersion": message.get("params", {}).get("protocolVersion", ""),
                "capabilities": {},
                "serverInfo": {"name": "hanging", "version": "0"},
            },
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
