"""A server that fails at once: writes its reason to stderr and exits with code 3.

Tests use it to see how a runtime reports a server that never comes up
(exit code, last stderr lines, crash-loop backoff). It imports nothing from
the SDK so it dies within milliseconds, as a broken real server would.
"""

from __future__ import annotations

import sys

EXIT_CODE = 3
REASON = "crash_server: refusing to start (this server always fails)"

if __name__ == "__main__":
    sys.stderr.write(REASON + "\n")
    sys.stderr.flush()
    sys.exit(EXIT_CODE)
