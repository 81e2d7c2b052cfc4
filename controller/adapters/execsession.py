"""ECS Exec for one agent: its running task, an ``ExecuteCommand`` session, the plugin's arguments.

Design
------
``oabctl exec`` and ``oabctl cp`` need three things from ECS, all here so the commands hold no
ECS call of their own: :func:`find_target` picks the agent's running task (``ListTasks`` on the
agent's service, then ``DescribeTasks``: the newest ``RUNNING`` task) and checks it was started
with ECS Exec and holds the container; :func:`open_session` calls ``ExecuteCommand``
(``interactive`` is the only mode ECS supports); :func:`plugin_invocation` builds the Session
Manager plugin's command line and environment exactly as the AWS CLI v2 does
(``awscli/customizations/ecs/executecommand.py``): the session JSON, the region,
``StartSession``, the profile (or ``""``), the request JSON
``{"Target": "ecs:<cluster>_<task id>_<runtime id>"}`` and the ECS endpoint URL. A plugin newer
than :data:`LAST_PLUGIN_VERSION_WITHOUT_ENV_VAR` gets the session JSON in the environment
variable :data:`SESSION_ENV` and that variable's name as its first argument, so the token never
appears in a process listing; an older (or unparsable) version gets the JSON itself.

Invariants
- The session's ``tokenValue`` and ``streamUrl`` are credentials: :class:`Session` never shows
  them (``repr`` names only the session id) and registers both with
  :func:`oab.controller.base.redact.register_secret`, so a scrubbed log or error cannot carry
  them. They leave the process only towards the plugin, as with the AWS CLI.
- A task started before ``enableExecuteCommand`` was switched on cannot be exec'd into (ECS
  applies the setting at launch): :class:`ExecNotEnabled`, not a session that fails later.

Time model: none; one ListTasks, one DescribeTasks and one ExecuteCommand per command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.base.errors import OabError, classify_aws
from oab.controller.base.redact import register_secret

__all__ = [
    "LAST_PLUGIN_VERSION_WITHOUT_ENV_VAR",
    "SESSION_ENV",
    "ExecError",
    "ExecNotEnabled",
    "ExecTarget",
    "NoRunningTask",
    "Session",
    "find_target",
    "open_session",
    "plugin_invocation",
    "plugin_takes_env",
]

#: The AWS CLI's constants: newer plugins read the session from this variable.
LAST_PLUGIN_VERSION_WITHOUT_ENV_VAR = "1.2.497.0"
SESSION_ENV = "AWS_SSM_START_SESSION_RESPONSE"


class ExecError(OabError):
    """The agent cannot be exec'd into as asked (exit 1): the message says why and the fix."""

    retryable = False
    reason = "ExecError"


class ExecNotEnabled(ExecError):
    """ECS Exec is off for the agent or its running task."""

    reason = "ExecNotEnabled"


class NoRunningTask(ExecError):
    """The agent's service runs no task right now."""

    reason = "NoRunningTask"


@dataclass(frozen=True, kw_only=True)
class ExecTarget:
    """One container of the agent's running task."""

    cluster: str
    task_arn: str
    container: str
    runtime_id: str

    @property
    def task_id(self) -> str:
        """The task id (the last part of its ARN)."""
        return self.task_arn.rsplit("/", 1)[-1]

    @property
    def ssm_target(self) -> str:
        """The Session Manager target of this container, as the AWS CLI builds it."""
        return f"ecs:{self.cluster}_{self.task_id}_{self.runtime_id}"


@dataclass(frozen=True, kw_only=True)
class Session:
    """An ``ExecuteCommand`` session; ``data`` (with the token) is never shown."""

    session_id: str
    data: Mapping[str, Any] = field(repr=False)

    def json(self) -> str:
        """The session object as the plugin's first argument expects it."""
        return json.dumps(dict(self.data))


def _call(operation: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise classify_aws(exc, operation=operation) from exc
    return result


def find_target(ecs: Any, *, cluster: str, service: str, container: str, agent: str) -> ExecTarget:
    """The container ``container`` of ``service``'s newest running task.

    Raises :class:`NoRunningTask`, :class:`ExecNotEnabled`, :class:`ExecError` (no such
    container) or :class:`~oab.controller.base.errors.AwsError`.
    """
    arns = _call(
        "ListTasks",
        ecs.list_tasks,
        cluster=cluster,
        serviceName=service,
        desiredStatus="RUNNING",
    ).get("taskArns", [])
    tasks = []
    if arns:
        described = _call("DescribeTasks", ecs.describe_tasks, cluster=cluster, tasks=arns[:100])
        tasks = [t for t in described.get("tasks", []) if t.get("lastStatus") == "RUNNING"]
    if not tasks:
        namespace, _, name = agent.partition("/")
        raise NoRunningTask(
            f"agent {agent} has no running task (service {service}): "
            f"see `oabctl describe {name} -n {namespace}`"
        )
    task = max(tasks, key=lambda t: str(t.get("startedAt") or t.get("createdAt") or ""))
    if not task.get("enableExecuteCommand"):
        raise ExecNotEnabled(
            f"the running task of agent {agent} was started without ECS Exec: wait for the "
            "rollout that turns it on to finish (`oabctl wait`), or set spec.exec: true and apply"
        )
    containers = {str(c.get("name")): c for c in task.get("containers", [])}
    found = containers.get(container)
    if found is None:
        raise ExecError(
            f"agent {agent} has no container {container!r}: use -c with one of "
            + ", ".join(sorted(containers))
        )
    runtime_id = str(found.get("runtimeId") or "")
    if not runtime_id or found.get("lastStatus") != "RUNNING":
        raise NoRunningTask(f"container {container} of agent {agent} is not running")
    return ExecTarget(
        cluster=cluster, task_arn=str(task["taskArn"]), container=container, runtime_id=runtime_id
    )


def open_session(ecs: Any, target: ExecTarget, *, command: str) -> Session:
    """``ExecuteCommand`` on ``target``; the token and stream URL are registered as secrets.

    An ``InvalidParameterException`` (exec not enabled, agent not running) is an
    :class:`ExecNotEnabled` carrying ECS's message.
    """
    try:
        resp = ecs.execute_command(
            cluster=target.cluster,
            task=target.task_arn,
            container=target.container,
            interactive=True,
            command=command,
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "InvalidParameterException":
            message = exc.response.get("Error", {}).get("Message", "")
            raise ExecNotEnabled(f"ECS refused ExecuteCommand: {message}") from exc
        raise classify_aws(exc, operation="ExecuteCommand") from exc
    except BotoCoreError as exc:
        raise classify_aws(exc, operation="ExecuteCommand") from exc
    data = dict(resp.get("session") or {})
    for key in ("tokenValue", "streamUrl"):
        if data.get(key):
            register_secret(str(data[key]))
    session_id = str(data.get("sessionId") or "")
    if not session_id:
        raise ExecError("ECS answered ExecuteCommand without a session")
    return Session(session_id=session_id, data=data)


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        return None


def plugin_takes_env(version: str) -> bool:
    """Whether a plugin of ``version`` (its ``--version`` output) reads :data:`SESSION_ENV`."""
    found = _version(version)
    last = _version(LAST_PLUGIN_VERSION_WITHOUT_ENV_VAR)
    return found is not None and last is not None and found > last


def plugin_invocation(
    plugin: str,
    session: Session,
    target: ExecTarget,
    *,
    version: str,
    region: str,
    profile: str | None,
    endpoint_url: str,
) -> tuple[list[str], dict[str, str]]:
    """The plugin's command line and the variables to add to its environment (AWS CLI v2's)."""
    extra: dict[str, str] = {}
    first = session.json()
    if plugin_takes_env(version):
        extra[SESSION_ENV] = first
        first = SESSION_ENV
    argv = [
        plugin,
        first,
        region,
        "StartSession",
        profile or "",
        json.dumps({"Target": target.ssm_target}),
        endpoint_url,
    ]
    return argv, extra
