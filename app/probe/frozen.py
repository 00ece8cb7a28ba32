"""Long-lived objects kept out of the garbage collector's full collections, so that they stay short.

A full collection walks every object the collector tracks, and stops every thread while it does: with 2,000
cached engines (some 150 objects each, SQLAlchemy's and the driver's) it took 0.2-0.6 s, a pause every probe in
flight waits out (tests/bench/pauses.py). Nearly all of those objects live for hours: the config, the engines,
their pooled connections. Whatever survived a full collection is therefore frozen (gc.freeze()) as it ends, and
the next one walks only what has come to live since.

Frozen objects freed by their reference counts go as before; garbage that only the collector finds (objects in a
cycle) stays while frozen. Engines disposed and configs replaced are such garbage: thaw() marks the frozen
objects for the next full collection, which then walks them all once and frees them. So that cycles freed by
nothing we see (a pooled connection replaced after its server went away) cannot pile up, every THAW_EVERY-th full
collection walks them too.
"""

import gc
from collections.abc import Callable

# One full collection in this many walks the frozen objects as well (none is skipped for longer than that).
THAW_EVERY = 16
# And so does the next one once the frozen objects grew by this share since the last walk of them all: objects
# that were alive only for a while may be garbage by now, and they cannot make up more than that share of what the
# collector keeps (Python's own rule for full collections waits for a quarter, but holds no garbage back meanwhile).
THAW_GROWTH = 0.10


# Probes in flight at most for a full collection's survivors to be frozen: more, and many of the survivors are the
# probes' own objects (2,000 probes waiting on silent hosts), soon garbage in cycles that frozen would stay.
QUIET = 32


class Freezer:
    """The collector's hook from start() to stop(); thaw() may be called from any thread. ``in_flight`` tells how
    many probes are being answered."""

    def __init__(self, in_flight: Callable[[], int] = lambda: 0) -> None:
        self._in_flight = in_flight
        self._thaw = False
        self._since_thawed = 0
        self._frozen_when_thawed = 0  # objects frozen after the last collection that walked them all

    def start(self) -> None:
        """Freeze what is alive now (the config, the modules), and every full collection's survivors from now on.

        Without a collection first (a tenth of a second and more in a big process): start-up's garbage among them is
        walked again by the first full collection that thaws (the frozen set grows by a tenth as engines come)."""
        gc.freeze()
        self._frozen_when_thawed = gc.get_freeze_count()
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Stop freezing and give the frozen objects back to the collector (the hook is the process's: tests run
        several apps in one process)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def thaw(self) -> None:
        """Frozen objects may have become garbage in cycles (engines disposed, a config replaced): the next full
        collection walks them too."""
        self._thaw = True

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._since_thawed += 1
            grown = gc.get_freeze_count() > self._frozen_when_thawed * (1 + THAW_GROWTH)
            if self._thaw or grown or self._since_thawed >= THAW_EVERY:
                # Called before the collection starts: what is unfrozen now is collected by this very collection.
                self._thaw, self._since_thawed = False, 0
                gc.unfreeze()
        elif self._in_flight() <= QUIET:
            gc.freeze()  # the survivors: every unreachable object among them has just been freed
            if self._since_thawed == 0:
                self._frozen_when_thawed = gc.get_freeze_count()
