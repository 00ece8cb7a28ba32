"""The status page in a real headless Chromium: states, the filter box, and the log link of a failing target."""

from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.chromium import chromium
from tests.helpers import ITEMS_SET, target
from tests.served import serve
from tests.servers import MariaDB

_CLEAR = Keys.CONTROL + "a" + Keys.NULL  # select all; NULL lets go of CONTROL


def test_status_page_in_chromium_shows_states_filters_rows_and_opens_the_failing_ones_log(
    tmp_path: Path, fleet: Sequence[MariaDB], closed_port: int, silent_port: int, chromium_binaries: tuple[str, str]
) -> None:
    targets = {
        "healthy": target(fleet[0].dsn, "items"),
        "dead": target(f"mysql+pymysql://u:p@127.0.0.1:{closed_port}/", "items"),
        "hung": target(f"mysql+pymysql://u:p@127.0.0.1:{silent_port}/", "items", timeout="1s"),
    }
    with serve(tmp_path, targets, {"items": ITEMS_SET}) as served, chromium(chromium_binaries) as browser:
        for name in targets:
            assert httpx.get(f"{served.url}/probe", params={"target": name}, timeout=10).status_code == 200
        browser.get(f"{served.url}/")

        def shown() -> dict[str, tuple[str, str]]:
            """(state, why) of each row the page shows now, by target."""
            rows = browser.find_elements(By.CSS_SELECTOR, "#targets tr")
            cells = [row.find_elements(By.TAG_NAME, "td") for row in rows if row.is_displayed()]
            return {row[0].text: (row[1].text, row[5].text) for row in cells}

        counts = {name: browser.find_element(By.ID, name).text for name in ("total", "failing", "never", "ok")}
        order = [
            row.find_element(By.TAG_NAME, "td").text for row in browser.find_elements(By.CSS_SELECTOR, "#targets tr")
        ]
        everything = shown()
        search = browser.find_element(By.ID, "filter")
        search.send_keys("refused")
        refused_only = shown()
        search.send_keys(_CLEAR, "HEALTHY")  # as a person types: select all, then the new words
        healthy_only = shown()
        search.send_keys(_CLEAR, Keys.BACKSPACE)
        cleared = shown()
        browser.find_element(By.XPATH, "//tr[td[1]='dead']//a[text()='log']").click()
        log_url = browser.current_url
        log_text = browser.find_element(By.TAG_NAME, "body").text
    assert counts == {"total": "3", "failing": "2", "never": "0", "ok": "1"}
    assert order == ["dead", "hung", "healthy"]
    assert {name: state for name, (state, _) in everything.items()} == {
        "dead": "failing",
        "hung": "failing",
        "healthy": "ok",
    }
    reason, _, metrics = everything["dead"][1].rpartition(" (")
    assert reason.startswith("connect ")
    assert sorted(metrics.removesuffix(")").split(", ")) == sorted(ITEMS_SET)
    # The server never answers: the deadline passes first, or the handshake's read gives up at about the same time.
    assert everything["hung"][1].startswith(("timeout deadline of 1s exceeded", "connect (2013, 'Lost connection"))
    assert everything["healthy"][1] == ""
    assert list(refused_only) == ["dead"]
    assert cleared == everything
    assert list(healthy_only) == ["healthy"]
    assert log_url == f"{served.url}/logs?target=dead"
    assert log_text.startswith("# last probe of dead: failed, ended ")
    assert "connection failed (connect): " in log_text
