"""``oabctl local up``: the embedded local AWS emulator, initialised, until Ctrl-C.

A plugin of ``oabctl`` (entry point ``oabctl.commands: local`` in pyproject.toml): the CLI loads
it by that name, so the product's packages never import the local tooling.

Time model: polls the emulator process every 0.5 s while it runs.
"""

from __future__ import annotations

import argparse
import os
import time

from oab.controller.base.errors import OabError
from oab.controller.cli.context import Context
from oab.controller.cli.init import init_command
from oab.controller.cli.registry import EXIT_INFRA, EXIT_OK, Command, command

__all__ = ["COMMANDS", "LOCAL_DEFAULT_PORT", "LocalAwsError"]


class LocalAwsError(OabError):
    """The embedded emulator did not start (port taken, moto missing): exit 3."""

    retryable = True
    reason = "LocalAwsUnavailable"


LOCAL_DEFAULT_PORT = 4566


def _configure_local(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["up"], help="up: start the embedded local AWS and init it")
    p.add_argument("--port", type=int, default=LOCAL_DEFAULT_PORT, help="port (default 4566)")
    p.add_argument(
        "--no-dataplane",
        action="store_true",
        help="do not simulate ECS tasks (by default deployments progress and tasks run)",
    )


@command("local", help="run the embedded local AWS emulator", configure=_configure_local)
def _local(ctx: Context) -> int:
    from oab.controller.local.emulator import LOCAL_ENV, start

    ctx.progress(f"starting local AWS on 127.0.0.1:{ctx.args.port} ...")
    try:
        emulator = start(port=ctx.args.port, dataplane=not ctx.args.no_dataplane)
    except RuntimeError as exc:
        raise LocalAwsError(f"cannot start local AWS on port {ctx.args.port}: {exc}") from exc
    try:
        # This process only talks to the emulator from here on: give boto3 its dummy credentials.
        emulator.apply_env()
        env = {**dict(os.environ if ctx.env is None else ctx.env), **emulator.env()}
        ctx.args.endpoint = emulator.endpoint
        ctx.env = env
        ctx.__dict__.pop("settings", None)
        code = init_command(ctx)
        if code != EXIT_OK:
            return code
        ctx.print("# local AWS is up; point oabctl and boto3 at it with:")
        for key, value in {**LOCAL_ENV, "AWS_ENDPOINT_URL": emulator.endpoint}.items():
            ctx.print(f"export {key}={value}")
        ctx.stdout.flush()
        ctx.progress("press Ctrl-C to stop")
        process = emulator.process
        while process is not None and process.poll() is None:
            time.sleep(0.5)
        ctx.progress("local AWS exited")
        return EXIT_INFRA
    except KeyboardInterrupt:
        ctx.progress("stopping local AWS")
        return EXIT_OK
    finally:
        emulator.stop()


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_local,)
