"""PostgreSQL probes given up on by the dozen, beside probes that connect anew: no error escapes to the log."""

import asyncio
import logging
import time
from pathlib import Path

import pytest

from app.engine_cache import EngineCache
from app.prober import Prober
from tests.helpers import metric, target, write_config
from tests.postgres import PostgreSQL

SLOW_TARGETS = 30  # as many as the test server takes (max_connections 30): some connects are refused too
QUICK_LOOPS = 6
SECONDS = 8.0


def test_postgresql_probes_given_up_by_the_dozen_log_no_error(
    tmp_path: Path, postgres: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    sets = {"slow": {"s": metric("select pg_sleep(2) as s", "s")}, "quick": {"q": metric("select 1 as q", "q")}}
    targets = {f"slow{index}": target(postgres.dsn, "slow") for index in range(SLOW_TARGETS)}
    targets |= {f"quick{index}": target(postgres.dsn, "quick") for index in range(QUICK_LOOPS)}
    config = write_config(tmp_path, targets, sets)

    async def storm() -> None:
        engines = EngineCache()
        prober = Prober(engines)
        stop = time.monotonic() + SECONDS

        async def give_up(index: int) -> None:
            # Each probe gives up on its statement (a cancel request, its connection cut half a second later).
            while time.monotonic() < stop:
                await prober.probe(config.targets[f"slow{index}"], None, 0.2)
                await asyncio.sleep(0.05 * (index % 7))

        async def connect_anew(index: int) -> None:
            while time.monotonic() < stop:
                await prober.probe(config.targets[f"quick{index}"], None, 3.0)
                engines.dispose_idle(0)  # the next probe connects again

        await asyncio.gather(*map(give_up, range(SLOW_TARGETS)), *map(connect_anew, range(QUICK_LOOPS)))
        prober.close()
        await engines.killer.close(1.0)
        await prober.wait_closed()
        await engines.dispose_all()

    with caplog.at_level(logging.WARNING):
        asyncio.run(storm())
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
