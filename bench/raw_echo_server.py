"""A minimal MCP echo server over stdio, without the SDK: the light backend of the benchmark.

An SDK server costs about a millisecond of CPU per call, which would hide the
router's own cost in a throughput run; this one answers in a few
microseconds, so the proxy in front of it is what gets measured. It speaks
just enough MCP for the benchmark: initialize, ping, tools/list and
tools/call of ``echo`` and ``sleep`` (which holds the call open, to count
in-flight calls).
"""

from __future__ import annotations

import asyncio
import sys

import orjson

TOOLS = [
    {
        "name": "echo",
        "description": "Return the text unchanged.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "sleep",
        "description": "Sleep, then answer.",
        "inputSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    },
]


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)

    def reply(mid: object, result: object) -> None:
        transport.write(orjson.dumps({"jsonrpc": "2.0", "id": mid, "result": result}) + b"\n")

    sleepers: set[asyncio.Task[None]] = set()

    async def sleep_then_reply(mid: object, seconds: float) -> None:
        await asyncio.sleep(seconds)
        reply(mid, {"content": [{"type": "text", "text": f"slept {seconds}"}], "isError": False})

    while line := await reader.readline():
        msg = orjson.loads(line)
        method = msg.get("method")
        mid = msg.get("id")
        if mid is None:
            continue
        if method == "tools/call":
            params = msg["params"]
            args = params.get("arguments") or {}
            if params["name"] == "sleep":
                task = loop.create_task(sleep_then_reply(mid, float(args.get("seconds", 1))))
                sleepers.add(task)
                task.add_done_callback(sleepers.discard)
                continue
            text = str(args.get("text", ""))
            reply(mid, {"content": [{"type": "text", "text": text}], "isError": False})
        elif method == "initialize":
            reply(
                mid,
                {
                    "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": "raw-echo", "version": "1"},
                },
            )
        elif method == "tools/list":
            reply(mid, {"tools": TOOLS})
        elif method == "ping":
            reply(mid, {})
        else:
            transport.write(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": mid,
                        "error": {"code": -32601, "message": "Method not found"},
                    }
                )
                + b"\n"
            )


if __name__ == "__main__":
    asyncio.run(main())
