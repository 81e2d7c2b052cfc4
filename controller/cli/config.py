"""``oabctl config view``: the effective settings and the file they came from."""

from __future__ import annotations

import argparse

from oab.controller.cli import output as out
from oab.controller.cli.common import (
    add_output,
)
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_OK, Command, command


def _configure_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["view"], help="view: print the effective settings")
    add_output(p, ["yaml", "json"])


@command(
    "config",
    help="show the effective settings and where they came from",
    configure=_configure_config,
)
def _config(ctx: Context) -> int:
    from oab.controller.core.settings import config_path

    data = ctx.settings.model_dump(mode="json")
    data["configFile"] = str(
        ctx.args.config if getattr(ctx.args, "config", None) else config_path(ctx.env)
    )
    if ctx.output is out.OutputFormat.JSON:
        ctx.print(out.to_json(data))
    else:
        ctx.print(out.to_yaml(data).rstrip("\n"))
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_config,)
