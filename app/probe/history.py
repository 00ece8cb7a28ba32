"""Probe history: each target's last probe and a bounded ring of failed ones, kept as the results themselves.

Recording a probe stores references to the result the probe already built; nothing is rendered until the status
page or /logs asks (the way blackbox_exporter's prober/history.go keeps its recent probes).
"""

import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from app.config import Target
from app.probe.results import ProbeResult

DEFAULT_HISTORY_LIMIT = 100
# Module targets leave with their engines (app/probe/module_targets.py); this bounds the rest (a probe that ended after
# its target was let go), keeping the most recently probed.
DEFAULT_MODULE_TARGET_LIMIT = 10_000


class TargetKey(NamedTuple):
    """A target as the history knows it: a name from targets.yml (module None), or an address probed with a module."""

    module: str | None
    name: str

    @classmethod
    def of(cls, target: Target) -> "TargetKey":
        """A named target's key, or a module target's (its name is MODULE/ADDRESS)."""
        module = target.module
        return cls(None, target.name) if module is None else cls(module, target.name.removeprefix(f"{module}/"))

    def __str__(self) -> str:
        return self.name if self.module is None else f"{self.name} (module {self.module})"


# The query sets a probe was restricted to (/probe?query_set=...), or None for all of the target's.
Selection = frozenset[str] | None


class Probe(NamedTuple):
    """One finished probe: what it found, and when it ended (wall clock for people, monotonic for ages)."""

    key: TargetKey
    result: ProbeResult
    ended_at: float  # time.time()
    ended_monotonic: float  # time.monotonic()
    selection: Selection
    success: bool  # result.success, worked out once


class TargetState:
    """A target's last probe of each selection of query sets, and since when its state (ok or failing) has held.

    A target probed for its slow set on a longer interval than for the rest fails while either selection's last
    probe fails: its state does not flip with whichever scrape came last. Probes are recorded on the event loop and
    the status page is rendered on a worker thread: readers copy ``latest`` (list() takes it in one step under the
    GIL) rather than iterate it while a new selection may be added.
    """

    __slots__ = ("last", "latest", "since")

    def __init__(self, last: Probe) -> None:
        self.last = last  # the most recent probe, of any selection
        self.latest = {last.selection: last}
        self.since = last.ended_at

    @property
    def ok(self) -> bool:
        """True when the last probe of every selection succeeded."""
        return all(probe.success for probe in list(self.latest.values()))

    def failing(self) -> list[Probe]:
        """The last probes that failed, one per selection, the most recent first."""
        failed = [probe for probe in list(self.latest.values()) if not probe.success]
        return sorted(failed, key=lambda probe: probe.ended_at, reverse=True)


class History:
    """The last probe of every target, and the last ``limit`` failed probes of all targets together."""

    def __init__(self, limit: int = DEFAULT_HISTORY_LIMIT, module_targets: int = DEFAULT_MODULE_TARGET_LIMIT) -> None:
        self.limit = limit
        self.started_at = time.time()
        self._named: dict[TargetKey, TargetState] = {}
        self._modules: dict[TargetKey, TargetState] = {}  # oldest probe first
        self._module_limit = module_targets
        self._failed: deque[Probe] = deque(maxlen=limit)
        self._added: dict[str, float] = {}  # named targets added by a reload, and when

    def added_at(self, name: str) -> float:
        """When named target ``name`` joined the config: at start, or at the reload that added it."""
        return self._added.get(name, self.started_at)

    def record(self, key: TargetKey, result: ProbeResult, selection: Selection = None) -> None:
        """Keep ``result`` as ``key``'s last probe (and in the failed ring if it failed): a few references, no copy."""
        success = result.success
        probe = Probe(key, result, time.time(), time.monotonic(), selection, success)
        states = self._named if key.module is None else self._modules
        state = states.get(key)
        if state is None:
            state = TargetState(probe)
        else:
            was_ok = state.ok
            # This probe ran every set of an older one whose sets it includes (None: all of them): it supersedes it.
            if selection is None:
                state.latest = {}
            else:
                for older in [older for older in list(state.latest) if older is not None and older <= selection]:
                    state.latest.pop(older, None)
            state.latest[selection] = probe
            state.last = probe
            if state.ok != was_ok:
                state.since = probe.ended_at
            if key.module is not None:
                states.pop(key, None)  # re-inserted last: the dict's order is the order of last probes
        states[key] = state
        if key.module is not None and len(states) > self._module_limit:
            states.pop(next(iter(states)), None)
        if not success and self.limit:
            self._failed.append(probe)

    def state(self, key: TargetKey) -> TargetState | None:
        """``key``'s state, or None if it was not probed since sqlprobe started (or since it left the config)."""
        return (self._named if key.module is None else self._modules).get(key)

    def module_targets(self) -> Iterator[tuple[TargetKey, TargetState]]:
        """The module targets probed lately, with their states."""
        return iter(list(self._modules.items()))

    def last_failed(self, key: TargetKey) -> Probe | None:
        """``key``'s most recent failed probe still in the ring."""
        return next((probe for probe in reversed(self._failed) if probe.key == key), None)

    def forget_module_targets(self, names: Iterable[str]) -> None:
        """Forget the module targets let go, by their names (MODULE/ADDRESS); called from any thread."""
        for name in names:
            module, _, address = name.partition("/")
            self._modules.pop(TargetKey(module, address), None)

    def retain(self, names: Iterable[str], added: Iterable[str] = ()) -> None:
        """Forget the named targets that are no longer configured (after a reload, from the reloading thread), and
        note when those ``added`` joined.

        Probes are recorded on the event loop meanwhile: list() copies a dict or deque in one step under the GIL,
        where iterating it directly could meet an insertion half-way.
        """
        kept = set(names)
        now = time.time()
        self._added = {name: at for name, at in self._added.items() if name in kept} | dict.fromkeys(added, now)
        self._named = {key: state for key, state in list(self._named.items()) if key.name in kept}
        failed = [probe for probe in list(self._failed) if probe.key.module is not None or probe.key.name in kept]
        self._failed = deque(failed, maxlen=self.limit)
