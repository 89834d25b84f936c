"""Names of the local test images and how tests run them.

tests/testbed.sh builds these images from local inputs only (no registry is
reachable) and reuses them while their inputs are unchanged. The names live
here, in one place, so a test never spells an image name by hand.

Conventions:

- ``SERVERS_IMAGE`` holds every file of tests/servers/ under ``/servers`` and
  runs ``python3`` with ``/servers/echo_server.py`` as the default command.
  Run another server by naming its file: ``docker run -i IMAGE
  /servers/crash_server.py`` (see ``server_in_image``). A server added to
  tests/servers/ is in the image after the next tests/testbed.sh; a package
  it needs goes into tests/images/servers/requirements.txt.
- The same files run as plain local processes for the process runtime:
  ``local_server_command("echo_server.py")``.
- ``TIME_IMAGE`` runs mcp-server-time (tools ``get_current_time`` and
  ``convert_time``); ``PYBASE_IMAGE`` is the bare Python both are built on.
- All images run as user 65534 and work with a read-only root and no network.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

PYBASE_IMAGE: Final = "mcp-fleet-test/pybase:latest"
TIME_IMAGE: Final = "mcp-fleet-test/time:latest"
SERVERS_IMAGE: Final = "mcp-fleet-test/servers:latest"
ALL_IMAGES: Final = (PYBASE_IMAGE, TIME_IMAGE, SERVERS_IMAGE)

#: Label every test-bed image carries: the hash of the inputs it was built from.
INPUT_HASH_LABEL: Final = "mcp-fleet-testbed.input-hash"

TESTS_DIR: Final = Path(__file__).resolve().parent
TESTBED_SCRIPT: Final = TESTS_DIR / "testbed.sh"
#: tests/servers on the host; ``SERVERS_DIR_IN_IMAGE`` inside SERVERS_IMAGE.
SERVERS_DIR: Final = TESTS_DIR / "servers"
SERVERS_DIR_IN_IMAGE: Final = "/servers"

#: ``docker run`` flags for a hardened stdio server: no network, read-only
#: root, no capabilities, no privilege gain; ``--init`` so a stop signal
#: reaches the server.
HARDENED_RUN_FLAGS: Final = (
    "--init",
    "--network",
    "none",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


def server_in_image(filename: str) -> str:
    """Path of a tests/servers file inside SERVERS_IMAGE (the container's argument)."""
    return f"{SERVERS_DIR_IN_IMAGE}/{filename}"


def local_server_command(filename: str) -> list[str]:
    """argv that runs a tests/servers file as a local process with this interpreter."""
    return [sys.executable, str(SERVERS_DIR / filename)]


def docker_run_args(image: str, *args: str) -> list[str]:
    """Arguments for the ``docker`` CLI that run IMAGE as a hardened stdio server."""
    return ["run", "-i", "--rm", *HARDENED_RUN_FLAGS, image, *args]


def hardened_container_options() -> dict[str, Any]:
    """``HARDENED_RUN_FLAGS`` as keyword arguments of the Docker SDK's ``containers.run``."""
    return {
        "init": True,
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
    }
