"""ECS ``ExecuteCommand`` for the simulated data plane: sessions a fake Session Manager plugin uses.

Design
------
moto has no ``ExecuteCommand`` (HTTP 500, ``../shared/reference/local-aws.md``). The simulator
answers it the way ECS does, from the tasks it runs: the target task must be ``RUNNING``, have been
started with ``enableExecuteCommand`` (its service's setting when the task was launched, as in
ECS) and hold the named container. The answer carries a ``session`` object (``sessionId``,
``streamUrl``, ``tokenValue``) like ECS's; nothing listens at the stream URL.

What the remote side would do is left to whoever plays the Session Manager plugin: the control
API (``GET /_oab/dataplane/exec/<sessionId>``) returns the session's cluster, task, container,
runtime id and command, so a test's fake ``session-manager-plugin`` can run the command and
check that what it was handed matches what ECS answered. The token is never returned there.

Differences from real ECS
-------------------------
- The ExecuteCommandAgent is ``RUNNING`` as soon as its task is; no SSM agent, no KMS, no
  logging configuration (``executeCommandConfiguration`` of the cluster is ignored).
- Error texts follow ECS's ``InvalidParameterException`` messages as documented, not byte for
  byte; ``TargetNotConnectedException`` is not simulated.
- At most :data:`MAX_SESSIONS` sessions are remembered (the oldest are forgotten).

Invariants: runs under the emulator's global request lock; a session id is never reused.
Time model: none (ids are random; no expiry).

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections import OrderedDict
from typing import Any

__all__ = ["MAX_SESSIONS", "ExecSessions", "exec_fields"]

#: Sessions remembered for the control API (a bound: the emulator may run for days).
MAX_SESSIONS = 256

_NOT_ENABLED = (
    "The execute command failed because execute command was not enabled when the task was run "
    "or the execute command agent isn't running. Wait and try again or run a new task with "
    "execute command enabled and try again."
)


def exec_fields(task: Any, *, enabled: bool) -> None:
    """Give a new task and its containers what ECS shows for ECS Exec (runtime ids, agents)."""
    task.enable_execute_command = enabled
    for i, container in enumerate(task.containers):
        # Fargate runtime ids look like ``<task id>-<number>``.
        container.runtime_id = f"{task.id.replace('-', '')}-{1000000000 + i}"
        if enabled:
            container.managed_agents = [
                {"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"},
            ]


def _exec_task(backend: Any, cluster: str, task_ref: str) -> Any:
    """The task ``task_ref`` (ARN or id) of ``cluster``, refused as ECS refuses it: unknown, not
    RUNNING, or started without ``enableExecuteCommand``."""
    from moto.ecs.exceptions import InvalidParameterException

    task_id = task_ref.rsplit("/", maxsplit=1)[-1]
    task = next(
        (
            t
            for arn, t in backend.tasks.get(cluster, {}).items()
            if arn == task_ref or arn.split("/")[-1] == task_id
        ),
        None,
    )
    if task is None:
        raise InvalidParameterException(f"The specified task {task_ref} was not found.")
    if task.last_status != "RUNNING":
        raise InvalidParameterException(
            f"The execute command failed because the task is {task.last_status}."
        )
    if not getattr(task, "enable_execute_command", False):
        raise InvalidParameterException(_NOT_ENABLED)
    return task


def _exec_container(task: Any, name: str | None) -> Any:
    """The container ``name`` of ``task`` (the only one when ``None``), as ECS resolves it."""
    from moto.ecs.exceptions import InvalidParameterException

    if name is None and len(task.containers) != 1:
        raise InvalidParameterException(
            "The task has more than one container: specify the container name."
        )
    container = next((c for c in task.containers if name is None or c.name == name), None)
    if container is None:
        raise InvalidParameterException(f"The container {name} does not exist in the task.")
    return container


class ExecSessions:
    """The ``ExecuteCommand`` handler and the sessions it opened."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def execute_command(self, response: Any) -> Any:
        """Serve ECS ``ExecuteCommand`` from moto's task objects (see the module doc)."""
        from moto.core.responses import ActionResult
        from moto.ecs.exceptions import ClusterNotFoundException, InvalidParameterException

        backend = response.ecs_backend
        cluster_ref = str(response._get_param("cluster", "default"))
        cluster = backend.clusters.get(cluster_ref.rsplit("/", maxsplit=1)[-1])
        if cluster is None:
            raise ClusterNotFoundException
        task_ref = str(response._get_param("task") or "")
        if not task_ref:
            raise InvalidParameterException("task is required")
        if response._get_param("interactive") is not True:
            raise InvalidParameterException("Interactive is the only mode supported currently.")
        command = response._get_param("command")
        if not command:
            raise InvalidParameterException("command is required")
        task = _exec_task(backend, cluster.name, task_ref)
        container = _exec_container(task, response._get_param("container"))
        session_id = f"ecs-execute-command-{uuid.uuid4().hex[:17]}"
        region = cluster.region_name
        cell = base64.b64encode(b'{"stackId":"local","cellId":"local"}').decode()
        session = {
            "sessionId": session_id,
            "streamUrl": (
                f"wss://ssmmessages.{region}.amazonaws.com/v1/data-channel/{session_id}"
                f"?role=publish_subscribe&cell-number={cell}"
            ),
            "tokenValue": secrets.token_urlsafe(96),
        }
        self._sessions[session_id] = {
            "sessionId": session_id,
            "cluster": cluster.name,
            "clusterArn": cluster.arn,
            "taskArn": task.task_arn,
            "container": container.name,
            "runtimeId": container.runtime_id,
            "command": command,
            "region": region,
        }
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return ActionResult(
            {
                "clusterArn": cluster.arn,
                "containerArn": container.container_arn,
                "containerName": container.name,
                "interactive": True,
                "session": session,
                "taskArn": task.task_arn,
            }
        )

    def session(self, session_id: str) -> dict[str, Any] | None:
        """What a session was opened for (no token), or ``None`` when unknown or forgotten."""
        found = self._sessions.get(session_id)
        return dict(found) if found is not None else None

    def reset(self) -> None:
        """Forget every session (moto's account reset)."""
        self._sessions.clear()
