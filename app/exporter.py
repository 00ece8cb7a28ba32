"""The running exporter: the config it serves, its engines, prober and telemetry, and replacing that config."""

import logging
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
        # Engines only for the targets served now: a run queued before a reload must not build one for its old config.
        self.engines = EngineCache(lambda name: self.config.targets.get(name))
        self.prober = Prober(self.engines, max_workers)
        self.telemetry = Telemetry(self.engines.__len__, self.engines.killer.skipped)
        self._reloading = threading.Lock()

    def reload(self, environ: Mapping[str, str] | None = None) -> Reloaded:
        """Load both files again; swap them in if valid, else raise ConfigError and keep serving the old config."""
        with self._reloading:
            current = self.config
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
            changed = config != current
            disposed: list[str] = []
            if changed:
                self.config = config
                disposed = self.engines.retain(config.targets)
                self.telemetry.retain(config.targets)
                self.prober.forget_results()
            self.telemetry.config_loaded(changed=changed)
            log.info(
                "reload: %s, %d targets, %d engines disposed",
                "config changed" if changed else "nothing changed",
                len(config.targets),
                len(disposed),
                extra={"event": "reload", "changed": changed, "targets": len(config.targets), "disposed": disposed},
            )
            return Reloaded(config, changed, tuple(disposed))

    def close(self) -> None:
        """Stop probing and close every pooled connection."""
        self.prober.close()
        self.engines.dispose_all()
