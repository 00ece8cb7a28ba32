"""Small helpers the tests share: writing configs, building apps, reading exposition text."""

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Config, load_config
from app.web.app import create_app

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]

# A query set over the test schema (tests/servers.py: setup_schema).
ITEMS_SET: dict[str, Any] = {
    "qty_by_kind": {
        "query": "select kind, sum(qty) as qty from items group by kind",
        "type": "gauge",
        "description": "items in stock by kind",
        "labels": ["kind"],
        "value": "qty",
    },
    "price": {
        "query": "select kind, color, price from items",
        "type": "gauge",
        "description": "price of an item by kind and color",
        "labels": ["kind", "color"],
        "value": "price",
    },
    "items_created": {
        "query": "select count(*) as n from items",
        "type": "counter",
        "description": "items ever created",
        "value": "n",
    },
}


def write_config(
    directory: Path,
    targets: Mapping[str, Any],
    query_sets: Mapping[str, Any],
    namespace: str = "query_exporter",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Write targets.yml and queries.yml into ``directory`` and load them."""
    targets_path = directory / "targets.yml"
    queries_path = directory / "queries.yml"
    targets_path.write_text(yaml.safe_dump({"targets": dict(targets)}, sort_keys=False))
    queries_path.write_text(yaml.safe_dump({"namespace": namespace, "query_sets": dict(query_sets)}, sort_keys=False))
    return load_config(targets_path, queries_path, environ=environ or {})


def metric(query: str, value: str, *labels: str, kind: str = "gauge") -> dict[str, Any]:
    """A queries.yml metric block."""
    return {"query": query, "type": kind, "description": "test metric", "labels": list(labels), "value": value}


@dataclass(frozen=True)
class ProbeViews:
    """One target seen three ways: its probe's samples, its debug page, and sqlprobe's own metrics after."""

    samples: Samples
    debug: str
    own: Samples


def probe_views(client: TestClient, name: str) -> ProbeViews:
    """Probe ``name``, then its debug page, then read /metrics."""
    samples = parse_samples(client.get("/probe", params={"target": name}).text)
    debug = client.get("/probe", params={"target": name, "debug": "true"}).text
    return ProbeViews(samples, debug, parse_samples(client.get("/metrics").text))


def target(dsn: str, *query_sets: str, timeout: str | None = "10s") -> dict[str, Any]:
    """A targets.yml entry; ``timeout=None`` leaves the target's timeout at sqlprobe's default."""
    return {"dsn": dsn, "query_sets": list(query_sets)} | ({} if timeout is None else {"timeout": timeout})


@contextmanager
def client_for(config: Config, **options: Any) -> Iterator[TestClient]:
    """A TestClient on a fresh app serving ``config`` (``options`` go to create_app), lifespan running."""
    with TestClient(create_app(config, **options), raise_server_exceptions=True) as client:
        yield client


def parse_samples(text: str) -> Samples:
    """Samples of exposition text by sample name, then by sorted label pairs; fails on invalid text."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name{labels}``."""
    return samples[name][tuple(sorted(labels.items()))]


def wait_until(condition: Callable[[], object], seconds: float) -> bool:
    """Poll ``condition`` until it is true or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def missing(reason: str) -> NoReturn:
    """A tool the tests need is absent: fail under CI, skip loudly elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(f"SKIPPED, NOT PASSED: {reason}")
