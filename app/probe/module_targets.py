"""The targets made from modules for the addresses probed: at most max_targets per module. A new address takes the
place of the least recently probed target that never answered; one whose server answered is never let go for it,
so clients cycling through allowed addresses cannot evict the fleet or reset its series (ModuleFull instead)."""

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from app.config import Module
from app.config.addresses import Address, parse_address

if TYPE_CHECKING:
    from app.config import Target

Dispose = Callable[[list[str]], None]


class ModuleFull(Exception):
    """A new address, and every target of its module at max_targets has answered: none is let go for it."""


class ModuleTargets:
    """One target per (module, address), the same object from probe to probe so runs and results are shared.

    ``dispose`` gets the names of targets let go (past max_targets, idle, or their module gone), to close their
    engines and drop what else is kept per target.
    """

    def __init__(self, dispose: Dispose) -> None:
        self._dispose = dispose
        # Per module, in order of last probe: each address's target and the module object it was made from.
        self._targets: dict[str, OrderedDict[Address, tuple[Module, Target]]] = {}
        # Per module, the addresses kept whose server answered a probe (probe_success 1) since they were made.
        self._answered: dict[str, set[Address]] = {}
        self._lock = threading.Lock()

    def target(self, module: Module, address: Address) -> "Target":
        """The target of ``address`` (allowed by the caller) in ``module``; the least recently probed may go."""
        evicted: list[str] = []
        with self._lock:
            targets = self._targets.setdefault(module.name, OrderedDict())
            answered = self._answered.setdefault(module.name, set())
            made = targets.get(address)
            if made is None and len(targets) >= module.max_targets:
                silent = next((kept for kept in targets if kept not in answered), None)  # least recently probed first
                if silent is None:
                    raise ModuleFull(
                        f"module {module.name!r} keeps {len(targets)} targets (its max_targets), and every one of"
                        f" them answers: {address} is not probed in place of one (raise max_targets for more)"
                    )
                evicted.append(targets.pop(silent)[1].name)
            if made is None or made[0] is not module:  # new, or its module was reloaded
                made = targets[address] = (module, module.target_for(address))
            targets.move_to_end(address)
            evicted.extend(_beyond(targets, module.max_targets))
            answered.intersection_update(targets)
        if evicted:
            self._dispose(evicted)
        return made[1]

    def answered(self, target: "Target") -> None:
        """The server of a module target answered a probe: it keeps its place against new addresses."""
        if target.module is None:
            return
        address = parse_address(target.name.partition("/")[2])
        with self._lock:
            if address in self._targets.get(target.module, {}):
                self._answered.setdefault(target.module, set()).add(address)

    def retain(
        self, modules: Mapping[str, Module], keep: Callable[[Module, Address], bool]
    ) -> tuple[dict[str, "Target"], list[str]]:
        """Remake every target from ``modules`` (after a reload or refresh), letting go those ``keep`` refuses.

        Returns the targets kept, by name, and the names of those let go.
        """
        evicted: list[str] = []
        with self._lock:
            for name in list(self._targets):
                targets = self._targets[name]
                module = modules.get(name)
                for address, (made_by, _) in list(targets.items()):
                    if module is None or not keep(module, address):
                        evicted.append(targets.pop(address)[1].name)
                    elif made_by is not module:
                        targets[address] = (module, module.target_for(address))
                if module is None:
                    del self._targets[name]
                    self._answered.pop(name, None)
                else:
                    evicted.extend(_beyond(targets, module.max_targets))
                    self._answered.get(name, set()).intersection_update(targets)
            kept = {target.name: target for targets in self._targets.values() for _, target in targets.values()}
        if evicted:
            self._dispose(evicted)
        return kept, evicted

    def forget(self, names: Iterable[str]) -> list[str]:
        """Let go of the targets named (their engines were disposed as idle) without a dispose call; those found."""
        gone = set(names)
        found = []
        with self._lock:
            for targets in self._targets.values():
                for address in [address for address, (_, target) in targets.items() if target.name in gone]:
                    found.append(targets.pop(address)[1].name)
            for name, answered in self._answered.items():
                answered.intersection_update(self._targets.get(name, {}))
        return found

    def holds(self, target: "Target") -> bool:
        """Whether a target of this name (module and address) is kept now."""
        address = parse_address(target.name.partition("/")[2])
        with self._lock:
            return target.module is not None and address in self._targets.get(target.module, {})

    def named(self, name: str) -> "Target | None":
        """The target of this name (module/address) kept now, if any."""
        module, _, address_text = name.partition("/")
        try:
            address = parse_address(address_text)
        except ValueError:
            return None
        with self._lock:
            targets = self._targets.get(module)
            made = None if targets is None else targets.get(address)
        return None if made is None else made[1]

    def count(self, module: str) -> int:
        """Targets of ``module`` kept now."""
        return len(self._targets.get(module, ()))


def _beyond(targets: "OrderedDict[Address, tuple[Module, Target]]", limit: int) -> list[str]:
    """Remove the least recently probed targets past ``limit``; their names."""
    return [targets.popitem(last=False)[1][1].name for _ in range(len(targets) - limit)]
