"""Helpers every test folder shares: waiting, ports, a real ``mcp-fleet up``.

Import as ``support`` (tests/ is on the import path): ``from support import until``.
"""

from support.waiting import free_port, until, until_sync

__all__ = ["free_port", "until", "until_sync"]
