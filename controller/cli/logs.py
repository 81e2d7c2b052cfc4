"""``oabctl logs``: an agent's CloudWatch log lines, once or followed.

Listed in ``COMMANDS`` (offered by
:data:`oab.controller.cli.main.GROUPS`); exit 0, 2 usage, 3 AWS.

Design: :class:`LogTail` reads the agent's streams incrementally and is tested on its own; the
command only chooses the streams (one container's, or ``--all-containers``), the start
(``--since``) and how many first lines to show (``--tail``), then prints. A log group that does
not exist yet reads as no streams (the group is created on the first agent's first line).

Invariant: ``--follow`` never prints an event twice, though CloudWatch's ``startTime`` is
inclusive (the cursor keeps the ids seen at its timestamp).

Time model: ``--since`` is measured back from the context's injected wall clock; the follow
loop sleeps ``--poll-interval`` between polls.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from oab.controller.cli.common import add_namespace, parse_duration
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, UsageError, command

__all__ = ["COMMANDS", "LogLine", "LogTail"]


@dataclass(frozen=True)
class LogLine:
    """One log event of an agent container."""

    timestamp_ms: int
    stream: str
    message: str
    event_id: str


@dataclass
class LogTail:
    """Reads an agent's CloudWatch log streams incrementally (``logs`` and ``logs --follow``).

    ``prefix`` selects the streams (``{ns}/{name}/`` or ``{ns}/{name}/{container}/``; awslogs
    names them ``prefix/container/task-id``). Each :meth:`poll` re-lists the streams (tasks come
    and go), reads every event from the cursor on (following ``nextToken``), and returns only
    events not returned before: the cursor is the newest timestamp seen and the ids seen at that
    timestamp, since CloudWatch's ``startTime`` is inclusive.
    """

    client: Any
    group: str
    prefix: str
    start_ms: int = 0
    #: CloudWatch accepts at most 100 stream names per FilterLogEvents request.
    max_streams: int = 100
    _seen_at_cursor: set[str] = field(default_factory=set)

    def streams(self) -> list[str]:
        """Stream names under the prefix, most recently written first (at most max_streams)."""
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"logGroupName": self.group, "logStreamNamePrefix": self.prefix}
        try:
            while True:
                resp = self.client.describe_log_streams(**kwargs)
                found += resp.get("logStreams", [])
                if not resp.get("nextToken"):
                    break
                kwargs["nextToken"] = resp["nextToken"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []  # no agent has logged yet: the group is created on first use
            raise
        found.sort(
            key=lambda s: s.get("lastEventTimestamp") or s.get("creationTime") or 0, reverse=True
        )
        return [s["logStreamName"] for s in found[: self.max_streams]]

    def poll(self) -> list[LogLine]:
        """Events since the last poll, oldest first."""
        names = self.streams()
        if not names:
            return []
        kwargs: dict[str, Any] = {
            "logGroupName": self.group,
            "logStreamNames": names,
            "startTime": self.start_ms,
        }
        events: list[LogLine] = []
        while True:
            resp = self.client.filter_log_events(**kwargs)
            for e in resp.get("events", []):
                line = LogLine(
                    int(e["timestamp"]), e.get("logStreamName", ""), e["message"], e["eventId"]
                )
                if line.timestamp_ms == self.start_ms and line.event_id in self._seen_at_cursor:
                    continue
                events.append(line)
            token = resp.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                break
            kwargs["nextToken"] = token
        events.sort(key=lambda e: e.timestamp_ms)  # stable: per-stream order is kept
        if events:
            newest = events[-1].timestamp_ms
            if newest != self.start_ms:
                self._seen_at_cursor = set()
            self.start_ms = newest
            self._seen_at_cursor |= {e.event_id for e in events if e.timestamp_ms == newest}
        return events


def _configure_logs(p: argparse.ArgumentParser) -> None:
    from oab.controller.base.names import AGENT_LOG_GROUP
    from oab.controller.base.taskcontract import AGENT_CONTAINER, INIT_CONTAINER, SIDECAR_CONTAINER

    p.add_argument("name", metavar="NAME", help="agent name")
    add_namespace(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--since", default=None, help="only lines newer than this (e.g. 10m, 1h)")
    p.add_argument("--tail", type=int, default=-1, help="lines to show first (-1: all)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-c",
        "--container",
        choices=[AGENT_CONTAINER, INIT_CONTAINER, SIDECAR_CONTAINER],
        default=AGENT_CONTAINER,
        help=f"container (default {AGENT_CONTAINER})",
    )
    group.add_argument("--all-containers", action="store_true", help="every container's lines")
    p.add_argument("--prefix", action="store_true", help="prefix lines with container/task id")
    p.add_argument("--log-group", default=AGENT_LOG_GROUP, help="CloudWatch log group")
    p.add_argument("--poll-interval", default="1s", help="how often --follow polls (default 1s)")


@command("logs", help="print an agent's CloudWatch log lines", configure=_configure_logs)
def _logs(ctx: Context) -> int:
    args = ctx.args
    if args.tail < -1:
        raise UsageError("--tail must be -1 (all) or >= 0")
    interval = parse_duration(args.poll_interval)
    agent_prefix = f"{args.namespace}/{args.name}/"
    prefix = agent_prefix if args.all_containers else f"{agent_prefix}{args.container}/"
    start_ms = 0
    if args.since is not None:
        start_ms = int((ctx.wall_clock() - parse_duration(args.since)) * 1000)
    tail = LogTail(ctx.client("logs"), args.log_group, prefix, start_ms=start_ms)

    def emit(lines: Sequence[LogLine]) -> None:
        for line in lines:
            source = line.stream.removeprefix(agent_prefix)
            text = line.message.rstrip("\n")
            ctx.stdout.write(f"[{source}] {text}\n" if args.prefix else text + "\n")
        ctx.stdout.flush()

    first = tail.poll()
    if not first and not tail.streams():
        ctx.stderr.write(f"No log streams under {args.log_group}:{prefix} yet.\n")
    if args.tail >= 0:
        first = first[len(first) - args.tail :] if args.tail else []
    emit(first)
    while args.follow:
        time.sleep(interval)
        emit(tail.poll())
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_logs,)
