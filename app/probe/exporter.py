"""The running exporter: the config it serves, its engines, prober and telemetry, and replacing that config."""

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.config import AddressNotAllowed, Config, Module, Target, UnknownModule, load_config
from app.config.addresses import Address
from app.config.inventory import Inventory
from app.config.secret_files import changed_files
from app.drivers.dialect import CANCEL_TIMEOUT
from app.drivers.engine_cache import EngineCache
from app.errors import ConfigError
from app.probe.frozen import Freezer
from app.probe.history import DEFAULT_HISTORY_LIMIT, History, Selection, TargetKey
from app.probe.module_targets import ModuleTargets
from app.probe.prober import DEFAULT_PROBE_LIMITS, ProbeLimits, Prober
from app.probe.reloads import SharedRuns
from app.probe.results import ProbeResult
from app.probe.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a successful reload did."""

    config: Config
    changed: bool
    disposed: tuple[str, ...]  # targets whose engines were retired (gone, or their connection changed)


class Exporter:
    """What the handlers share. ``config`` is replaced whole by a reload; a probe keeps the one it started with."""

    def __init__(
        self,
        config: Config,
        max_workers: int,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        probe_limits: ProbeLimits = DEFAULT_PROBE_LIMITS,
    ) -> None:
        self.config = config
        # Started by the app's lifespan; told when engines or a config become garbage.
        self.freezer = Freezer(lambda: self.prober.in_flight)
        self.history = History(history_limit)
        # Engines only for the targets served now: a run queued before a reload must not build one for its old config.
        self.engines = EngineCache(self._served_now, max_workers)
        self.prober = Prober(self.engines, probe_limits)
        self.telemetry = Telemetry(
            self.engines.__len__,
            self.engines.killer.skipped,
            lambda: {owner: dict(counts) for owner, counts in list(self.engines.credential_fetches.items())},
            self.engines.credential_ages,
        )
        self.inventory = Inventory()
        self.module_targets = ModuleTargets(self._let_go)
        self._reloading = threading.Lock()
        self._loaded_from = _fingerprint(config)
        # What POST /-/reload and SIGHUP call: concurrent requests share runs.
        self.reload_shared = SharedRuns(self.reload)
        # The secret files changed, and the files' fingerprint, when a reload was last tried for them: a failed one is
        # not retried until a file changes (a half-written targets.yml made whole again, for one).
        self._rotation_tried: tuple[frozenset[tuple[str, str]], bytes] = (frozenset(), b"")
        self._refresh_inventory(config)

    def module_target(self, module_name: str, address_text: str) -> Target:
        """The target probing ``address_text`` with the module named; the errors' messages are for the client.

        Nothing is resolved or connected to before the address is known to be allowed.
        """
        config = self.config
        module = config.modules.get(module_name)
        if module is None:
            raise UnknownModule(f"unknown module {module_name!r}: no module of that name is configured")
        address = module.address(address_text)
        if not self._allowed(module, address):
            ports = (
                "" if module.implied_port is None else f" (an entry without a port allows {module.implied_port} only)"
            )
            raise AddressNotAllowed(
                f"module {module_name!r} may not connect to {address}: "
                f"it is neither listed in the module's inventory nor matched by its allow list{ports}"
            )
        return self.module_targets.target(module, address)

    def observe(self, result: ProbeResult, selection: Selection = None) -> None:
        """Account for a finished probe; of a target removed or let go while it ran, nothing is kept (its series).

        ``selection`` is the query sets the probe was restricted to (None: all of the target's).
        """
        self.telemetry.observe(result)
        target = result.target
        if result.success:
            self.module_targets.answered(target)
        if target.module is not None and not self.module_targets.holds(target):
            self._let_go([target.name])
        elif target.module is not None or target.name in self.config.targets:  # not removed by a reload meanwhile
            self.history.record(TargetKey.of(target), result, selection)
        else:
            self.telemetry.forget_targets([target.name])  # removed by a reload meanwhile: its series go too

    def _served_now(self, name: str) -> Target | None:
        """The target of this name in the config served now (a module target: the one kept now), if any."""
        target = self.config.targets.get(name)
        return target if target is not None else self.module_targets.named(name)

    def _allowed(self, module: Module, address: Address) -> bool:
        return self.inventory.labels(module.name, address) is not None or module.allows(address)

    def _let_go(self, names: list[str]) -> None:
        """Module targets let go: their engines, kept results and /metrics series go with them."""
        self.freezer.thaw()
        self.engines.forget(names)
        self.prober.forget_targets(names)
        self.telemetry.forget_targets(names)
        self.history.forget_module_targets(names)

    def _refresh_inventory(self, config: Config) -> tuple[dict[str, Target], list[str]]:
        """Read the inventory files again and let go of module targets no longer allowed: those kept, those let go."""
        self.inventory.refresh(config.modules)
        self.telemetry.inventory_files(self.inventory.file_states())
        return self.module_targets.retain(config.modules, self._allowed)

    def refresh_files(self) -> None:
        """Every refresh interval: inventory files read again, and a reload if a password or TLS file changed."""
        config = self.config
        self._refresh_inventory(config)
        changed = frozenset(changed_files(config.secret_files))
        if not changed:
            return
        attempt = (changed, _fingerprint(config))
        if attempt == self._rotation_tried:
            return
        self._rotation_tried = attempt
        files = sorted(path for path, _ in changed)
        log.info(
            "secret files changed, reloading: %s",
            ", ".join(files),
            extra={"event": "secret_files_changed", "files": files},
        )
        with contextlib.suppress(ConfigError):  # logged by reload; what runs keeps running
            self.reload()

    def dispose_idle(self, idle_for: float) -> list[str]:
        """Dispose the engines no probe used for ``idle_for`` seconds; module targets among them are let go."""
        disposed = self.engines.dispose_idle(idle_for)
        if disposed:
            self.freezer.thaw()
        let_go = self.module_targets.forget(disposed)
        self.prober.forget_targets(let_go)
        self.telemetry.forget_targets(let_go)
        self.history.forget_module_targets(let_go)
        return disposed

    def reload(self, environ: Mapping[str, str] | None = None) -> Reloaded:
        """Load both files again; swap them in if valid, else raise ConfigError and keep serving the old config."""
        with self._reloading:
            current = self.config
            # Taken before reading them: a file changed while loading makes the next reload load again.
            fingerprint = _fingerprint(current)
            if environ is None and fingerprint == self._loaded_from:
                # The same bytes in every file (and the process's environment cannot change from outside):
                # the same config, without parsing thousands of targets again.
                return self._unchanged(current, "files unchanged")
            try:
                config = load_config(Path(current.targets_file), Path(current.queries_file), environ)
            except ConfigError as error:
                self.telemetry.config_rejected()
                problems = [str(problem) for problem in error.problems]
                log.error(
                    "reload failed, the previous config keeps serving; %d problem(s):\n  %s",
                    len(problems),
                    "\n  ".join(problems),
                    extra={"event": "reload_failed", "problems": problems},
                )
                raise
            self._loaded_from = fingerprint
            if config == current:
                return self._unchanged(current, "nothing changed")
            self.config = config
            self.freezer.thaw()  # the old config and the engines retired below
            module_targets, let_go = self._refresh_inventory(config)
            disposed = let_go + self.engines.retain({**config.targets, **module_targets})
            # Removed targets' series leave /metrics (module targets let go already lost theirs).
            self.telemetry.forget_targets([name for name in current.targets if name not in config.targets])
            self.prober.forget_results()
            self.history.retain(config.targets, [name for name in config.targets if name not in current.targets])
            self.telemetry.config_loaded(changed=True)
            log.info(
                "reload: config changed, %d targets, %d engines disposed",
                len(config.targets),
                len(disposed),
                extra={"event": "reload", "changed": True, "targets": len(config.targets), "disposed": disposed},
            )
            return Reloaded(config, True, tuple(disposed))

    def _unchanged(self, config: Config, why: str) -> Reloaded:
        self.telemetry.config_loaded(changed=False)
        log.info(
            "reload: %s, %d targets, 0 engines disposed",
            why,
            len(config.targets),
            extra={"event": "reload", "changed": False, "targets": len(config.targets), "disposed": []},
        )
        return Reloaded(config, False, ())

    async def close(self) -> None:
        """Stop probing and close every pooled connection; the statements given up on are stopped on the server."""
        self.prober.close()
        await self.engines.killer.close(CANCEL_TIMEOUT)
        await self.prober.wait_closed()
        await self.engines.dispose_all()


def _fingerprint(config: Config) -> bytes:
    """A digest of the bytes of every file ``config`` was read from (an unreadable one counts as different)."""
    digest = hashlib.sha256()
    for name in (config.targets_file, config.queries_file, *sorted(config.secret_files)):
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(Path(name).read_bytes()).digest())
        except OSError:
            digest.update(os.urandom(16))  # never equal: the load that follows reports the problem
    return digest.digest()
