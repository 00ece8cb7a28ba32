"""The shipped mysqld_exporter query set against the real mysqld_exporter (Debian's), series by series."""

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.config import load_config
from tests.helpers import client_for, missing
from tests.paths import ROOT_DIR
from tests.servers import EXPORTER_USER, MariaDB, free_port

# Series of mysqld_exporter's default collectors that the set leaves out, by family, with the reason.
LEFT_OUT = {
    # No one read-only statement gives it under a label named "level" on both MySQL 8 (transaction_isolation
    # only) and MariaDB before 11.1 (tx_isolation only): it needs a column renamed into a label, not there yet.
    "mysql_transaction_isolation": "needs a label named otherwise than its column (not in the config language yet)",
    # MariaDB reports wsrep_cluster_name (my_wsrep_cluster) without Galera; the variable does not exist on MySQL.
    "mysql_galera_variables_info": "Galera only; mysqld_exporter writes it for any MariaDB, Galera or not",
}
# mysqld_exporter's own metrics (scrapes, errors, collector durations, Go runtime, process): sqlprobe has its own.
OWN_PREFIXES = ("go_", "process_", "promhttp_", "mysqld_exporter_", "mysql_exporter_")
# Status variables that describe the scraping session itself or the server's memory at the moment: they may
# move either way between scrapes, so only their presence, labels and type are compared.
MOVING = frozenset(
    {
        "mysql_global_status_memory_used",
        "mysql_global_status_memory_used_initial",
        "mysql_global_status_threads_connected",
        "mysql_global_status_threads_running",
        "mysql_global_status_threads_cached",
        "mysql_global_status_open_files",
        "mysql_global_status_open_tables",
        "mysql_global_status_opened_tables",
        "mysql_global_status_opened_table_definitions",
        "mysql_global_status_open_table_definitions",
        "mysql_global_status_buffer_pool_pages",
        "mysql_global_status_innodb_buffer_pool_bytes_data",
        "mysql_global_status_max_used_connections",
        "mysql_global_status_uptime",
        "mysql_global_status_uptime_since_flush_status",
        "mysql_global_status_innodb_buffer_pool_bytes_dirty",
        "mysql_global_status_buffer_pool_dirty_pages",
    }
)

Series = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, float]]


def _series(text: str) -> Series:
    """(sample name, sorted labels) → (family type, value) of every sample in exposition text."""
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = (family.type, sample.value)
    return found


def _family(name: str) -> str:
    return name.removesuffix("_total") if name.endswith("_total") else name


@contextmanager
def _mysqld_exporter(tmp_path: Path, server: MariaDB) -> Iterator[str]:
    """Debian's prometheus-mysqld-exporter for ``server`` on a free loopback port; yields its /metrics URL."""
    binary = shutil.which("prometheus-mysqld-exporter")
    if binary is None:
        missing("mysqld_exporter is not installed: apt-get install prometheus-mysqld-exporter")
    cnf = tmp_path / "my.cnf"
    cnf.write_text(f"[client]\nuser={EXPORTER_USER}\npassword={server.password}\nhost=127.0.0.1\nport={server.port}\n")
    cnf.chmod(0o600)
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.my-cnf={cnf}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mysqld_exporter did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return _series(answer.read().decode())


def test_mysqld_exporter_set_emits_every_series_of_mysqld_exporter_with_its_name_labels_type_and_value(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    targets = tmp_path / "targets.yml"
    targets.write_text(yaml.safe_dump({"targets": {"db": {"dsn": server.dsn, "query_sets": ["mysqld_exporter"]}}}))
    config = load_config(targets, ROOT_DIR / "queries.yml", environ={})
    with _mysqld_exporter(tmp_path, server) as url, client_for(config) as client:
        before = _scrape(url)
        answer = client.get("/probe", params={"target": "db"})
        after = _scrape(url)
    ours = _series(answer.text)
    assert ours[("probe_success", ())][1] == 1.0

    theirs = {key: found for key, found in after.items() if not key[0].startswith(OWN_PREFIXES)}
    left_out = {key for key in theirs if _family(key[0]) in LEFT_OUT}
    compared = {key: found for key, found in theirs.items() if key not in left_out}
    absent = sorted(key for key in compared if key not in ours)
    mistyped = sorted(
        (key, ours[key][0], kind) for key, (kind, _) in compared.items() if key in ours and ours[key][0] != kind
    )
    differing = []
    for key, (_, value) in compared.items():
        if key not in ours or key not in before:
            continue
        low, high = sorted((before[key][1], value))
        if _family(key[0]) in MOVING:
            continue
        if not low <= ours[key][1] <= high:
            differing.append((key, before[key][1], ours[key][1], value))
    coverage = 100.0 * (len(compared) - len(absent) - len(mistyped)) / len(theirs)
    print(f"mysqld_exporter series: {len(theirs)}; identical in sqlprobe: {coverage:.1f}%; left out: {len(left_out)}")
    assert absent == []
    assert mistyped == []
    assert differing == []
    assert coverage >= 99.0
    # Nothing of the set's families that mysqld_exporter does not write either.
    extra = sorted(key for key in ours if key[0].startswith("mysql_") and key not in theirs)
    assert extra == []


# The metric names the mysqld mixin's alerts, recording rules and "MySQL overview" dashboard read, written from
# our knowledge of the mixin (not taken from its files). Its mysql_slave_status_* names (lag, thread states) are
# left out: the set has no slave status yet, and the fleet's servers are not replicas.
MIXIN_NAMES = [
    "mysql_up",
    "mysql_global_status_uptime",
    "mysql_global_status_queries",
    "mysql_global_status_questions",
    "mysql_global_status_threads_connected",
    "mysql_global_status_threads_running",
    "mysql_global_status_threads_cached",
    "mysql_global_status_threads_created",
    "mysql_global_variables_max_connections",
    "mysql_global_status_max_used_connections",
    "mysql_global_status_aborted_connects",
    "mysql_global_status_aborted_clients",
    "mysql_global_status_slow_queries",
    "mysql_global_status_commands_total",
    "mysql_global_status_handlers_total",
    "mysql_global_status_bytes_received",
    "mysql_global_status_bytes_sent",
    "mysql_global_status_table_locks_immediate",
    "mysql_global_status_table_locks_waited",
    "mysql_global_status_created_tmp_tables",
    "mysql_global_status_created_tmp_disk_tables",
    "mysql_global_status_created_tmp_files",
    "mysql_global_status_select_full_join",
    "mysql_global_status_select_full_range_join",
    "mysql_global_status_select_range",
    "mysql_global_status_select_range_check",
    "mysql_global_status_select_scan",
    "mysql_global_status_sort_rows",
    "mysql_global_status_sort_range",
    "mysql_global_status_sort_merge_passes",
    "mysql_global_status_sort_scan",
    "mysql_global_status_open_files",
    "mysql_global_variables_open_files_limit",
    "mysql_global_status_opened_files",
    "mysql_global_status_open_tables",
    "mysql_global_status_opened_tables",
    "mysql_global_variables_table_open_cache",
    "mysql_global_status_table_open_cache_hits",
    "mysql_global_status_table_open_cache_misses",
    "mysql_global_status_table_open_cache_overflows",
    "mysql_global_status_qcache_hits",
    "mysql_global_status_qcache_inserts",
    "mysql_global_status_qcache_not_cached",
    "mysql_global_status_qcache_lowmem_prunes",
    "mysql_global_status_qcache_queries_in_cache",
    "mysql_global_variables_innodb_buffer_pool_size",
    "mysql_global_variables_innodb_log_buffer_size",
    "mysql_global_variables_key_buffer_size",
    "mysql_global_variables_query_cache_size",
    "mysql_global_status_innodb_log_waits",
    "mysql_global_status_innodb_page_size",
    "mysql_global_status_buffer_pool_pages",
    "mysql_global_status_innodb_buffer_pool_read_requests",
    "mysql_global_status_innodb_buffer_pool_reads",
    "mysql_global_status_innodb_num_open_files",
    "mysql_global_status_connection_errors_total",
    "mysql_global_status_innodb_mem_adaptive_hash",
    "mysql_global_status_innodb_mem_dictionary",
    "mysql_global_status_key_blocks_unused",
    "mysql_global_status_innodb_data_reads",
    "mysql_global_status_innodb_data_writes",
    "mysql_global_status_innodb_os_log_written",
    "mysql_version_info",
]


def test_every_metric_name_the_mysqld_mixin_reads_is_in_the_mysqld_exporter_set(
    tmp_path: Path, fleet: Sequence[MariaDB]
) -> None:
    server = fleet[0]
    targets = tmp_path / "targets.yml"
    targets.write_text(yaml.safe_dump({"targets": {"db": {"dsn": server.dsn, "query_sets": ["mysqld_exporter"]}}}))
    config = load_config(targets, ROOT_DIR / "queries.yml", environ={})
    with client_for(config) as client:
        names = {name for name, _ in _series(client.get("/probe", params={"target": "db"}).text)}
    assert sorted(name for name in MIXIN_NAMES if name not in names) == []
