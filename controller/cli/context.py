"""What an ``oabctl`` command works with: arguments, settings, clients, output and streams.

Design
------
A command receives one :class:`Context`: parsed arguments, settings (flags > env >
``~/.oabctl/config`` profile, see :mod:`oab.controller.core.settings`), lazily built boto3 clients
(:func:`oab.controller.adapters.aws.make_client`; built once, only when a command needs AWS, so
``render`` and ``schema`` never touch it), the one state store over them (status, run log, change
records), the output format and the three streams.

Time model: ``wall_clock`` is injected (``AGE`` columns and stamps); nothing else reads a clock.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from oab.controller.cli import output as out
from oab.controller.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from oab.controller.adapters.statestore import StateStore

__all__ = ["Context"]


class Context:
    """What a command works with: arguments, settings, lazily built clients, output, streams."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        stdout: TextIO,
        stderr: TextIO,
        stdin: TextIO,
        env: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.env = env
        self.wall_clock = wall_clock
        self._clients: dict[str, Any] = {}
        self._state: StateStore | None = None

    @cached_property
    def settings(self) -> Settings:
        """Settings merged from flags > env > file profile (validated once)."""
        flags = {
            "profile": getattr(self.args, "profile", None),
            "region": getattr(self.args, "region", None),
            "bucket": getattr(self.args, "bucket", None),
            "table_prefix": getattr(self.args, "table_prefix", None),
            "cluster": getattr(self.args, "cluster", None),
            "endpoint": getattr(self.args, "endpoint", None),
        }
        config = getattr(self.args, "config", None)
        return load_settings(flags, env=self.env, path=Path(config) if config else None)

    @property
    def output(self) -> out.OutputFormat:
        """The ``-o`` format (table when the command has no ``-o``)."""
        return out.OutputFormat(getattr(self.args, "output", None) or "table")

    def client(self, service: str) -> Any:
        """A boto3 client for ``service``, built once per context."""
        if service not in self._clients:
            from oab.controller.adapters.aws import make_client, make_session

            if "session" not in self._clients:
                self._clients["session"] = make_session(
                    region=self.settings.region,
                    profile=self.settings.aws_profile,
                    principal="oabctl",
                    env=self.env,
                )
            self._clients[service] = make_client(
                self._clients["session"], service, endpoint_url=self.settings.endpoint
            )
        return self._clients[service]

    def state(self) -> StateStore:
        """The controller's state store (status, run log, change records) on the settings'
        tables, built once; its change log stamps records with ``wall_clock``."""
        if self._state is None:
            from oab.controller.adapters.changes import ChangeLog
            from oab.controller.adapters.models import bind_models
            from oab.controller.adapters.statestore import DynamoStateStore

            ddb, tables = self.client("dynamodb"), self.settings.tables
            changes = ChangeLog(ddb, tables.state, wall_clock=self.wall_clock)
            self._state = DynamoStateStore(bind_models(ddb, tables), changes=changes)
        return self._state

    def store(self) -> Any:
        """The desired-state store on the settings' bucket, recording change records."""
        from oab.controller.adapters.objectstore import S3ObjectStore
        from oab.controller.adapters.store import DesiredStateStore

        return DesiredStateStore(
            S3ObjectStore(self.client("s3"), self.settings.bucket),
            changes=self.state().changes,
            wall_clock=self.wall_clock,
        )

    def print(self, text: str) -> None:
        """Write a result line (or block) to stdout."""
        out.emit(text, self.stdout)

    def progress(self, message: str) -> None:
        """Progress for long work: stderr, never mixed into results."""
        self.stderr.write(message + "\n")
        self.stderr.flush()
