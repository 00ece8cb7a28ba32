"""The running exporter: the config it serves, its engines, prober and telemetry, and replacing that config."""

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.config import Config, load_config
from app.engines import EngineCache
from app.errors import ConfigError
from app.prober import Prober
from app.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a successful reload did."""

    config: Config
    changed: bool
    disposed: tuple[str, ...]  # targets whose engines were retired (gone, or their connection changed)


class Exporter:
    """What the handlers share. ``config`` is replaced whole by a reload; a probe keeps the one it started with."""

    def __init__(self, config: Config, max_workers: int) -> None:
        self.config = config
        self.engines = EngineCache()
        self.prober = Prober(self.engines, max_workers)
        self.telemetry = Telemetry(self.engines.__len__)
        self._reloading = threading.Lock()
        self._loaded_from = _fingerprint(config)
        self._running: asyncio.Task[Reloaded] | None = None  # the reload in progress
        self._queued: asyncio.Task[Reloaded] | None = None  # the one to run after it, shared by who asked meanwhile

    async def reload_shared(self) -> Reloaded:
        """A reload on a worker thread; requests that arrive while one runs share the next run and its answer.

        The next, not the running one: a request's answer must see the files as they were when it arrived.
        """
        if self._queued is not None:
            return await asyncio.shield(self._queued)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(asyncio.to_thread(self.reload))
            return await asyncio.shield(self._running)
        self._queued = asyncio.create_task(self._reload_after(self._running))
        return await asyncio.shield(self._queued)

    async def _reload_after(self, running: "asyncio.Task[Reloaded]") -> Reloaded:
        await asyncio.wait([running])
        self._running, self._queued = self._queued, None
        return await asyncio.to_thread(self.reload)

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
            disposed = self.engines.retain(config.targets)
            self.prober.forget_results()
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

    def close(self) -> None:
        """Stop probing and close every pooled connection."""
        self.prober.close()
        self.engines.dispose_all()


def _fingerprint(config: Config) -> bytes:
    """A digest of the bytes of every file ``config`` was read from (an unreadable one counts as different)."""
    digest = hashlib.sha256()
    for name in (config.targets_file, config.queries_file, *config.other_files):
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(Path(name).read_bytes()).digest())
        except OSError:
            digest.update(os.urandom(16))  # never equal: the load that follows reports the problem
    return digest.digest()
