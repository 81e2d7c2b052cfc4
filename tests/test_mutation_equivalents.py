"""``mutation/run.py``'s reviewed-equivalent rows: what a row matches.

A row of ``mutation/equivalent.md`` names a module, a source line and its mutated form; it must
match the reviewed mutant and nothing killable. These tests pin the matching rules: a row
matches every line of the module with that text, unless its module cell names the function
(``path.py::Class.function``), and then only the line inside that function.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "mutation" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_run", module)
    spec.loader.exec_module(module)
    return module


run = _run_module()

SOURCE = textwrap.dedent(
    """\
    class Store(Protocol):
        @property
        def name(self) -> str:
            ...


    class Real:
        @property
        def name(self) -> str:
            return "x"
    """
)
REMOVE = "core/RemoveDecorator"


def _classify(equivalents: list[object], line: int) -> str | None:
    result: str | None = run.classify(
        module="pkg/lease.py",
        source=SOURCE,
        operator=REMOVE,
        start=(line, 4),
        scope=(),
        equivalents=equivalents,
        occurrence=0 if line == 2 else 1,
    )
    return result


def _rows(tmp_path: Path, module_cell: str) -> list[object]:
    table = tmp_path / "equivalent.md"
    table.write_text(
        "| module | line | mutated line | operator | reason |\n|---|---|---|---|---|\n"
        f"| {module_cell} | `@property` | `def name(self) -> str:` | RemoveDecorator | typing |\n"
    )
    rows: list[object] = run.read_equivalents(table)
    return rows


def test_a_row_with_a_function_matches_only_the_line_inside_it(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "pkg/lease.py::Store.name")
    assert _classify(rows, 2) == "equivalent"
    assert _classify(rows, 8) is None  # the same text in Real.name runs


def test_a_row_without_a_function_matches_every_line_with_its_text(tmp_path: Path) -> None:
    rows = _rows(tmp_path, "pkg/lease.py")
    assert _classify(rows, 2) == "equivalent"
    assert _classify(rows, 8) == "equivalent"


def test_the_enclosing_function_counts_its_decorators() -> None:
    tree = ast.parse(SOURCE)
    assert run.enclosing(tree, 2) == "Store.name"
    assert run.enclosing(tree, 4) == "Store.name"
    assert run.enclosing(tree, 8) == "Real.name"
    assert run.enclosing(tree, 6) == ""


def _mutants_matching(row: Any, cache: dict[tuple[str, str], list[Any]]) -> int:
    from cosmic_ray.ast import Visitor, get_ast
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    source = (ROOT / row.module).read_text()
    lines = source.splitlines()
    operator = get_operator(f"core/{row.operator}")()
    key = (row.module, row.operator)
    if key not in cache:
        positions: list[tuple[int, int]] = []

        class Positions(Visitor):
            def visit(self, node: Any) -> Any:
                positions.extend(start for start, _ in operator.mutation_positions(node))
                return node

        Positions().walk(get_ast(source))
        cache[key] = positions
    tree = ast.parse(source)
    hits = 0
    for occurrence, (line, _col) in enumerate(cache[key]):
        if lines[line - 1].strip() != row.line:
            continue
        if row.where is not None and run.enclosing(tree, line) != row.where:
            continue
        mutated = mutate_code(source, operator, occurrence)
        if mutated and mutated.splitlines()[line - 1].strip() == row.mutated:
            hits += 1
    return hits


def test_every_reviewed_row_matches_a_mutant_of_the_current_code() -> None:
    # A row whose line was rewritten matches nothing (stale: its mutant is gone or changed);
    # a row matching several mutants must say so, having reviewed each.
    cache: dict[tuple[str, str], list[Any]] = {}
    stale, unsaid = [], []
    for row in run.read_equivalents():
        hits = _mutants_matching(row, cache)
        if hits == 0:
            stale.append(f"{row.module}: {row.line}")
        elif hits > 1 and "Matches" not in row.reason:
            unsaid.append(f"{row.module}: {row.line} ({hits} mutants)")
    assert stale == []
    assert unsaid == []


def test_mutation_runs_cache_no_bytecode_and_draw_fixed_hypothesis_examples(
    tmp_path: Path,
) -> None:
    env = run.run_env(tmp_path)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONPATH"] == str(tmp_path / ".pp")
    assert "AWS_ENDPOINT_URL" not in env
    probe = (
        "import conftest\n"
        "from hypothesis import settings\n"
        "print(settings.default.derandomize, settings.default.database)\n"
    )
    # Hypothesis derandomizes on its own on CI (its "ci" profile): compare outside CI.
    import hypothesis._settings

    ci_vars = getattr(hypothesis._settings, "_CI_VARS", {"CI": None})
    local = {k: v for k, v in os.environ.items() if k not in ci_vars}
    outputs = []
    for flag in (env[run.MUTATION_ENV], "0"):
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env={**local, run.MUTATION_ENV: flag, "PYTHONPATH": str(ROOT / "tests")},
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append(done.stdout.split()[0])
    assert outputs == ["True", "False"]
