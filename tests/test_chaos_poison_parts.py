"""The parts of the ``poison`` chaos scenario that decide what it can see, without a cluster.

A fault rule narrowed to one agent's commit must refuse that commit and nothing else, and only as
often as asked (else the minimal commit that parks the unit would be refused too, or another
agent's commit would be); the replicas' metric exports must be read as cumulative totals per
process incarnation (else ``oab.poison.items`` would be over- or under-counted); a parked row's
reason must be read the way ``oabctl get -o wide`` reads it; and every plant must be required to
have been met, so a run that met nothing is ``invalid``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chaos() -> Iterator[dict[str, ModuleType]]:
    """The chaos modules, imported the way ``chaos/run.py`` imports them."""
    sys.path.insert(0, str(ROOT / "chaos"))
    try:
        import faultproxy
        import harness
        import poison
        import scenarios

        yield {"faultproxy": faultproxy, "harness": harness, "poison": poison, "sc": scenarios}
    finally:
        sys.path.remove(str(ROOT / "chaos"))


def _commit(table: str, pk: str) -> dict[str, object]:
    return {"puts": [{"table": "oab-queue", "pk": f"unit#{pk}"}, {"table": table, "pk": pk}]}


def test_a_rule_for_one_items_writes_fires_only_on_them_and_only_times_times(
    chaos: dict[str, ModuleType],
) -> None:
    fp = chaos["faultproxy"]
    proxy = fp.FaultProxy("p0", upstream=("127.0.0.1", 9))
    refuse = fp.Fault(
        action="http",
        service="dynamodb",
        op="TransactWriteItems",
        status=400,
        code="ValidationException",
        put=("oab-runlog", "chaos/a0006"),
        times=1,
    )
    proxy.set_faults([refuse])
    other = _commit("oab-runlog", "chaos/a0001")
    mine = _commit("oab-runlog", "chaos/a0006")
    assert proxy.pick("dynamodb", "TransactWriteItems", other) is None
    assert proxy.pick("dynamodb", "PutItem", mine) is None  # another operation
    assert proxy.pick("dynamodb", "TransactWriteItems", {"puts": []}) is None
    assert proxy.pick("dynamodb", "TransactWriteItems", mine) is refuse
    assert proxy.pick("dynamodb", "TransactWriteItems", mine) is None  # spent
    proxy.set_faults([refuse])  # new rules, new counts
    assert proxy.pick("dynamodb", "TransactWriteItems", mine) is refuse


def test_a_spent_rule_lets_the_next_rule_decide(chaos: dict[str, ModuleType]) -> None:
    fp = chaos["faultproxy"]
    proxy = fp.FaultProxy("p0", upstream=("127.0.0.1", 9))
    once = fp.Fault(action="http", service="dynamodb", times=1, code="ValidationException")
    always = fp.Fault(action="http", service="dynamodb", code="InternalServerError")
    proxy.set_faults([once, always])
    assert [proxy.pick("dynamodb", "GetItem", {}) for _ in range(3)] == [once, always, always]


def test_a_canned_error_carries_the_message_botocore_shows(chaos: dict[str, ModuleType]) -> None:
    raw = chaos["faultproxy"].canned_error(
        "dynamodb", 400, "ValidationException", "Item size has exceeded the maximum allowed size"
    )
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body["__type"].endswith("#ValidationException")
    assert body["message"] == "Item size has exceeded the maximum allowed size"


def _export(value: int, *, kind: str = "row") -> str:
    point = {"attributes": {"oab.table": "queue", "oab.kind": kind}, "value": value}
    metric = {"name": "oab.poison.items", "data": {"data_points": [point]}}
    other = {"name": "oab.loop.errors", "data": {"data_points": [{"attributes": {}, "value": 9}]}}
    doc = {"resource_metrics": [{"scope_metrics": [{"metrics": [metric, other]}]}]}
    return json.dumps(doc, indent=4) + "\n"


def test_metric_totals_take_each_incarnations_last_export_and_sum_them(
    chaos: dict[str, ModuleType], tmp_path: Path
) -> None:
    h = chaos["harness"].Harness(tmp_path)
    # Cumulative exports: r0-1's last says 3 (not 1 + 2 + 3); a torn tail is ignored.
    (h.logs / "r0-1.metrics").write_text(_export(1) + _export(2) + _export(3) + '{"resou')
    (h.logs / "r0-2.metrics").write_text(_export(4) + _export(2, kind="status"))
    (h.logs / "r1-1.metrics").write_text("")  # killed before its first export
    totals = h.metric_totals("oab.poison.items")
    assert totals == {
        (("oab.kind", "row"), ("oab.table", "queue")): 3.0,
        (("oab.kind", "status"), ("oab.table", "queue")): 2.0,
    }


def test_a_parked_rows_reason_is_read_as_an_operator_reads_it(
    chaos: dict[str, ModuleType],
) -> None:
    reason = chaos["poison"].parked_reason
    assert reason({"last_error": "CorruptRow: token: missing"}) == "CorruptRow"
    assert reason({"last_error": "CommitRejected: the run's outcome ..."}) == "CommitRejected"
    invalid = "manifests/chaos/a0008.yaml: the stored object cannot be read: line 38: ..."
    assert reason({"last_error": invalid}) == "InvalidManifest"
    assert reason({"last_error": "boom"}) == "boom"
    assert reason({"last_error": None}) == "Parked"


def test_every_plant_must_be_met_for_a_run_to_count(chaos: dict[str, ModuleType]) -> None:
    poison, sc = chaos["poison"], chaos["sc"]
    fn, opts = sc.SCENARIOS["poison"]
    assert fn is poison.poison
    assert len(poison.PLANTS) == 13
    assert set(opts["required"]) == {f"met_{p.replace('-', '_')}" for p in poison.PLANTS}
    assert set(poison.EXPECTED_REASON) == set(poison.EXPECTED_DETAIL)
    result = sc.RunResult("poison", 0, 1, 12, required=opts["required"])
    result.figures.update(dict.fromkeys(opts["required"], 1.0))
    assert result.status == "ok"
    result.figures["met_lease_huge"] = 0.0  # e.g. replaced before any replica read it
    assert (result.status, result.unexercised) == ("invalid", ["met_lease_huge"])


def test_the_alias_bomb_is_small_and_expands_to_nine_to_the_ninth(
    chaos: dict[str, ModuleType],
) -> None:
    import yaml

    text = chaos["poison"].alias_bomb(indent=0)
    assert len(text) < 400
    root = yaml.compose(text)  # aliases are shared nodes here: nothing is expanded

    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        """Scalars the node expands to (shared nodes counted once each time they are used)."""
        if id(node) not in sizes:
            sizes[id(node)] = (
                sum(size(n) for n in node.value) if isinstance(node, yaml.SequenceNode) else 1
            )
        return sizes[id(node)]

    biggest = root.value[-1][1]  # key "i"
    assert size(biggest) == 9**9


def test_a_term_may_repeat_the_epoch_only_an_unreadable_lease_item_hid(
    chaos: dict[str, ModuleType],
) -> None:
    """Documented (README, leader election): the standby that replaces an unreadable item
    continues from the highest epoch it has seen itself, so a term that began just before the
    garbage hid its epoch may be repeated by another holder; anything else is a violation."""
    sys.path.insert(0, str(ROOT / "chaos"))
    try:
        import invariants
        import selftest
    finally:
        sys.path.remove(str(ROOT / "chaos"))
    events = [
        selftest._lease("p2", 1.0, "r2-1", 3),  # r2-1's term 3 starts
        selftest._ev("p0", "GetItem", 2.0, table=selftest.T.lease),  # the garbage is seen
        selftest._lease("p0", 9.0, "r0-1", 3),  # r0-1 never saw epoch 3: it reuses it
    ]
    garbage = invariants.LeasePlant(what="lease-garbage", t_plant=1.5, epoch=None, wait_s=6.0)

    def check(plants: list[object]) -> tuple[list[str], dict[str, float]]:
        checker = invariants.Checker(
            events=events, tables=selftest.T, slot_of={}, agents={}, planted=[]
        )
        figures = checker.check_lease(plants, retry_s=1.0, call_timeout_s=1.0)
        return [v.branch for v in checker.violations], figures

    branches, figures = check([garbage])
    assert branches == []
    assert figures["epoch_reused"] == 1
    assert figures["lease-garbage"] == pytest.approx(7.0)
    # Without the unreadable item in between, the same history is a violation.
    assert check([])[0] == ["lease/epoch-went-backwards"]
