"""The desired-state store's compare-and-swap rounds (tenacity ``Retrying``): bounded rounds, full
jitter drawn from the injected random source and slept with the injected sleep, and errors other
than a lost round ending the rounds at once."""

from __future__ import annotations

import random
from typing import Any

import pytest

from oab.controller.adapters.objectstore import MemoryObjectStore
from oab.controller.adapters.store import (
    ConflictError,
    Desired,
    DesiredStateStore,
    OwnershipError,
    StoreConfig,
)
from oab.controller.base.names import FLEET_LABEL


class _Ceiling(random.Random):
    """A random source that always draws the top of the range (the ceilings become visible)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _AlwaysSecond(MemoryObjectStore):
    """Loses every replacing write: a rival writes first, each time."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def put(self, key: str, body: bytes, *, if_match: str | None, metadata: Any) -> Any:
        if self.read(key) is not None:
            self.writes += 1
            super().put(
                key, body.replace(b"cpu: ", b"cpu: 1"), if_match=if_match, metadata=metadata
            )
        return super().put(key, body, if_match=if_match, metadata=metadata)


def _svc(*, cpu: int, owner: str | None = None) -> Desired:
    return Desired(
        kind="OABService",
        namespace="default",
        name="bot",
        spec={"cpu": cpu, "memory": 512},
        labels={FLEET_LABEL: owner} if owner else {},
    )


def test_rounds_wait_with_full_jitter_from_the_injected_source_up_to_the_cap() -> None:
    objects = _AlwaysSecond()
    sleeps: list[float] = []
    config = StoreConfig(max_attempts=7, backoff_base=0.02, backoff_cap=0.5)
    store = DesiredStateStore(objects, config=config, sleep=sleeps.append, rng=_Ceiling())
    store.apply(_svc(cpu=256))
    with pytest.raises(ConflictError) as err:
        store.apply(_svc(cpu=512))
    assert err.value.attempts == 7
    assert objects.writes == 7  # every round wrote once (and lost)
    # base * 2 ** (round - 1), capped: between the seven rounds, none after the last.
    assert sleeps == pytest.approx([0.02, 0.04, 0.08, 0.16, 0.32, 0.5])


def test_the_jitter_is_reproducible_from_a_seeded_source() -> None:
    def run(seed: int) -> list[float]:
        sleeps: list[float] = []
        store = DesiredStateStore(
            _AlwaysSecond(),
            config=StoreConfig(max_attempts=4),
            sleep=sleeps.append,
            rng=random.Random(seed),
        )
        store.apply(_svc(cpu=256))
        with pytest.raises(ConflictError):
            store.apply(_svc(cpu=512))
        return sleeps

    first = run(7)
    assert first == run(7)
    assert len(first) == 3
    assert all(0 <= s <= 0.02 * 2**i for i, s in enumerate(first))


def test_an_error_other_than_a_lost_round_ends_the_rounds_at_once() -> None:
    objects = MemoryObjectStore()
    sleeps: list[float] = []
    store = DesiredStateStore(objects, sleep=sleeps.append)
    store.apply(_svc(cpu=256, owner="fleet-a"))
    with pytest.raises(OwnershipError):
        store.apply(_svc(cpu=512))
    assert sleeps == []


def test_a_single_round_store_gives_up_without_waiting() -> None:
    sleeps: list[float] = []
    store = DesiredStateStore(
        _AlwaysSecond(), config=StoreConfig(max_attempts=1), sleep=sleeps.append
    )
    store.apply(_svc(cpu=256))
    with pytest.raises(ConflictError) as err:
        store.apply(_svc(cpu=512))
    assert err.value.attempts == 1
    assert sleeps == []
