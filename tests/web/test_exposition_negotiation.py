"""/probe and /metrics answer the Accept headers Prometheus really sends with exactly the format they write."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.helpers import client_for, target, write_config

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# The Accept headers, quoted as Prometheus builds them (scrape/scrape.go acceptHeader, config/config.go
# ScrapeProtocolsHeaders and DefaultScrapeProtocols), with the format each must get.
PROMETHEUS_ACCEPT = {
    # 2.x before scrape_protocols (up to 2.48): a constant; this is what Debian's 2.42 sends, captured on a socket.
    "prometheus_2.42": (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        OPENMETRICS,
    ),
    # 2.49-2.55: weights from the four known protocols, the default three of them.
    "prometheus_2.49": (
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OPENMETRICS,
    ),
    # 3.0-3.3: UTF-8 names, escaping=allow-utf-8 on every protocol.
    "prometheus_3.0": (
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
        "text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
        OPENMETRICS,
    ),
    # 3.4 and later: the escaping only on the 1.0.0 formats.
    "prometheus_3.4": (
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        OPENMETRICS,
    ),
    # 3.x with metric_name_escaping_scheme: dots: names would have to be escaped, which sqlprobe does not do.
    "prometheus_3.4_dots": (
        "application/openmetrics-text;version=1.0.0;escaping=dots;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=dots;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        TEXT,
    ),
    # 3.x with native histograms: protobuf first, which sqlprobe does not write.
    "prometheus_3.4_protobuf_first": (
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,"
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
        "application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
        OPENMETRICS,
    ),
    # 3.x with scrape_protocols: [PrometheusText0.0.4].
    "prometheus_3.4_text_only": ("text/plain;version=0.0.4;q=0.6,*/*;q=0.5", TEXT),
    "none": ("", TEXT),
    "curl": ("*/*", TEXT),
    "browser": ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", TEXT),
    # Formats sqlprobe does not write are never claimed.
    "openmetrics_2.0.0": ("application/openmetrics-text;version=2.0.0", TEXT),
    "openmetrics_0.0.1_only": ("application/openmetrics-text;version=0.0.1", TEXT),
    "text_1.0.0_values": ("text/plain;version=1.0.0;escaping=values", TEXT),
    "openmetrics_refused": ("application/openmetrics-text;q=0,text/plain;q=0.1", TEXT),
    "text_preferred_by_q": ("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.9", TEXT),
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """An app with one SQLite target."""
    query_sets = {"one": {"up": {"query": "select 1 as up", "type": "gauge", "description": "d", "value": "up"}}}
    with client_for(write_config(tmp_path, {"db": target("sqlite://", "one")}, query_sets)) as test_client:
        yield test_client


@pytest.mark.parametrize(("accept", "content_type"), PROMETHEUS_ACCEPT.values(), ids=list(PROMETHEUS_ACCEPT))
def test_the_answer_is_in_the_format_its_content_type_names(client: TestClient, accept: str, content_type: str) -> None:
    for path in ("/probe?target=db", "/metrics"):
        response = client.get(path, headers={"Accept": accept} if accept else {})
        assert response.headers["content-type"] == content_type
        if content_type == OPENMETRICS:
            assert response.text.endswith("# EOF\n")
            names = {family.name for family in parse_openmetrics(response.text)}  # type: ignore[no-untyped-call]
        else:
            assert "# EOF" not in response.text
            names = {family.name for family in parse_text(response.text)}
        assert ("probe_success" if path.startswith("/probe") else "sqlprobe_probes") in names
