"""What a leader or queue test sees of the suite's one emulator, as a type.

``conftest.py`` starts the emulator once per session (``oab.controller.testing.local_aws``) and
hands every integration test an ``oab.controller.testing.AWS`` through the ``aws`` fixture. The
leader's and the queue's tests type that fixture with :class:`Account` so that they import
nothing of ``oab.controller``, as their packages never do: their doubles come from
``oab.leader.testing`` and ``oab.queue.testing``. (Importable because ``pytest``'s ``pythonpath``
holds ``tests/``.)
"""

from __future__ import annotations

from typing import Any, Protocol


class Tables(Protocol):
    """The control-plane table names (the leader's tests use ``lease`` and ``state``)."""

    @property
    def lease(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def runlog(self) -> str: ...


class Emulator(Protocol):
    """The emulator process: its endpoint and the environment that points clients at it."""

    @property
    def endpoint(self) -> str: ...
    def env(self) -> dict[str, str]: ...


class Account(Protocol):
    """An empty emulated account with the tables created (reset before each test)."""

    @property
    def emulator(self) -> Emulator: ...
    @property
    def session(self) -> Any: ...
    @property
    def tables(self) -> Tables: ...
    def client(self, service: str) -> Any: ...
