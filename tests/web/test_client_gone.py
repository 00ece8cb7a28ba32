"""/probe served by an ASGI server other than sqlprobe's protocol: a client's http.disconnect stops its probe."""

import asyncio
import time
from pathlib import Path

from app.web.app import create_app
from tests.helpers import metric, target, wait_until, write_config
from tests.servers import EXPORTER_USER, MariaDB


def _sleeping(server: MariaDB) -> int:
    rows = server.root_query(
        f"select count(*) from information_schema.processlist where user = '{EXPORTER_USER}' "
        "and info like 'select sleep(15)%'"
    )
    return int(rows[0][0])


def test_a_probe_whose_asgi_client_disconnects_is_not_answered_and_its_statement_is_killed(
    tmp_path: Path, fleet: list[MariaDB]
) -> None:
    server = fleet[0]
    config = write_config(
        tmp_path,
        {"slow": target(server.dsn, "slow", timeout="20s")},
        {"slow": {"slept": metric("select sleep(15) as slept", "slept")}},
    )
    app = create_app(config)
    sent: list[dict[str, object]] = []

    async def scenario() -> float:
        disconnected = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": "/probe", "raw_path": b"/probe", "query_string": b"target=slow", "root_path": "",
            "headers": [(b"host", b"sqlprobe")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 9104),
        }  # fmt: skip
        probe = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        started = await asyncio.to_thread(wait_until, lambda: _sleeping(server) == 1, 5)
        assert started, "the probe's statement never started"
        disconnected.set()
        await asyncio.wait_for(probe, 5)  # before, the probe ran on for its 15 s
        left = time.monotonic()
        stopped = await asyncio.to_thread(wait_until, lambda: _sleeping(server) == 0, 5)
        assert stopped
        return time.monotonic() - left

    took = asyncio.run(scenario())
    assert took < 3
    assert sent == []  # nobody to answer
