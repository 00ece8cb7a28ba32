"""uvicorn's private parts that sqlprobe uses are checked at start-up, with a fallback if missing; the database
drivers are used by their public API only."""

import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx2 as httpx
import pytest

from app.web import internals
from tests.helpers import ITEMS_SET, parse_samples, target, value, wait_until
from tests.served import serve
from tests.servers import MariaDB


@pytest.fixture
def fresh_checks() -> Iterator[None]:
    """The checks run again in this test, and again after it."""
    internals.uvicorn_missing.cache_clear()
    yield
    internals.uvicorn_missing.cache_clear()


@pytest.mark.usefixtures("fresh_checks")
def test_the_installed_uvicorn_has_every_internal_sqlprobe_uses() -> None:
    assert internals.uvicorn_missing() == ()
    assert internals.fallback_warnings() == []


@pytest.mark.usefixtures("fresh_checks")
def test_the_check_names_the_internals_a_version_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)  # as if uvicorn moved it
    assert internals.uvicorn_missing() == ("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol",)
    assert [line.split(" lacks ")[0].split()[0] for line in internals.fallback_warnings()] == ["uvicorn"]


# Started before sqlprobe's own modules: uvicorn's httptools protocol cannot be imported (as if a release had moved
# it).
_SITECUSTOMIZE = """
    import sys
    sys.modules["uvicorn.protocols.http.httptools_impl"] = None
"""


def test_without_the_internals_sqlprobe_warns_once_and_probes_on_the_stock_protocol(
    tmp_path: Path, fleet: Sequence[MariaDB], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fleet[0]
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(_SITECUSTOMIZE))
    monkeypatch.setenv("PYTHONPATH", ":".join(filter(None, [str(hooks), *sys.path[:1], *sys.path[1:2]])))
    slow = {"slow": {"query": "select sleep(5) as s", "type": "gauge", "description": "d", "value": "s"}}
    targets = {"db": target(server.dsn, "items", "slow")}
    with serve(tmp_path / "served", targets, {"items": ITEMS_SET, "slow": slow}) as running:
        samples = parse_samples(httpx.get(f"{running.url}/probe", params={"target": "db", "query_set": "items"}).text)
        assert value(samples, "probe_success") == 1.0
        for kind, qty in server.query(ITEMS_SET["qty_by_kind"]["query"]):
            assert value(samples, "query_exporter_qty_by_kind", kind=kind) == float(qty)
        # A query past its deadline is still killed on the server.
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "1"}
        response = httpx.get(f"{running.url}/probe", params={"target": "db", "query_set": "slow"}, headers=headers)
        assert value(parse_samples(response.text), "probe_success") == 0.0
        assert _no_sleeping_session(server)
    lines = running.log.read_text().splitlines()
    warnings = [line for line in lines if " lacks " in line]
    assert len(warnings) == 1, lines
    assert " uvicorn " in warnings[0]
    assert "answers use uvicorn's stock HTTP protocol" in warnings[0]
    assert not any("Traceback" in line for line in lines)


def _no_sleeping_session(server: MariaDB) -> bool:
    return wait_until(lambda: not any(info and "sleep" in info for _, _, info in server.exporter_sessions()), 5)
