"""A small MCP server over stdio that writes down what reaches it: calls begun and cancellations.

``python tests/servers/signal_server.py NAME RECORD`` serves the tools
``NAME_block``, ``NAME_wait(seconds)`` and ``NAME_shout(message, level)``
and appends one line to the file ``RECORD`` for every call it begins
(``started ID TAG``), every ``notifications/cancelled`` it receives
(``cancelled ID REASON``) and every call it finishes (``finished ID TAG``).

It speaks JSON-RPC by hand rather than through the SDK on purpose: the SDK
cancels running handlers when its input ends too, so a handler seeing a
cancellation cannot tell whether the router sent ``notifications/cancelled``
or simply went away. Here the record says exactly which messages arrived,
with the backend-side request id the router used. Tools are named after the
server so two instances behind one router never collide.

- ``NAME_block(tag)``: never answers on its own; ends when cancelled.

A call that carries a progress token gets one progress notification first.
- ``NAME_wait(seconds, tag)``: answers after ``seconds``.
- ``NAME_shout(message, level)``: sends ``notifications/message`` (logger
  ``NAME``) and answers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any


class Server:
    def __init__(self, name: str, record: Path) -> None:
        self.name = name
        self.record = record
        self.calls: dict[Any, asyncio.Task[None]] = {}
        self.out = sys.stdout.buffer

    def note(self, *words: Any) -> None:
        with self.record.open("a") as f:
            f.write(" ".join(str(w) for w in words) + "\n")

    def send(self, msg: dict[str, Any]) -> None:
        self.out.write(json.dumps({"jsonrpc": "2.0", **msg}).encode() + b"\n")
        self.out.flush()

    def tools(self) -> list[dict[str, Any]]:
        def tool(suffix: str, **props: str) -> dict[str, Any]:
            schema = {"type": "object", "properties": {k: {"type": v} for k, v in props.items()}}
            return {"name": f"{self.name}_{suffix}", "inputSchema": schema}

        return [
            tool("block", tag="string"),
            tool("wait", seconds="number", tag="string"),
            tool("shout", message="string", level="string"),
        ]

    def handle(self, msg: dict[str, Any]) -> None:
        method, mid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if method is None:
            return  # a response (none expected)
        if mid is None:
            if method == "notifications/cancelled":
                rid = params.get("requestId")
                self.note("cancelled", rid, params.get("reason", "-").replace(" ", "_"))
                task = self.calls.pop(rid, None)
                if task is not None:
                    task.cancel()
            return
        if method == "initialize":
            caps = {"tools": {}, "logging": {}}
            info = {"name": self.name, "version": "1"}
            version = params.get("protocolVersion", "2025-06-18")
            result = {"protocolVersion": version, "capabilities": caps, "serverInfo": info}
            self.send({"id": mid, "result": result})
        elif method == "tools/list":
            self.send({"id": mid, "result": {"tools": self.tools()}})
        elif method in ("ping", "logging/setLevel"):
            self.send({"id": mid, "result": {}})
        elif method == "tools/call":
            task = asyncio.get_running_loop().create_task(self.call(mid, params))
            self.calls[mid] = task
        else:
            error = {"code": -32601, "message": f"Method not found: {method}"}
            self.send({"id": mid, "error": error})

    async def call(self, mid: Any, params: dict[str, Any]) -> None:
        tool = str(params.get("name", "")).removeprefix(f"{self.name}_")
        args = params.get("arguments") or {}
        tag = args.get("tag", "-")
        self.note("started", mid, tag)
        token = (params.get("_meta") or {}).get("progressToken")
        if token is not None:
            progress = {"progressToken": token, "progress": 0, "message": "begun"}
            self.send({"method": "notifications/progress", "params": progress})
        if tool == "block":
            await asyncio.Event().wait()
        elif tool == "wait":
            await asyncio.sleep(float(args.get("seconds", 1)))
        elif tool == "shout":
            log = {"level": args.get("level", "info"), "logger": self.name, "data": args["message"]}
            self.send({"method": "notifications/message", "params": log})
        self.calls.pop(mid, None)
        self.note("finished", mid, tag)
        self.send({"id": mid, "result": {"content": [{"type": "text", "text": f"{tool} done"}]}})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip():
                self.handle(json.loads(line))
        self.note("eof")


if __name__ == "__main__":
    asyncio.run(Server(sys.argv[1], Path(sys.argv[2])).run())
