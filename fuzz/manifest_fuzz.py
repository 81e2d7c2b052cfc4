"""Manifest fuzz: hostile documents through ``oabctl apply``, the store and the reconciler's read.

``make fuzz`` runs ``python fuzz/manifest_fuzz.py --count 10000 --seed 1 --quick``. The script
starts its own emulator (``oab.controller.local.emulator``), runs ``oabctl init``, then takes each
case of ``fuzz/manifest_corpus.py`` through the code paths that read manifests, in this process
(``oab.controller.cli.main.main``: exactly what the ``oabctl`` console script runs):

1. ``oabctl apply --dry-run -f CASE`` then ``oabctl apply -f CASE``. Checks: neither exits 70
   ("internal error": a traceback) nor raises; both exit 0 or 1 and agree; a rejection (and every
   dry run) leaves the bucket's versions and the state table exactly as they were; a rejection
   names its file (and line, where there is one) in lines of at most 4 KiB.
2. Accepted cases, further: ``oabctl diff -f CASE`` finds no difference (what was stored reads
   back the same), the reconciler's read (``StoreManifests.read``) of every stored agent returns
   it (an accepted manifest the controller would park is a wrong acceptance), ``oabctl render``
   succeeds, and every stored name and namespace is a DNS label. Then the bucket and table are
   put back as they were, so each case starts from the same state.
3. The raw bytes written straight into the bucket as a stored manifest: the reconciler's read
   returns a manifest or a ``TerminalError`` (parked), never anything else, and (one case in
   ten) ``oabctl get`` exits 0 or 1.

``--quick`` (``make fuzz`` and the test suite) skips ``diff``, ``render`` and ``get``, which
cost two clients and a full render each and triple the time of an accepted case.

Peak RSS is measured per case (Linux: ``/proc/self/clear_refs`` resets the high-water mark,
``VmHWM`` reads it; elsewhere the process maximum), with the whole process (Python, boto3, the
CLI, the harness) included, over the intake paths (both applies and the stored read); the
accepted-case checks are measured apart (``render`` of a 100-agent stream builds its whole
output, which is not intake). The report gives inputs, accepted and rejected cases by reason,
findings with the case index to replay (``--only INDEX``), the largest RSS for inputs under
1 MB and the time, and ends with one JSON line. Exit status 1 when any check failed.

One deviation from a fresh ``oabctl`` process per case, for speed only: botocore's service
models (read-only JSON) are parsed once per process instead of once per command
(:func:`share_botocore_models`); without it, building the CLI's two clients is 70 % of an
accepted case's time.

Time model: wall time is read only for the report.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifest_corpus import Case, case, shapes

from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.errors import TerminalError
from oab.controller.cli import main as cli
from oab.controller.cli import registry
from oab.controller.local.emulator import start
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.testing import AWS

MIB = 1 << 20
RSS_BUDGET_MB = 200.0
#: A rejection's message lines are bounded: input is never echoed back at length.
MAX_ERROR_LINE = 4_096
BUCKET = "oab-fuzz-control-plane"
STORED_KEY = "manifests/fuzz/stored.yaml"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

#: Rejection reasons, by a phrase of the loader's or the store's message (first match wins).
REASONS: tuple[tuple[str, str], ...] = (
    ("YAML nodes", "nodes cap"),
    ("fleet expands", "nodes cap (fleet)"),
    ("of text in values and keys", "characters cap"),
    ("nested deeper", "depth cap"),
    ("maximum nesting depth", "depth cap"),
    ("recursive alias", "recursive alias"),
    ("control character", "control character"),
    ("surrogate", "surrogate"),
    ("escape code", "surrogate"),
    ("not valid UTF", "encoding"),
    ("UTF-32", "encoding"),
    ("the YAML tag", "tag"),
    ("is read as YAML type", "not JSON type"),
    ("64-bit range", "integer range"),
    ("not a valid integer", "integer syntax"),
    ("not a valid number", "number syntax"),
    ("larger than", "file size cap"),
    ("limit per load", "load size cap"),
    ("would be stored as", "stored size cap"),
    ("duplicate key", "duplicate key"),
    ("mapping key must be text", "collection key"),
    ("not valid YAML", "YAML syntax"),
    ("also defined in", "identity clash"),
    ("both map to the ECS name", "identity clash"),
    ("a manifest must be a mapping", "not a mapping"),
)


def reason_of(stderr: str) -> str:
    """The rejection reason bucket of an ``oabctl apply`` error output."""
    for phrase, reason in REASONS:
        if phrase in stderr:
            return reason
    return "field validation"


def share_botocore_models() -> None:
    """Let every botocore session of this process share one model loader (and its cache)."""
    import functools

    import botocore.loaders
    import botocore.session

    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ measuring


def reset_peak() -> None:
    """Reset this process's RSS high-water mark (Linux); a no-op elsewhere."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _fresh_peak() -> None:
    # No gc.collect() here: with boto3's models loaded it costs ~0.2 s, more than a case. The
    # start-up heap is frozen instead (see run), so collections only walk a case's objects.
    reset_peak()


def peak_mb() -> float:
    """Peak RSS since the last :func:`reset_peak` (the process maximum where unsupported)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------- the runner


@dataclass
class Report:
    """What the run found; ``failed`` says whether any check failed."""

    inputs: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    shape_seconds: Counter[str] = field(default_factory=Counter)
    findings: list[dict[str, Any]] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    max_rss_mb: float = 0.0
    max_rss_under_1mb: float = 0.0
    max_rss_case: int | None = None
    max_rss_checks: float = 0.0
    largest_input: int = 0
    seconds: float = 0.0

    def find(self, item: Case, kind: str, detail: str) -> None:
        self.kinds[kind] += 1
        self.findings.append(
            {"index": item.index, "shape": item.shape, "kind": kind, "detail": detail[:400]}
        )

    def to_json(self) -> dict[str, Any]:
        """Everything, for a parent merging shards (``--jobs``)."""
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}

    def merge(self, shard: dict[str, Any]) -> None:
        """Add one shard's :meth:`to_json` to this report (maxima stay maxima)."""
        for name in ("rejected", "shapes", "shape_seconds", "kinds"):
            getattr(self, name).update(shard[name])
        self.inputs += shard["inputs"]
        self.accepted += shard["accepted"]
        self.findings.extend(shard["findings"])
        self.max_rss_mb = max(self.max_rss_mb, shard["max_rss_mb"])
        self.max_rss_checks = max(self.max_rss_checks, shard["max_rss_checks"])
        self.largest_input = max(self.largest_input, shard["largest_input"])
        if shard["max_rss_under_1mb"] > self.max_rss_under_1mb:
            self.max_rss_under_1mb = shard["max_rss_under_1mb"]
            self.max_rss_case = shard["max_rss_case"]

    @property
    def failed(self) -> bool:
        return bool(self.findings) or self.max_rss_under_1mb >= RSS_BUDGET_MB

    def summary(self, seed: int) -> dict[str, Any]:
        return {
            "benchmark": "manifest_fuzz",
            "seed": seed,
            "inputs": self.inputs,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "tracebacks": self.kinds["traceback"],
            "writes_on_rejection": self.kinds["write on rejection"],
            "findings": len(self.findings),
            "findings_by_kind": dict(sorted(self.kinds.items())),
            "max_rss_mb_under_1mb": round(self.max_rss_under_1mb, 1),
            "max_rss_mb": round(self.max_rss_mb, 1),
            "max_rss_case": self.max_rss_case,
            "max_rss_mb_accepted_checks": round(self.max_rss_checks, 1),
            "largest_input_bytes": self.largest_input,
            "seconds": round(self.seconds, 1),
        }


class Fuzz:
    """One emulator, one control plane, the cases one after another."""

    def __init__(self, emulator: Any, workdir: Path, *, quick: bool) -> None:
        self.quick = quick
        self.aws = AWS(emulator)
        self.s3 = self.aws.client("s3")
        self.ddb = self.aws.client("dynamodb")
        self.path = workdir / "case.yaml"
        self.env = {
            **os.environ,
            **emulator.env(),
            "OABCTL_CONFIG": str(workdir / "no-config"),
            "OAB_BUCKET": BUCKET,
            "OAB_TRACE_FILE": str(workdir / "traces.jsonl"),
            # `render` has no bucket profile to read the network defaults from.
            "OAB_SUBNETS": "subnet-0a1b2c3d4e5f60718",
            "OAB_SECURITY_GROUPS": "sg-0123456789abcdef0",
        }
        self.store = DesiredStateStore(S3ObjectStore(self.s3, BUCKET))
        self.manifests = StoreManifests(self.store)
        init = self.oabctl("init")
        if init[0] != 0:
            raise SystemExit(f"oabctl init failed: {init[2]}")
        # After init: its EC2/ECS/STS models are not kept (no command of the run needs them).
        share_botocore_models()
        self.baseline = self.state()

    def oabctl(self, *argv: str) -> tuple[int, str, str]:
        """Run ``oabctl argv`` in this process; an exception escaping ``main`` is code -1."""
        out, err = io.StringIO(), io.StringIO()
        try:
            code = cli.main(list(argv), stdout=out, stderr=err, stdin=io.StringIO(), env=self.env)
        except BaseException:
            return -1, out.getvalue(), traceback.format_exc()
        return code, out.getvalue(), err.getvalue()

    def state(self) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        """Every object version in the bucket and every item key (and value) in the table."""
        versions: set[tuple[str, str]] = set()
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                versions.add((v["Key"], v["VersionId"]))
        items: set[str] = set()
        for page in self.ddb.get_paginator("scan").paginate(TableName=self.aws.tables.state):
            items.update(json.dumps(i, sort_keys=True) for i in page["Items"])
        return frozenset(versions), frozenset(items)

    def restore(self) -> None:
        """Put the bucket and the state table back to the baseline."""
        versions, items = self.state()
        extra = sorted(versions - self.baseline[0])
        for i in range(0, len(extra), 1000):
            chunk = [{"Key": k, "VersionId": v} for k, v in extra[i : i + 1000]]
            self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": chunk, "Quiet": True})
        for item in items - self.baseline[1]:
            data = json.loads(item)
            key = {"pk": data["pk"], "sk": data["sk"]}
            self.ddb.delete_item(TableName=self.aws.tables.state, Key=key)

    def run(self, item: Case, report: Report) -> tuple[float, float]:
        """Every check for ``item``; returns the peak RSS (MB) of the intake paths (apply and
        the stored read) and of the accepted-case checks (diff, render: output, not intake)."""
        self.path.write_bytes(item.data)
        path = str(self.path)
        _fresh_peak()
        dry = self.oabctl("apply", "--dry-run", "-f", path)
        self.check_exit(item, report, "apply --dry-run", dry)
        if self.state() != self.baseline:
            report.find(item, "write on dry run", dry[2])
            self.restore()
        real = self.oabctl("apply", "-f", path)
        self.check_exit(item, report, "apply", real)
        if real[0] != dry[0] and real[0] in (0, 1) and dry[0] in (0, 1):
            report.find(item, "dry run and apply disagree", f"{dry[2]} | {real[2]}")
        intake_rss = peak_mb()
        checks_rss = 0.0
        if real[0] == 0:
            report.accepted += 1
            _fresh_peak()
            self.check_accepted(item, report, path)
            checks_rss = peak_mb()
            self.restore()
        else:
            report.rejected[reason_of(real[2])] += 1
            if real[0] == 1 and not real[2].startswith(f"error: {path}"):
                report.find(item, "rejection without file and line", real[2])
            longest = max((len(line) for line in real[2].splitlines()), default=0)
            if longest > MAX_ERROR_LINE:
                report.find(item, "error line too long", f"{longest:,} characters")
            if self.state() != self.baseline:
                report.find(item, "write on rejection", real[2])
                self.restore()
        _fresh_peak()
        self.check_stored_read(item, report, cli_too=not self.quick and item.index % 10 == 0)
        return max(intake_rss, peak_mb()), checks_rss

    def check_exit(
        self, item: Case, report: Report, what: str, result: tuple[int, str, str]
    ) -> None:
        code, _out, err = result
        if code in (-1, registry.EXIT_INTERNAL) or "Traceback" in err:
            report.find(item, "traceback", f"{what}: exit {code}: {err.strip()}")
        elif code not in (0, 1):
            report.find(item, "unexpected exit", f"{what}: exit {code}: {err.strip()}")

    def check_accepted(self, item: Case, report: Report, path: str) -> None:
        if not self.quick:
            diff = self.oabctl("diff", "-f", path)
            if diff[0] != 0:
                report.find(item, "reads back different", diff[1][:300] + diff[2])
            render = self.oabctl("render", "-f", path)
            if render[0] in (-1, registry.EXIT_INTERNAL):
                report.find(item, "traceback", f"render: exit {render[0]}: {render[2].strip()}")
            elif render[0] != 0:
                report.find(item, "accepted, not renderable", render[2].strip())
        written = {key for key, _version in self.state()[0] - self.baseline[0]}
        for key in sorted(k for k in written if k.startswith("manifests/")):
            agent = key.removeprefix("manifests/").removesuffix(".yaml")
            if not all(DNS_LABEL.fullmatch(label) for label in agent.split("/")):
                report.find(item, "wrong acceptance: name", repr(agent))
            try:
                self.manifests.read(agent)  # type: ignore[arg-type]
            except TerminalError as exc:
                report.find(item, "accepted, then parked", str(exc))
            except Exception:
                report.find(item, "traceback", "reconciler read: " + traceback.format_exc())

    def check_stored_read(self, item: Case, report: Report, *, cli_too: bool) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=STORED_KEY, Body=item.data)
        try:
            self.manifests.read("fuzz/stored")  # type: ignore[arg-type]
        except TerminalError:
            pass  # parked: the expected outcome for anything unreadable
        except Exception:
            report.find(
                item, "traceback", "reconciler read of the stored bytes: " + traceback.format_exc()
            )
        if cli_too:  # one case in ten: `get` builds two clients (~0.1 s)
            got = self.oabctl("get", "stored", "-n", "fuzz", "-o", "yaml")
            self.check_exit(item, report, "get (stored bytes)", got)
        listed = self.s3.list_object_versions(Bucket=BUCKET, Prefix=STORED_KEY)
        gone = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in listed.get("Versions", [])]
        self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": gone, "Quiet": True})


def run(
    *, seed: int, indices: Iterable[int], quick: bool, progress: Callable[[str], None]
) -> Report:
    """Run the cases ``indices`` of the corpus; returns the report (printing only ``progress``)."""
    report = Report()
    started = time.monotonic()
    emulator = start(dataplane=False)
    emulator.apply_env()  # boto3 in this process (the CLI's clients included) uses its credentials
    try:
        with tempfile.TemporaryDirectory(prefix="oab-fuzz-") as tmp:
            fuzz = Fuzz(emulator, Path(tmp), quick=quick)
            gc.collect()
            gc.freeze()  # the CLI, boto3 and its models stay: no collection walks them again
            for item in (case(seed, i) for i in indices):
                began = time.monotonic()
                known = len(report.findings)
                rss, checks_rss = fuzz.run(item, report)
                for finding in report.findings[known:]:
                    progress(f"case {item.index} ({item.shape}): {json.dumps(finding)}")
                report.shape_seconds[item.shape] += time.monotonic() - began
                report.max_rss_checks = max(report.max_rss_checks, checks_rss)
                report.inputs += 1
                report.shapes[item.shape] += 1
                report.largest_input = max(report.largest_input, len(item.data))
                report.max_rss_mb = max(report.max_rss_mb, rss)
                if len(item.data) < MIB and rss > report.max_rss_under_1mb:
                    report.max_rss_under_1mb, report.max_rss_case = rss, item.index
                if report.inputs % 250 == 0:
                    progress(
                        f"{report.inputs} cases in {time.monotonic() - started:.0f} s: "
                        f"{report.accepted} accepted, {len(report.findings)} findings "
                        f"{json.dumps(dict(report.kinds))}, max RSS under 1 MB "
                        f"{report.max_rss_under_1mb:.0f} MB, rejected "
                        f"{json.dumps(dict(report.rejected.most_common()))}"
                    )
    finally:
        emulator.stop()
    report.seconds = time.monotonic() - started
    return report


def sharded(args: argparse.Namespace) -> Report:
    """Run ``args.jobs`` child processes on consecutive slices of the cases, and merge them."""
    started = time.monotonic()
    total, jobs = args.count, args.jobs
    bounds = [args.start + total * j // jobs for j in range(jobs + 1)]
    report = Report()
    with tempfile.TemporaryDirectory(prefix="oab-fuzz-shards-") as tmp:
        children = []
        for j in range(jobs):
            argv = [sys.executable, __file__, "--seed", str(args.seed), "--start", str(bounds[j])]
            argv += ["--count", str(bounds[j + 1] - bounds[j]), "--dump", f"{tmp}/{j}.json"]
            argv += ["--quick"] if args.quick else []
            children.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        for j, child in enumerate(children):
            if child.wait() not in (0, 1):
                raise SystemExit(f"fuzz shard {j} failed (exit {child.returncode})")
            report.merge(json.loads(Path(f"{tmp}/{j}.json").read_text()))
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="cases to run (default 10000)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--only", type=int, action="append", default=[], help="replay case INDEX")
    parser.add_argument(
        "--quick", action="store_true", help="skip diff, render and get (the suite's subset)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes, each with its own emulator (default 1)"
    )
    parser.add_argument("--dump", help=argparse.SUPPRESS)  # a shard's report, for the parent
    args = parser.parse_args(argv)
    if args.jobs > 1 and not args.only:
        report = sharded(args)
    else:
        report = run(
            seed=args.seed,
            indices=args.only or range(args.start, args.start + args.count),
            quick=args.quick,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    if args.dump:
        Path(args.dump).write_text(json.dumps(report.to_json()))
    summary = report.summary(args.seed)
    print(f"manifest fuzz, seed {args.seed}: {report.inputs} inputs in {report.seconds:.0f} s")
    print(
        f"  shapes ({len(shapes())}): "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.shapes.items()))
    )
    slowest = report.shape_seconds.most_common(5)
    print("  slowest shapes: " + ", ".join(f"{k} {v:.0f} s" for k, v in slowest))
    print(f"  accepted {report.accepted}, rejected {summary['rejected']}:")
    for reason, n in report.rejected.most_common():
        print(f"    {n:6d}  {reason}")
    print(
        f"  peak RSS per input (apply, apply --dry-run, stored read; whole process): max "
        f"{report.max_rss_under_1mb:.0f} MB for inputs under 1 MB (case {report.max_rss_case}), "
        f"{report.max_rss_mb:.0f} MB for all (budget {RSS_BUDGET_MB:.0f} MB); accepted-case "
        f"checks (diff, render of every agent): {report.max_rss_checks:.0f} MB"
    )
    print(f"  findings: {len(report.findings)} " + json.dumps(dict(report.kinds)))
    for finding in report.findings[:50]:
        where = f"case {finding['index']} ({finding['shape']})"
        print(f"    {where}: {finding['kind']}: {finding['detail']}")
    print(json.dumps(summary, sort_keys=True))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
