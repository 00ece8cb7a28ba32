"""The Freezer: objects alive at start and after each full collection are left out of the next ones, until thawed."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.probe.frozen import QUIET, THAW_EVERY, THAW_GROWTH, Freezer


class _Cycle:
    """An object only the collector can free: it refers to itself, as an engine and its pool do."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def freezer() -> Iterator[Freezer]:
    started = Freezer()
    started.start()
    yield started
    started.stop()


def _garbage_cycle_frozen(freezer: Freezer) -> "weakref.ref[_Cycle]":
    """A cycle alive while a full collection runs (so frozen with its survivors), garbage right after."""
    alive = _Cycle()
    gc.collect()
    dead = weakref.ref(alive)
    del alive
    return dead


def test_objects_alive_at_start_and_after_a_full_collection_are_left_out_of_the_next_ones(freezer: Freezer) -> None:
    dead = _garbage_cycle_frozen(freezer)
    gc.collect()
    assert dead() is not None  # garbage, but frozen: the full collection did not walk it
    assert gc.get_freeze_count() > 0


def test_thawed_frozen_garbage_is_freed_by_the_next_full_collection(freezer: Freezer) -> None:
    dead = _garbage_cycle_frozen(freezer)
    freezer.thaw()  # as after engines disposed or a config replaced
    gc.collect()
    assert dead() is None


def test_frozen_garbage_nobody_reported_is_freed_within_thaw_every_full_collections(freezer: Freezer) -> None:
    dead = _garbage_cycle_frozen(freezer)
    for _ in range(THAW_EVERY):
        gc.collect()
    assert dead() is None


def test_stopping_gives_every_frozen_object_back_to_the_collector() -> None:
    freezer = Freezer()
    freezer.start()
    dead = _garbage_cycle_frozen(freezer)
    freezer.stop()
    gc.collect()
    assert dead() is None
    assert gc.get_freeze_count() == 0


def test_a_full_collections_survivors_are_not_frozen_while_many_probes_are_in_flight() -> None:
    # 2,000 probes waiting on silent hosts: their objects survive the collection, and are garbage in cycles soon
    # after; frozen, they would stay until a thaw (the silence test's memory grew by 4-9 MiB an outage).
    freezer = Freezer(lambda: QUIET + 1)
    freezer.start()
    try:
        dead = _garbage_cycle_frozen(freezer)
        gc.collect()
        assert dead() is None
    finally:
        freezer.stop()


def test_frozen_objects_that_grew_by_a_tenth_are_walked_again_by_the_next_full_collection(freezer: Freezer) -> None:
    dead = _garbage_cycle_frozen(freezer)
    kept = [_Cycle() for _ in range(int(gc.get_freeze_count() * (THAW_GROWTH + 0.05)) + 1)]
    gc.collect()  # they survive it, and are frozen: a tenth more than after the last walk of them all
    gc.collect()
    assert dead() is None
    assert kept
