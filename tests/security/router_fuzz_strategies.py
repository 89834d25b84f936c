"""Hypothesis strategies for fuzzing the router: JSON-RPC messages and HTTP/1.1 requests.

Shared by tests/security/test_router_fuzz.py. Messages are mostly shaped
like what the router expects (a known method with params of the right
shape, ids from a small pool the victim session uses too, so duplicates and
cross-session cancels are common) and sometimes anything at all; HTTP
requests are mostly valid part by part, so that most of them get past the
parser and reach the router, with one part in ten broken.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from router_fuzz_support import MAX_BODY

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Ids the victim uses too (1, 2, 3...), so collisions and cross-session cancels are common.
pool_ids = st.sampled_from([1, 2, 3, 4, 0, -1, "1", "a", ""])
ids = (
    pool_ids
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
METHODS = [
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
    "resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
    "resources/unsubscribe", "completion/complete", "logging/setLevel",
    "notifications/initialized", "notifications/cancelled", "notifications/progress",
    "notifications/roots/list_changed", "sampling/createMessage", "no/such/method",
]  # fmt: skip
tool_args = (
    st.fixed_dictionaries({"text": values})
    | st.fixed_dictionaries({"a": st.floats(-1e6, 1e6) | values, "b": st.floats(-1e6, 1e6)})
    | values
)


@st.composite
def params_for(draw: st.DrawFn, method: Any) -> Any:
    """Params shaped for ``method`` most of the time, anything otherwise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(values)
    if method == "tools/call":
        name = draw(st.sampled_from(["echo", "add", "sleep", "nope"]) | st.text(max_size=6))
        args = (
            draw(st.fixed_dictionaries({"seconds": st.floats(0, 0.05) | st.text(max_size=3)}))
            if name == "sleep"
            else draw(tool_args)
        )
        params: dict[str, Any] = {"name": name, "arguments": args}
        if draw(st.booleans()):
            params["_meta"] = {"progressToken": draw(ids)}
        return params
    if method in ("prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe"):
        return {
            "name": draw(st.text(max_size=6) | values),
            "uri": draw(st.text(max_size=12) | values),
        }
    if method == "completion/complete":
        ref = {"type": draw(st.sampled_from(["ref/prompt", "ref/resource"]) | values),
               "name": draw(values), "uri": draw(values)}  # fmt: skip
        return {"ref": draw(st.just(ref) | values), "argument": draw(values)}
    if method == "logging/setLevel":
        return {"level": draw(st.sampled_from(["debug", "error", "loud"]) | values)}
    if isinstance(method, str) and method.endswith("/list"):
        cursors = st.sampled_from(["mcp-fleet:0", "mcp-fleet:-3", "mcp-fleet:1" + "0" * 30, "x"])
        return {"cursor": draw(cursors | values)}
    if method == "notifications/cancelled":
        return {"requestId": draw(ids), "reason": draw(values)}
    if method == "notifications/progress":
        return {"progressToken": draw(ids), "progress": draw(values)}
    if method == "initialize":
        return {
            "protocolVersion": draw(st.sampled_from(["2025-06-18", "1999-01-01"]) | values),
            "capabilities": draw(values),
            "clientInfo": draw(values),
        }
    return draw(values)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """One JSON-RPC-ish object: a request, a notification, a response, or a stray object."""
    kind = draw(
        st.sampled_from(["request", "request", "request", "notification", "response", "stray"])
    )
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        msg["jsonrpc"] = "2.0"
    elif draw(st.booleans()):
        msg["jsonrpc"] = draw(values)
    if kind == "stray":
        msg.update(
            draw(st.dictionaries(st.sampled_from(["id", "method", "params", "result"]), values))
        )
        return msg
    if kind != "notification":
        msg["id"] = draw(ids)
    if kind == "response":
        msg[draw(st.sampled_from(["result", "error"]))] = draw(values)
        return msg
    method = draw(st.sampled_from(METHODS) | st.text(max_size=10) | values)
    msg["method"] = method
    if draw(st.integers(0, 5)):
        msg["params"] = draw(params_for(method))
    return msg


def encode(msg: Any) -> bytes:
    """JSON the way a careless client writes it (stdlib: ints of any size)."""
    return json.dumps(msg, ensure_ascii=False).encode()


@st.composite
def raw_messages(draw: st.DrawFn) -> bytes:
    """One framed message's bytes: mostly JSON objects, sometimes broken or not objects."""
    how = draw(st.integers(0, 11))
    if how <= 6:
        return encode(draw(messages()))
    if how == 7:
        data = encode(draw(messages()))
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == 8:
        return encode(draw(st.lists(messages(), max_size=3)))  # a batch
    if how == 9:
        return encode(draw(values))
    if how == 10:
        depth = draw(st.integers(1, 3000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    return draw(st.binary(max_size=40))


def line_of(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


header_names = st.sampled_from(
    ["content-length", "transfer-encoding", "content-type", "mcp-session-id",
     "mcp-protocol-version", "host", "origin", "accept", "connection", "expect", "upgrade",
     "authorization", "last-event-id"]
) | st.text("abcdefghijklmnopqrstuvwxyz-_:", max_size=12)  # fmt: skip
header_values = st.sampled_from(
    ["0", "-1", "1" + "0" * 30, "chunked", "gzip, chunked", "application/json", "text/event-stream",
     "close", "keep-alive", "100-continue", "websocket", "127.0.0.1", "evil.example",
     "Bearer x", "²", "2025-06-18", "http://localhost", "null"]
) | st.binary(max_size=20).map(lambda b: b.decode("latin-1"))  # fmt: skip


def sometimes(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Mostly a valid part (so requests get past the parser), one time in ten a broken one."""
    return draw(bad) if draw(st.integers(0, 9)) == 0 else draw(good)


@st.composite
def http_requests(draw: st.DrawFn, sid: str, host: str) -> bytes:
    """One HTTP/1.1 request, each part (line, headers, framing, body) valid or broken."""
    method = sometimes(draw, st.sampled_from(["POST", "POST", "POST", "GET", "DELETE"]),
                       st.sampled_from(["PUT", "OPTIONS", "HEAD", "BREW", "P OST", ""])
                       | st.text("ABCXYZ ", max_size=6))  # fmt: skip
    path = sometimes(draw, st.sampled_from(["/mcp", "/mcp", "/mcp/", "/sse", "/healthz"]),
                     st.sampled_from(["/messages?session_id=x", "/", "*", "/../etc/passwd",
                                      "/mcp?%zz", "/" + "a" * 9000, "/mcp#x"])
                     | st.text(max_size=12))  # fmt: skip
    version = sometimes(
        draw, st.just("HTTP/1.1"), st.sampled_from(["HTTP/1.0", "HTTP/2.0", "", "HTTP/9.9"])
    )
    body = draw(raw_messages())
    headers = [("host", sometimes(draw, st.just(host), st.sampled_from(["evil.example", ""])))]
    headers.append(("content-type", sometimes(draw, st.just("application/json"), header_values)))
    headers.append(("accept", "application/json, text/event-stream"))
    if draw(st.integers(0, 4)):
        headers.append(("mcp-session-id", sometimes(draw, st.just(sid), st.text(max_size=8))))
    if draw(st.integers(0, 2)) == 0:
        headers += draw(st.lists(st.tuples(header_names, header_values), max_size=3))
    framings = ["short", "long", "chunked", "chunked", "bad-chunk", "oversized",
                "oversized-chunked", "none"]  # fmt: skip
    framing = draw(st.sampled_from(["length"] * 6 + framings))
    if framing == "length":
        headers.append(("content-length", str(len(body))))
    elif framing == "short":  # truncated: the body never arrives whole
        headers.append(("content-length", str(len(body) + 5)))
    elif framing == "long":  # the rest is read as the next request
        headers.append(("content-length", str(max(0, len(body) - 3))))
    elif framing in ("chunked", "bad-chunk"):
        headers.append(("transfer-encoding", "chunked"))
        size = b"zz" if framing == "bad-chunk" else b"%x" % len(body)
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing == "oversized":
        body = b" " * (MAX_BODY + 1)
        headers.append(("content-length", str(len(body))))
    elif framing == "oversized-chunked":
        headers.append(("transfer-encoding", "chunked"))
        body = (b"%x\r\n" % 8192 + b" " * 8192 + b"\r\n") * (MAX_BODY // 8192 + 1) + b"0\r\n\r\n"
    head = f"{method} {path} {version}\r\n".encode("latin-1", "replace")
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in headers)
    return head + b"\r\n" + body


#: Header lines a request may have (the router's ``http_server.MAX_HEADER_COUNT``).
HEADER_COUNT_LIMIT = 100
#: Bytes of request line and headers a request may have (``http_server.MAX_HEADER_BYTES``).
HEADER_BYTES_LIMIT = 64 * 1024


@st.composite
def connection_moves(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """What hostile clients do with connections, a few moves at once (``test_router_fuzz``):

    - ``("idle", n)``: open ``n`` connections and send nothing;
    - ``("partial", cut)``: send the first ``cut`` bytes of a request, then nothing;
    - ``("headers", count, size, repeated)``: one request with ``count`` header lines of
      ``size`` bytes (all one name when ``repeated``);
    - ``("refused-body", why, size, chunked)``: a POST the gate refuses on its head
      (``why``: a foreign Host or Origin) with a body of ``size`` bytes;
    - ``("slow-body", size)``: a POST head and half of its body, then nothing.
    """
    moves: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["idle", "partial", "headers", "refused-body", "slow-body"]))
        if kind == "idle":
            moves.append((kind, draw(st.integers(1, 40))))
        elif kind == "partial":
            moves.append((kind, draw(st.integers(0, 120))))
        elif kind == "headers":
            count = draw(st.sampled_from([1, 50, 99, 100, 101, 150, 1000, 20000]))
            size = draw(st.sampled_from([1, 10, 200, 700, 70 * 1024]))
            moves.append((kind, count, size, draw(st.booleans())))
        elif kind == "refused-body":
            why = draw(st.sampled_from(["host", "origin"]))
            size = draw(st.sampled_from([0, 1, 1000, MAX_BODY, MAX_BODY + 1, 4 * MAX_BODY]))
            moves.append((kind, why, size, draw(st.booleans())))
        else:
            moves.append((kind, draw(st.sampled_from([2, 1000, MAX_BODY]))))
    return moves
