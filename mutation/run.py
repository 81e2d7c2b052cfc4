"""``make mutate``: mutation testing of the safety-critical code with cosmic-ray.

Usage::

    python mutation/run.py [--package queue|leader|controller ...] [--workdir build/mutation]
                           [--limit N] [--report-only]

Why cosmic-ray (8.x) and not mutmut 3: the packages are namespace packages mapped by setuptools
``package-dir`` (``controller/`` imports as ``oab.controller``). mutmut 3 copies the tree into
``mutants/`` and switches mutants with a trampoline keyed by the *file*'s dotted path
(``controller.status.x_...``) but matched against the function's ``__module__`` at run time
(``oab.controller.core.status``), so its mutants are never selected here; it also runs the whole
suite first to map tests to functions (too slow on 2 cores). cosmic-ray edits the source file on
disk, runs any test command and restores it, so it works with any import system, and each package
gets its own few fast test files.

Design
------
- **Never in the worktree.** The tracked and untracked (not ignored) files are copied to
  ``WORKDIR/<package>/tree``; its ``.pp/oab/{controller,leader,queue}`` link to the copy's folders
  and go first on ``PYTHONPATH``, so the tests import the mutated copy (the editable install's
  finder comes after the path finder). Editing or testing the worktree meanwhile is safe.
- **One configuration per package**: ``mutation/<package>.toml`` holds the cosmic-ray settings
  (modules, the fast test command, the per-mutant timeout) and an ``[oab]`` table: ``scope``
  (qualified function names; only mutants inside them count, for ``controller/`` whose guards
  are a few functions of large modules) and the operator policy below.
- **Mutants that cannot change behaviour are not run** (each rule is a reason, not a taste):
  mutations inside annotations (``from __future__ import annotations``: never evaluated), in
  docstrings, "operator" swaps of the bare ``*`` of a signature, and binary-operator swaps to
  exotic operators (``x + 1`` -> ``x >> 1``: the
  ``+``/``-`` swap and ``*``/``/`` swap are kept; the other ten per operator find nothing the
  kept ones do not, and would multiply the run time).
- **Reviewed equivalents**: ``mutation/equivalent.md`` lists surviving mutants judged equivalent
  (module, the mutated source line, the operator, the reason). They are marked skipped, so the
  score counts them out, and the report lists them apart from the survivors.
- **Report**: ``WORKDIR/<package>/report.md`` and ``report.json`` (killed, survived,
  equivalent, timeouts, score = killed / (killed + survived), every survivor's diff). Exit 1
  when any survivor is left: kill it with a test or review it into ``equivalent.md``.

Time model: none (cosmic-ray's per-mutant timeout bounds a mutant that loops).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PACKAGES = ("queue", "leader", "controller")
EQUIVALENT = HERE / "equivalent.md"
#: Set in the tests' environment: ``tests/conftest.py`` then derandomizes Hypothesis.
MUTATION_ENV = "OAB_MUTATION"

#: Binary-operator swaps kept (original -> replacement); every other swap is not generated.
KEPT_SWAPS = {
    ("Add", "Sub"),
    ("Sub", "Add"),
    ("Mul", "Div"),
    ("Div", "Mul"),
    ("FloorDiv", "Mul"),
    ("Mod", "Add"),
    ("Pow", "Mul"),
    ("BitOr", "BitAnd"),
    ("BitAnd", "BitOr"),
}
_SWAP = re.compile(r"ReplaceBinaryOperator_(\w+?)_(\w+)$")


@dataclass(frozen=True)
class Equivalent:
    """One reviewed equivalent mutant (a row of ``equivalent.md``)."""

    module: str
    line: str
    mutated: str
    operator: str
    reason: str
    #: ``Class.function`` the line must be in (``path.py::Class.function`` in the module cell),
    #: for a line whose text also occurs elsewhere in the module with a killable mutant there;
    #: ``None``: every line of the module with this text.
    where: str | None = None


def read_equivalents(path: Path = EQUIVALENT) -> list[Equivalent]:
    """The rows of ``equivalent.md``: ``| module | `line` | `mutated line` | operator | reason |``
    (lines stripped; a ``|`` inside a line is written ``\\|``; the module cell may end in
    ``::Class.function`` to match only inside that function)."""
    out: list[Equivalent] = []
    for raw in path.read_text().splitlines():
        cells = [c.strip().replace("\x00", "|") for c in raw.replace("\\|", "\x00").split("|")]
        cells = cells[1:-1] if raw.strip().startswith("|") else cells
        module, _, where = cells[0].partition("::") if cells else ("", "", "")
        if len(cells) != 5 or not module.endswith(".py"):
            continue
        line, mutated = (c.strip("`") for c in cells[1:3])
        out.append(Equivalent(module, line, mutated, cells[3], cells[4], where or None))
    return out


def enclosing(tree: ast.AST, line: int) -> str:
    """Qualified name (``Class.function``) of the innermost class or function whose text,
    decorators included, holds ``line`` (1-based); ``""`` at module level."""
    found = ""

    def visit(node: ast.AST, prefix: str) -> None:
        nonlocal found
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                if first <= line <= (child.end_lineno or child.lineno):
                    found = f"{prefix}{child.name}"
                    visit(child, f"{found}.")

    visit(tree, "")
    return found


def mutated_line(source: str, operator: str, occurrence: int, row: int) -> str:
    """Line ``row`` (1-based, stripped) of ``source`` with one cosmic-ray mutant applied."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    mutated = mutate_code(source, get_operator(operator)(), occurrence)
    return mutated.splitlines()[row - 1].strip() if mutated else ""


def _annotation_spans(tree: ast.AST) -> Iterator[tuple[int, int, int, int]]:
    """(start line, start col, end line, end col) of every annotation and docstring."""
    for node in ast.walk(tree):
        notes: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            notes += [a.annotation for a in every if a is not None]
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                notes.append(body[0].value)
        for note in notes:
            if note is not None and note.end_lineno is not None and note.end_col_offset is not None:
                yield note.lineno, note.col_offset, note.end_lineno, note.end_col_offset


def _header_spans(tree: ast.AST) -> Iterator[tuple[int, int, int, int]]:
    """Every ``def`` header: a bare ``*`` there (keyword-only marker) is no operator to swap."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            yield node.lineno, node.col_offset, first.lineno, first.col_offset


def _function_spans(tree: ast.AST, names: Iterable[str]) -> list[tuple[int, int]]:
    """Line ranges of the qualified functions ``names`` (``Class.method`` or ``function``)."""
    wanted = set(names)
    spans: list[tuple[int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                if name in wanted and child.end_lineno is not None:
                    spans.append((child.lineno, child.end_lineno))
                visit(child, f"{name}.")

    visit(tree, "")
    return spans


def _inside(pos: tuple[int, int], span: tuple[int, int, int, int]) -> bool:
    return (span[0], span[1]) <= pos < (span[2], span[3])


def classify(
    *,
    module: str,
    source: str,
    operator: str,
    start: tuple[int, int],
    scope: Sequence[str],
    equivalents: Sequence[Equivalent],
    occurrence: int = 0,
) -> str | None:
    """Why a mutant is not run (``"out-of-scope"``, ``"annotation"``, ``"operator"``,
    ``"equivalent"``), or ``None`` to run it. ``start`` is (1-based line, 0-based column)."""
    tree = ast.parse(source)
    name = operator.rsplit("/", 1)[-1]
    swap = _SWAP.match(name)
    if swap and (swap.group(1), swap.group(2)) not in KEPT_SWAPS:
        return "operator"
    if scope and not any(a <= start[0] <= b for a, b in _function_spans(tree, scope)):
        return "out-of-scope"
    if any(_inside(start, span) for span in _annotation_spans(tree)):
        return "annotation"
    if swap and any(_inside(start, span) for span in _header_spans(tree)):
        return "signature"
    text = source.splitlines()[start[0] - 1].strip()
    candidates = [
        eq
        for eq in equivalents
        if (eq.module, eq.line, eq.operator) == (module, text, name)
        and (eq.where is None or eq.where == enclosing(tree, start[0]))
    ]
    if candidates:
        after = mutated_line(source, operator, occurrence, start[0])
        if any(eq.mutated == after for eq in candidates):
            return "equivalent"
    return None


# ------------------------------------------------------------------------------------ running
def copy_tree(dest: Path) -> None:
    """Copy the worktree's tracked and unignored files to ``dest`` with the import link tree."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the worktree but still in the index
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    links = dest / ".pp" / "oab"
    links.mkdir(parents=True)
    for pkg in PACKAGES:
        (links / pkg).symlink_to(dest / pkg, target_is_directory=True)


def load_config(package: str) -> dict[str, Any]:
    """``mutation/<package>.toml``."""
    with (HERE / f"{package}.toml").open("rb") as fh:
        return tomllib.load(fh)


def run_env(tree: Path) -> dict[str, str]:
    """The environment of cosmic-ray and the tests it runs: the copy's import links first, no
    emulator inherited, and reproducible verdicts: no cached bytecode (a mutant as long as the
    original, written within the same second, would load the previous mutant's ``.pyc``) and no
    random Hypothesis examples (``tests/conftest.py`` loads a derandomized profile)."""
    return {
        **{k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"},
        "PYTHONPATH": str(tree / ".pp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        MUTATION_ENV: "1",
    }


def _cr(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", *args], cwd=cwd, env=env, check=True)


def mark_skipped(
    session: Path, tree: Path, config: dict[str, Any], *, limit: int | None
) -> dict[str, int]:
    """Mark every mutant that is not to be run as skipped; returns counts per reason."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    scope = config.get("oab", {}).get("scope", [])
    equivalents = read_equivalents()
    counts: dict[str, int] = {}
    sources: dict[str, str] = {}
    kept = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.work_items):
            (mutation,) = item.mutations
            module = str(mutation.module_path)
            if module not in sources:
                sources[module] = (tree / module).read_text()
            why = classify(
                module=module,
                source=sources[module],
                operator=mutation.operator_name,
                start=tuple(mutation.start_pos),  # type: ignore[arg-type]
                scope=scope,
                equivalents=equivalents,
                occurrence=mutation.occurrence,
            )
            if why is None and limit is not None and kept >= limit:
                why = "limit"
            if why is None:
                kept += 1
                continue
            counts[why] = counts.get(why, 0) + 1
            db.set_result(
                item.job_id,
                WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=why),
            )
    counts["run"] = kept
    return counts


def report(session: Path, out: Path, skipped: dict[str, int]) -> dict[str, Any]:
    """Summarise a finished session into ``report.json`` / ``report.md``; returns the summary."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    killed = 0
    timeouts = 0
    survivors: list[dict[str, Any]] = []
    incompetent = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            (mutation,) = item.mutations
            if result.worker_outcome == WorkerOutcome.ABNORMAL:
                timeouts += 1  # the test run did not finish: counted as killed
                killed += 1
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                incompetent += 1
            elif result.test_outcome == TestOutcome.KILLED:
                killed += 1
            else:
                survivors.append(
                    {
                        "module": str(mutation.module_path),
                        "line": mutation.start_pos[0],
                        "operator": mutation.operator_name.rsplit("/", 1)[-1],
                        "diff": result.diff or "",
                    }
                )
        pending = db.num_work_items - db.num_results
    total = killed + len(survivors)
    summary = {
        "killed": killed,
        "timeouts": timeouts,
        "survived": len(survivors),
        "incompetent": incompetent,
        "pending": pending,
        "not_run": skipped,
        "score": round(killed / total, 4) if total else None,
        "survivors": survivors,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# Mutation report: {out.name}",
        "",
        f"killed {killed} (of which timeouts {timeouts}), survived {len(survivors)}, "
        f"score {summary['score']}; not run: {skipped}",
        "",
    ]
    for s in survivors:
        lines += [f"## {s['module']}:{s['line']} {s['operator']}", "", "```diff", s["diff"], "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def _reset_survivors(session: Path, tree: Path, skipped: dict[str, int]) -> None:
    """Mark survivors now reviewed as equivalent, forget the other survivors' results so that
    ``exec`` runs them again, and defer the mutants never run (restored by :func:`_undefer`)."""
    import sqlite3

    equivalents = read_equivalents()
    with sqlite3.connect(session) as db:
        db.execute(
            "INSERT INTO work_results (job_id, worker_outcome, output) SELECT job_id, "
            "'SKIPPED', 'deferred' FROM work_items WHERE job_id NOT IN "
            "(SELECT job_id FROM work_results)"
        )
        survivors = db.execute(
            "SELECT m.job_id, m.module_path, m.operator_name, m.occurrence, m.start_pos_row, "
            "m.start_pos_col FROM work_results r JOIN mutation_specs m ON m.job_id = r.job_id "
            "WHERE r.test_outcome = 'SURVIVED'"
        ).fetchall()
        for job, module, operator, occurrence, row, col in survivors:
            why = classify(
                module=module,
                source=(tree / module).read_text(),
                operator=operator,
                start=(row, col),
                scope=(),
                equivalents=equivalents,
                occurrence=occurrence,
            )
            if why in ("equivalent", "signature"):
                db.execute(
                    "UPDATE work_results SET worker_outcome = 'SKIPPED', test_outcome = NULL, "
                    "output = ? WHERE job_id = ?",
                    (why, job),
                )
                skipped[why] = skipped.get(why, 0) + 1
                skipped["run"] = skipped.get("run", 0) - 1
            else:
                db.execute("DELETE FROM work_results WHERE job_id = ?", (job,))


def _undefer(session: Path) -> None:
    import sqlite3

    with sqlite3.connect(session) as db:
        db.execute("DELETE FROM work_results WHERE output = 'deferred'")


def run_package(
    package: str,
    *,
    tree: Path,
    workdir: Path,
    limit: int | None,
    report_only: bool,
    rerun: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Init, filter, execute and report one package's mutants."""
    config = load_config(package)
    out = workdir / package
    out.mkdir(parents=True, exist_ok=True)
    session = out / "session.sqlite"
    cfg = out / "cosmic-ray.toml"
    env = run_env(tree)
    skipped_path = out / "not-run.json"
    if (rerun or resume) and session.exists():
        if rerun:
            # Survivors only, against the current tests (after a test was added to kill them).
            skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
            _reset_survivors(session, tree, skipped)
            skipped_path.write_text(json.dumps(skipped))
        try:
            # A fresh copy of the tree: an interrupted run may have left a mutant on disk.
            _cr(["exec", str(cfg), str(session)], cwd=tree, env=env)
        finally:
            _undefer(session)
    elif not report_only:
        import tomli_w

        settings = dict(config["cosmic-ray"])
        # The test command runs with this interpreter (the project's virtual environment).
        command = settings["test-command"]
        settings["test-command"] = re.sub(r"^python ", f"{sys.executable} ", command)
        cfg.write_text(tomli_w.dumps({"cosmic-ray": settings}))
        session.unlink(missing_ok=True)
        _cr(["init", str(cfg), str(session)], cwd=tree, env=env)
        skipped = mark_skipped(session, tree, config, limit=limit)
        skipped_path.write_text(json.dumps(skipped))
        print(f"mutate {package}: {skipped}", flush=True)
        _cr(["exec", str(cfg), str(session)], cwd=tree, env=env)
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    return report(session, out, skipped)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 1 when a mutant survived (or a package is incomplete)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--package", action="append", choices=PACKAGES)
    p.add_argument("--workdir", default=str(ROOT / "build" / "mutation"))
    p.add_argument("--limit", type=int, default=None, help="run at most N mutants per package")
    p.add_argument("--report-only", action="store_true", help="summarise the last sessions")
    p.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="run the last sessions' survivors again against the current tests",
    )
    p.add_argument(
        "--resume", action="store_true", help="finish the last sessions' pending mutants"
    )
    args = p.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    failed = False
    for package in args.package or PACKAGES:
        # One copy per package, so that runs of different packages may overlap.
        tree = workdir / package / "tree"
        if not args.report_only:
            copy_tree(tree)
        summary = run_package(
            package,
            tree=tree,
            workdir=workdir,
            limit=args.limit,
            report_only=args.report_only,
            rerun=args.rerun_survivors,
            resume=args.resume,
        )
        print(
            f"mutate {package}: score {summary['score']} (killed {summary['killed']}, "
            f"survived {summary['survived']}, pending {summary['pending']}); "
            f"report {workdir / package / 'report.md'}",
            flush=True,
        )
        failed = failed or bool(summary["survived"]) or bool(summary["pending"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
