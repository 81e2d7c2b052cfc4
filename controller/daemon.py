"""``oab-controller``: the reconcile daemon's entry point (a later issue implements it).

Until then the console script exists so packaging and ``--help`` work, and it fails loudly
(exit 2) instead of pretending to run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Print that the daemon is not implemented yet and return exit code 2."""
    del argv
    sys.stderr.write("oab-controller: not implemented yet\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
