"""``oabctl trace NAME|RUN_ID``: from an agent (or one of its runs) to the spans that explain it.

Design
------
- **Resolve the run.** A word of 32 hex digits is looked up as a run id in the run log's
  ``run-index`` GSI; otherwise it is an agent name (``-n`` namespace) and the newest audit row of
  that agent is taken (``--run RUN_ID`` picks another of its rows). An agent without audit rows
  falls back to the trace id on its status item; a 32-hex word that is no run id is taken as a
  trace id. The audit row gives the trace id and the span id of the run's ``reconcile`` span.
- **Local: print the span tree** from the local JSON-lines trace file (``OAB_TRACE_FILE``,
  default ``~/.oab/traces.jsonl``, written by :mod:`oab.controller.observability.telemetry`): the
  chain of ancestors from the trace root (``oabctl apply`` -> ``enqueue``) down to the run's span,
  then that run's whole subtree (claim, steps, AWS calls with request ids, status-transition and
  exception events). ``--all`` prints the whole trace (every run of the change).
- **Production: print the link.** With ``OAB_TRACE_URL_TEMPLATE`` set, the trace id and a link
  built from the template are printed (placeholders ``{trace_id}``, ``{xray_trace_id}``
  (``1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx``), ``{span_id}``, ``{region}``), e.g.

  - Jaeger: ``http://jaeger:16686/trace/{trace_id}``
  - Tempo (Grafana): ``https://grafana.example/explore?left={{"queries":[{{"query":"{trace_id}"}}]}}``
    (literal braces doubled)
  - X-Ray: ``https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#xray:traces/{xray_trace_id}``

  Both are printed when both exist. Exit 0 when a trace id was found, 1 when no run was.

Time model: durations come from the spans' own timestamps; nothing here reads a clock.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oab.controller.cli import output as out
from oab.controller.cli.context import Context
from oab.controller.cli.registry import EXIT_INVALID, EXIT_OK, Command, command
from oab.controller.core.status import AuditRecord
from oab.controller.observability.telemetry import DEFAULT_TRACE_FILE, read_spans

__all__ = ["COMMANDS", "RunRef", "format_tree", "resolve_link", "select_spans"]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
#: Attributes shown on a tree line, in this order (the rest is in ``-o json``).
_SHOWN = (
    "oab.agent.key",
    "oab.generation",
    "oab.run_id",
    "oab.attempt",
    "oab.epoch",
    "oab.replica_id",
    "oab.outcome",
    "oab.reason",
    "oab.phase",
    "oab.enqueue.outcome",
    "aws.request_id",
    "aws.error.code",
    "http.status_code",
)


@dataclass(frozen=True, kw_only=True)
class RunRef:
    """Where a run's spans are: its trace, and its reconcile span when known."""

    trace_id: str
    span_id: str = ""
    run_id: str = ""
    key: str = ""
    generation: int | None = None


# --------------------------------------------------------------------------- pure helpers


def xray_trace_id(trace_id: str) -> str:
    """W3C trace id -> X-Ray form (``1-<8 hex>-<24 hex>``; the OTel X-Ray id generator's)."""
    return f"1-{trace_id[:8]}-{trace_id[8:]}"


def resolve_link(template: str, ref: RunRef, *, region: str = "") -> str:
    """The link built from ``OAB_TRACE_URL_TEMPLATE`` for ``ref``."""
    return template.format(
        trace_id=ref.trace_id,
        xray_trace_id=xray_trace_id(ref.trace_id),
        span_id=ref.span_id,
        region=region,
    )


def select_spans(
    spans: Sequence[Mapping[str, Any]], ref: RunRef, *, whole: bool
) -> list[Mapping[str, Any]]:
    """The spans to print: the run's ancestors and subtree, or the whole trace."""
    mine = {str(s["span_id"]): s for s in spans if s.get("trace_id") == ref.trace_id}
    if whole or not ref.span_id or ref.span_id not in mine:
        return sorted(mine.values(), key=lambda s: int(s.get("start_ns") or 0))
    keep: set[str] = set()
    cursor: str | None = ref.span_id
    while cursor is not None and cursor in mine and cursor not in keep:
        keep.add(cursor)
        cursor = mine[cursor].get("parent_span_id")
    children: dict[str, list[str]] = {}
    for sid, span in mine.items():
        parent = span.get("parent_span_id")
        if parent:
            children.setdefault(str(parent), []).append(sid)
    stack = [ref.span_id]
    while stack:
        sid = stack.pop()
        keep.add(sid)
        stack.extend(children.get(sid, []))
    return sorted((mine[s] for s in keep), key=lambda s: int(s.get("start_ns") or 0))


def _duration(span: Mapping[str, Any]) -> str:
    start, end = span.get("start_ns"), span.get("end_ns")
    if not start or not end:
        return "?"
    ms = (int(end) - int(start)) / 1e6
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _line(span: Mapping[str, Any], *, mark: bool) -> str:
    attrs = span.get("attributes") or {}
    kind = str(span.get("kind", "INTERNAL"))
    parts = [str(span.get("name", "?"))]
    if kind != "INTERNAL":
        parts.append(f"[{kind}]")
    parts.append(_duration(span))
    shown = [f"{k.removeprefix('oab.')}={attrs[k]}" for k in _SHOWN if k in attrs]
    if shown:
        parts.append(" ".join(shown))
    if span.get("status") == "ERROR":
        parts.append(f"ERROR {span.get('status_message') or ''}".rstrip())
    if mark:
        parts.append("<== run")
    return "  ".join(parts)


def _event_line(event: Mapping[str, Any]) -> str:
    attrs = event.get("attributes") or {}
    name = str(event.get("name", ""))
    if name == "exception":
        return f"! {attrs.get('exception.type', '')}: {attrs.get('exception.message', '')}"
    if name == "status.transition":
        return f"* phase {attrs.get('oab.from_phase') or '-'} -> {attrs.get('oab.to_phase') or '-'}"
    detail = " ".join(f"{k.removeprefix('oab.')}={v}" for k, v in attrs.items())
    return f"* {name} {detail}".rstrip()


def format_tree(spans: Sequence[Mapping[str, Any]], *, mark: str = "") -> list[str]:
    """Indented tree lines of ``spans`` (children in start order; orphans at the top level)."""
    ids = {str(s["span_id"]) for s in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(span: Mapping[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        lines.append(prefix + branch + _line(span, mark=str(span["span_id"]) == mark))
        inner = prefix if top else prefix + ("   " if last else "│  ")
        for event in span.get("events") or []:
            lines.append(inner + "   " + _event_line(event))
        kids = sorted(children.get(str(span["span_id"]), []), key=lambda s: s.get("start_ns", 0))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    roots = sorted(children.get(None, []), key=lambda s: s.get("start_ns", 0))
    for root in roots:
        walk(root, "", True, True)
    return lines


# ------------------------------------------------------------------------------- lookups


def _ref(row: AuditRecord) -> RunRef:
    return RunRef(
        trace_id=row.trace_id,
        span_id=row.span_id,
        run_id=row.run_id,
        key=row.key,
        generation=row.generation,
    )


def resolve(ctx: Context) -> RunRef | None:
    """The run (or trace) ``NAME|RUN_ID`` and ``--run`` designate, or None."""
    word = str(ctx.args.target)
    state = ctx.state()
    wanted = ctx.args.run or (word if _HEX32.match(word) else None)
    if wanted:
        row = state.run(wanted)
        if row is not None:
            return _ref(row)
        if wanted == word:
            return RunRef(trace_id=word)  # not a run id: take it as a trace id
        return None
    key = word if "/" in word else f"{ctx.args.namespace}/{word}"
    rows = state.read_runlog(key, limit=1)
    if rows and rows[0].trace_id:
        return _ref(rows[0])
    status = state.read_status(key)
    if status.trace_id:
        return RunRef(trace_id=status.trace_id, key=key, run_id=status.last_run_id)
    return None


def _trace_file(ctx: Context) -> Path | None:
    env = os.environ if ctx.env is None else ctx.env
    raw = env.get("OAB_TRACE_FILE")
    if raw is not None and raw.strip().lower() in ("", "off", "none"):
        return None
    return Path(raw).expanduser() if raw else DEFAULT_TRACE_FILE.expanduser()


# ------------------------------------------------------------------------------- command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|RUN_ID", help="agent name, run id or trace id")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    p.add_argument("--run", default=None, metavar="RUN_ID", help="this run instead of the newest")
    p.add_argument("--all", action="store_true", help="every span of the trace (all its runs)")
    p.add_argument("-o", "--output", choices=["json"], default=None, help="output format")


@command(
    "trace",
    help="show the span tree (local) or trace link (production) of an agent's latest run",
    configure=_configure,
)
def _trace(ctx: Context) -> int:
    ref = resolve(ctx)
    if ref is None:
        ctx.stderr.write(f"error: no run found for {ctx.args.target}\n")
        return EXIT_INVALID
    env = os.environ if ctx.env is None else ctx.env
    template = env.get("OAB_TRACE_URL_TEMPLATE", "")
    link = resolve_link(template, ref, region=ctx.settings.region or "") if template else ""
    path = _trace_file(ctx)
    spans = list(read_spans(path)) if path is not None else []
    chosen = select_spans(spans, ref, whole=ctx.args.all)
    if ctx.output is out.OutputFormat.JSON:
        doc = {
            "traceId": ref.trace_id,
            "spanId": ref.span_id,
            "runId": ref.run_id,
            "agent": ref.key,
            "generation": ref.generation,
            "link": link or None,
            "spans": chosen,
        }
        ctx.print(json.dumps(doc, indent=2, default=str))
        return EXIT_OK
    head = f"trace {ref.trace_id}"
    if ref.key:
        head += f"  agent {ref.key}"
    if ref.generation is not None:
        head += f"  generation {ref.generation}"
    if ref.run_id:
        head += f"  run {ref.run_id}"
    ctx.print(head)
    if link:
        ctx.print(f"link: {link}")
    if chosen:
        ctx.print("\n".join(format_tree(chosen, mark=ref.span_id)))
    elif not link:
        where = path or "the local trace file (OAB_TRACE_FILE=off)"
        ctx.progress(
            f"no spans of this trace in {where}; in production set OAB_TRACE_URL_TEMPLATE "
            "to print a link to your tracing backend"
        )
    return EXIT_OK


#: This group's commands, in the order ``oabctl --help`` lists them (sorted there by name).
COMMANDS: tuple[Command, ...] = (_trace,)
