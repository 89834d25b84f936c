"""What one session has outstanding, each way: its calls, and the requests servers sent it.

``ClientCalls`` and ``ServerRequests`` against stand-ins for a backend and a
session: a forwarded call is tracked until answered or cancelled, a held one
is a task its cancel cancels, a start that fails answers the call, nothing
held is forwarded once the client is gone, and a call held for its name is
handled again (so it passes the session's admission then). The other way,
a server's request gets an id of the session's own and its answer goes back
under the server's id. Sessions end-to-end are in test_router_session.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp_fleet.router import jsonrpc
from mcp_fleet.router.backend import BackendError
from mcp_fleet.router.outstanding import ClientCalls, ServerRequests

pytestmark = pytest.mark.timeout(30)


class Backend:
    """The backend side of both directions, recorded."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.forwarded: list[tuple[Any, Any]] = []
        self.cancelled: list[tuple[int, str | None]] = []
        self.responses: list[tuple[Any, Any]] = []
        self.notified: list[tuple[str, Any]] = []
        self.server_requests: dict[Any, Any] = {}

    def forward(self, sink: Any, mid: Any, msg: Any) -> int:
        if self.refuse:
            raise BackendError("s", jsonrpc.BACKEND_UNAVAILABLE, "full")
        self.forwarded.append((mid, msg))
        return 100 + len(self.forwarded)

    def cancel(self, bid: int, reason: str | None = None) -> None:
        self.cancelled.append((bid, reason))

    def respond(self, backend_id: Any, msg: Any) -> None:
        self.responses.append((backend_id, msg))

    def respond_error(self, backend_id: Any, code: int, message: str) -> None:
        self.responses.append((backend_id, (code, message)))

    def notify(self, method: str, params: Any = None) -> None:
        self.notified.append((method, params))


class Owner:
    """The session side of ``ClientCalls`` (``CallOwner``), recorded."""

    def __init__(self) -> None:
        self.closed = False
        self.errors: dict[Any, Any] = {}

    def reply(self, client_id: Any, data: bytes) -> None:
        raise AssertionError("the stand-in backend never replies")

    def progress(self, client_id: Any, data: bytes) -> None:
        raise AssertionError("the stand-in backend sends no progress")

    def error_response(self, mid: Any, error: Any) -> None:
        self.errors[mid] = error


async def settle(task: asyncio.Task[Any] | None = None) -> None:
    """Let the held tasks run to their next wait (or to their end)."""
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_forwarded_call_is_in_flight_until_answered() -> None:
    owner, backend = Owner(), Backend()
    calls = ClientCalls(owner)
    calls.forward(backend, 1, {"method": "tools/call"})
    assert 1 in calls and calls.inflight == {1: (backend, 101)}
    calls.answered(1)
    assert 1 not in calls and not owner.errors


def test_a_call_the_backend_refuses_is_answered_with_its_error() -> None:
    owner, backend = Owner(), Backend(refuse=True)
    calls = ClientCalls(owner)
    calls.forward(backend, 1, {})
    assert 1 not in calls
    assert owner.errors[1]["code"] == jsonrpc.BACKEND_UNAVAILABLE


def test_a_cancel_reaches_the_backend_under_its_id_and_close_cancels_the_rest() -> None:
    owner, backend = Owner(), Backend()
    calls = ClientCalls(owner)
    for mid in (1, 2, 3):
        calls.forward(backend, mid, {})
    calls.cancel(2, "not needed")
    assert backend.cancelled == [(102, "not needed")] and 2 not in calls
    calls.close()
    assert backend.cancelled[1:] == [(101, "client disconnected"), (103, "client disconnected")]
    assert calls.inflight == {}


async def test_a_call_held_for_its_server_is_forwarded_once_it_runs() -> None:
    owner, backend = Owner(), Backend()
    calls = ClientCalls(owner)
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.forward_when_started(7, {"id": 7}, lambda: started)
    assert 7 in calls.waiting and 7 in calls
    started.set_result(backend)
    await settle(calls.waiting.get(7))
    assert 7 not in calls.waiting and calls.inflight == {7: (backend, 101)}


async def test_a_start_that_fails_answers_the_held_call() -> None:
    owner = Owner()
    calls = ClientCalls(owner)
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.forward_when_started(7, {}, lambda: started)
    started.set_exception(BackendError("s", jsonrpc.BACKEND_UNAVAILABLE, "did not start"))
    await settle(calls.waiting.get(7))
    assert owner.errors[7]["message"] == "did not start" and 7 not in calls


async def test_nothing_held_is_forwarded_once_the_client_is_gone() -> None:
    owner, backend = Owner(), Backend()
    calls = ClientCalls(owner)
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.forward_when_started(7, {}, lambda: started)
    owner.closed = True
    started.set_result(backend)
    await settle(calls.waiting.get(7))
    assert backend.forwarded == [] and calls.inflight == {}


async def test_a_cancelled_held_call_never_reaches_its_server() -> None:
    owner, backend = Owner(), Backend()
    calls = ClientCalls(owner)
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.forward_when_started(7, {}, lambda: started)
    task = calls.waiting[7]
    calls.cancel(7, None)
    await settle(task)
    assert task.cancelled() and 7 not in calls and backend.cancelled == []


async def test_close_cancels_held_calls() -> None:
    calls = ClientCalls(Owner())
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    calls.forward_when_started(7, {}, lambda: started)
    task = calls.waiting[7]
    calls.close()
    await settle(task)
    assert task.cancelled() and calls.waiting == {}


async def test_a_call_held_for_its_name_is_handled_again_once_routed() -> None:
    owner = Owner()
    calls = ClientCalls(owner)
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handled: list[tuple[Any, Any, bool]] = []

    def handler(mid: Any, msg: Any, *, held: bool = False) -> None:
        handled.append((mid, msg, held))

    calls.handle_when_routed(3, {"method": "tools/call"}, lambda: routed, handler)
    assert 3 in calls and handled == []
    routed.set_result(None)
    await settle(calls.waiting.get(3))
    assert handled == [(3, {"method": "tools/call"}, True)] and 3 not in calls


async def test_a_handler_that_fails_costs_the_call_an_internal_error() -> None:
    owner = Owner()
    calls = ClientCalls(owner)
    routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def handler(mid: Any, msg: Any, *, held: bool = False) -> None:
        raise RuntimeError("bug")

    calls.handle_when_routed(3, {"method": "prompts/get"}, lambda: routed, handler)
    routed.set_result(None)
    await settle(calls.waiting.get(3))
    assert owner.errors[3] == {
        "code": jsonrpc.INTERNAL_ERROR, "message": "Internal error handling prompts/get",
    }  # fmt: skip


def test_a_server_request_gets_our_id_and_its_answer_goes_back_under_the_servers() -> None:
    session, backend = object(), Backend()
    requests = ServerRequests(session)
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"}
    requests.add(backend, msg, 5)
    assert msg["id"] == 1 and backend.server_requests == {"srv-1": (session, 1, 5)}
    second: dict[str, Any] = {"id": "srv-2", "method": "roots/list"}
    requests.add(backend, second, None)
    assert second["id"] == 2
    requests.answer(1, {"id": 1, "result": {"roots": []}})
    assert backend.responses == [("srv-1", {"id": 1, "result": {"roots": []}})]
    requests.answer(1, {"id": 1, "result": {}})  # answered already: dropped
    requests.answer("2", {"id": "2", "result": {}})  # not one of our ids
    assert len(backend.responses) == 1
    requests.answer(2, {"id": 2})  # neither result nor error
    assert backend.responses[1] == (
        "srv-2",
        (jsonrpc.INTERNAL_ERROR, "client sent an invalid response"),
    )
    assert requests.pending == {}


def test_progress_reaches_each_asking_server_once_and_close_answers_the_rest() -> None:
    one, two = Backend(), Backend()
    requests = ServerRequests(object())
    for backend, rid in ((one, "a"), (one, "b"), (two, "c")):
        requests.add(backend, {"id": rid}, None)
    requests.progress({"progressToken": "t", "progress": 1})
    requests.progress("not an object")
    assert (
        one.notified
        == two.notified
        == [("notifications/progress", {"progressToken": "t", "progress": 1})]
    )
    assert requests.drop(3) and not requests.drop(3)
    requests.close()
    assert one.responses == [
        ("a", (jsonrpc.INTERNAL_ERROR, "client disconnected")),
        ("b", (jsonrpc.INTERNAL_ERROR, "client disconnected")),
    ]
    assert two.responses == [] and requests.pending == {}
