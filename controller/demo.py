"""``python -m oab.controller.demo`` (``make demo``): the foundation end to end, then exit.

Starts the serialized local AWS on a free port, then runs the same code paths a user runs:
``oabctl init``, ``oabctl apply -f examples/``, ``oabctl get -A`` and ``oabctl get fleets -A``,
and finally stops the emulator. Exits 0 when every step succeeded, otherwise with the failing
step's exit code. (The daemon issue extends it with the controller replicas.)

Time model: none of its own; the emulator process is stopped on every path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from oab.controller import cli
from oab.controller.localaws import start

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; ``argv[0]`` may name another manifest directory."""
    examples = Path(argv[0]) if argv else EXAMPLES
    sys.stderr.write("demo: starting local AWS ...\n")
    emulator = start()
    try:
        emulator.apply_env()  # boto3 reads credentials and the endpoint from os.environ
        # A user's own ~/.oabctl/config or OAB_* variables must not redirect the demo elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OAB_")}
        env["OABCTL_CONFIG"] = os.devnull
        steps = [
            ["init"],
            ["apply", "-f", str(examples)],
            ["get", "-A"],
            ["get", "fleets", "-A"],
        ]
        for step in steps:
            sys.stdout.write(f"\n$ oabctl {' '.join(step)}\n")
            sys.stdout.flush()
            code = cli.main(step, env=env)
            if code != cli.EXIT_OK:
                sys.stderr.write(f"demo: `oabctl {' '.join(step)}` failed with exit {code}\n")
                return code
        sys.stdout.write("\ndemo: done (local AWS stopped)\n")
        return cli.EXIT_OK
    finally:
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
