"""Why a server is not running, as status says it: the runtime's own reason, never a guess.

A start the runtime refuses is Failed with the reason the runtime gave
(``RuntimeFailure.reason``), not CrashLoop: nothing crashed. A spec the
runtime says it cannot run at all (``unsupported_reason``) is Failed before
any start and is not retried, since retrying cannot fix it.
"""

from __future__ import annotations

from pathlib import Path

from mcp_fleet.endpoints import EndpointTable
from mcp_fleet.errors import RuntimeFailure
from mcp_fleet.model import FleetFiles, RuntimeKind, ServerSpec
from mcp_fleet.reconcile.actions import MarkFailed
from mcp_fleet.reconcile.backoff import BackoffPolicy
from mcp_fleet.reconcile.loop import Controller
from mcp_fleet.reconcile.memory import Memory
from mcp_fleet.reconcile.plan import plan
from mcp_fleet.runtimes.base import Instance, ObservedState
from mcp_fleet.runtimes.fake import FakeRuntime
from mcp_fleet.status import REASON_IMAGE_UNAVAILABLE, REASON_RUNTIME_ERROR, ServerState
from reconcile_builders import FLEET, desired, spec


class ImageGone(RuntimeFailure):
    reason = REASON_IMAGE_UNAVAILABLE


def test_runtime_failure_reason_defaults_and_overrides() -> None:
    assert RuntimeFailure("daemon down").reason == REASON_RUNTIME_ERROR
    assert ImageGone("image x is not present").reason == REASON_IMAGE_UNAVAILABLE
    given = ImageGone("no network", reason="NetworkDown")
    assert given.reason == "NetworkDown" and str(given) == "no network"
    assert ImageGone.reason == REASON_IMAGE_UNAVAILABLE  # the instance did not change the class


def test_an_unsupported_spec_is_marked_failed_and_never_created() -> None:
    bad, good = spec("bad"), spec("good")
    memory = Memory(unsupported={"bad": "volumes: 'x:/data': source must be absolute"})
    result = plan(desired(bad, good), ObservedState(), memory)
    assert [(a.verb, a.server) for a in result.actions] == [
        ("mark-failed", "bad"),
        ("create", "good"),
    ]
    (mark,) = [a for a in result.actions if isinstance(a, MarkFailed)]
    assert mark.reason == "InvalidSpec" and "source must be absolute" in mark.message


class PickyRuntime(FakeRuntime):
    """Refuses to run ``picky`` at all, and cannot find the image of ``imageless``."""

    def unsupported_reason(self, spec: ServerSpec) -> str | None:
        if spec.name == "picky":
            return "picky: volumes: 'rel:/data': source must be absolute"
        return None

    async def start(self, spec: ServerSpec) -> Instance:
        if spec.name == "imageless":
            self.calls.append(("start", spec.name))
            raise ImageGone("image absent:latest is not present and could not be pulled")
        return await super().start(spec)


def controller(tmp_path: Path, runtime: FakeRuntime) -> Controller:
    state = desired(spec("picky"), spec("imageless"), spec("fine"))
    files = FleetFiles(home=tmp_path, catalogs=(), registry=tmp_path / "registry.yaml",
                       config=tmp_path / "config.yaml", tools=tmp_path / "tools.yaml",
                       secrets=tmp_path / "secrets.env")  # fmt: skip
    clock = iter(range(1000, 10**6, 30))  # every reading 30 s later: each backoff is over
    return Controller(
        files, {RuntimeKind.PROCESS: runtime}, EndpointTable(), loader=lambda _: state,
        watch=False, write_status_file=False, lock=False, clock=lambda: float(next(clock)),
        backoff=BackoffPolicy(initial=1.0, maximum=8.0, threshold=3, window=600.0),
    )  # fmt: skip


async def test_refused_starts_report_the_runtimes_reason_and_unsupported_specs_wait(
    tmp_path: Path,
) -> None:
    runtime = PickyRuntime(fleet=FLEET)
    ctl = controller(tmp_path, runtime)
    for _ in range(5):
        snap = await ctl.reconcile_once()
    states = {s.name: (s.state, s.reason) for s in snap.servers}
    assert states == {
        "fine": (ServerState.READY, "Initialized"),
        "imageless": (ServerState.FAILED, REASON_IMAGE_UNAVAILABLE),
        "picky": (ServerState.FAILED, "InvalidSpec"),
    }
    picky = snap.server("picky")
    assert picky is not None and picky.message == "volumes: 'rel:/data': source must be absolute"
    imageless = snap.server("imageless")
    assert imageless is not None and "could not be pulled" in imageless.message
    starts = [server for verb, server in runtime.calls if verb == "start"]
    assert "picky" not in starts
    assert starts.count("imageless") >= 3  # retried with backoff: the image may come back
