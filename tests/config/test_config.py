"""Loading targets.yml and queries.yml: what a valid pair gives, and the exact error for each bad one."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.config import load_config
from app.errors import ConfigError
from tests.paths import ROOT_DIR, TESTS_DIR

CONFIGS = TESTS_DIR / "configs"
BAD = CONFIGS / "bad"
ROOT = ROOT_DIR
ENV = {"TEST_PASSWORD": "s3cret-for-config-test"}
# Why a key PyMySQL takes may be refused: probes connect with aiomysql (written out: the test reads what users read).
AIOMYSQL_WHY = (
    " (probes connect with aiomysql, PyMySQL's protocol on asyncio: the probe's deadline bounds every wait, and TLS"
    " is set with the tls: key)"
)


def test_valid_config_applies_defaults_and_reads_the_password_from_the_environment() -> None:
    config = load_config(CONFIGS / "targets.yml", CONFIGS / "queries.yml", environ=ENV)
    one, two = config.targets["one"], config.targets["two"]
    assert one.query_sets == ("basic",)
    assert one.timeout == 10.0
    assert two.timeout == 2.5
    assert dict(two.labels) == {"region": "eu", "rack": "7"}
    assert two.url.password == ENV["TEST_PASSWORD"]
    assert two.display_dsn == "mysql+pymysql://user:***@127.0.0.1:3306/"


def test_a_password_from_the_environment_may_hold_any_character() -> None:
    password = "p@ss/w#rd%41:?&=+ x"
    config = load_config(CONFIGS / "targets.yml", CONFIGS / "queries.yml", environ={"TEST_PASSWORD": password})
    url = config.targets["two"].url
    assert (url.username, url.password, url.host, url.port) == ("user", password, "127.0.0.1", 3306)


def test_metrics_sharing_sql_are_grouped_into_one_query_and_counters_lose_total_in_the_family() -> None:
    config = load_config(CONFIGS / "targets.yml", CONFIGS / "queries.yml", environ=ENV)
    queries = config.targets["two"].queries
    assert [(query.sql, [metric.key for metric in query.metrics]) for query in queries] == [
        ("select 1 as up", ["up", "up_again"]),
        ("select 2 as n", ["rows"]),
    ]
    assert [metric.name for metric in config.query_sets["extra"]] == ["test_rows", "test_up_again"]
    assert [[m.key for m in q.metrics] for q in config.targets["two"].queries_for(frozenset({"extra"}))] == [
        ["up_again"],
        ["rows"],
    ]


# Each bad file replaces the valid file of its kind; the expected lines are the exact errors, in order.
BAD_CASES = {
    "unknown_metric_key.queries.yml": [
        "3: query_sets.basic.up.description: required key is missing",
        "6: query_sets.basic.up.descripton: unknown key",
    ],
    "unknown_type.queries.yml": ["5: query_sets.basic.up.type: Input should be 'gauge', 'counter' or 'untyped'"],
    "name_from_bad.queries.yml": [
        "3: query_sets.basic.status: name_from: goes with value (one value column), not values or static_value",
        "16: query_sets.basic.variables.families[0].match: group 'instance': a named group becomes a label,"
        " and 'instance' cannot be one",
        "20: query_sets.basic.variables.families[1].match: invalid regular expression 'handler_(': missing ),"
        " unterminated subpattern at position 8",
        "22: query_sets.basic.variables.families[2]: give name, type and description (or drop: true)",
        "24: query_sets.basic.plain: families: only goes with name_from",
        # Matched by RE2, in time linear in the row name: what it cannot run so is refused where it is written.
        "44: query_sets.basic.hostile.families[0].match: regular expression '(?P<twice>a+)b(?P=twice)' cannot be"
        " matched in linear time (RE2: invalid perl operator: (?P): no backreferences or lookaround",
        "46: query_sets.basic.hostile.families[1].match: regular expression 'a(?=b)' cannot be matched in linear"
        " time (RE2: invalid perl operator: (?=): no backreferences or lookaround",
    ],
    "name_from_clash.queries.yml": [
        "14: query_sets.basic.probe: metric name 'probe': the names of its families may be reserved by sqlprobe",
        "9: query_sets.basic.status_uptime: metric name 'query_exporter_status_uptime' falls under"
        " query_exporter_status_*, named from rows by metric 'status'",
    ],
    "bad_metric_name.queries.yml": [
        "3: query_sets.basic.bad-name: invalid name 'bad-name': must match ^[a-zA-Z_:][a-zA-Z0-9_:]*$"
    ],
    "bad_label_name.queries.yml": [
        "7: query_sets.basic.up.labels[0]: invalid name '1host': must match ^[a-zA-Z_][a-zA-Z0-9_]*$"
    ],
    "reserved_label.queries.yml": [
        "7: query_sets.basic.up.labels[0]: label name '__name__' is reserved (names starting with __ belong to Prometheus)"
    ],
    "reserved_metric.queries.yml": [
        "4: query_sets.basic.probe_success: metric name 'probe_success' is reserved by sqlprobe"
    ],
    "clashing_names.queries.yml": [
        "8: query_sets.basic.requests_total: metric name 'query_exporter_requests_total' is also produced by metric 'requests'"
    ],
    "value_and_values.queries.yml": [
        "3: query_sets.basic.up: give exactly one of value, values and static_value (got value, values)",
        "9: query_sets.basic.info: give exactly one of value, values and static_value (got none)",
    ],
    "value_label_without_values.queries.yml": ["3: query_sets.basic.up: value_label: only goes with values"],
    "value_label_clash.queries.yml": [
        "3: query_sets.basic.up: value_label: label 'column' is also a label of the metric",
        "9: query_sets.basic.twice: values: a column is listed twice",
    ],
    "static_labels_bad.queries.yml": [
        "3: query_sets.basic.up: static_labels: label 'host' is also listed in labels",
        "15: query_sets.basic.down.static_labels.job: label name 'job' is reserved (Prometheus sets job and instance on every scraped series)",
    ],
    "static_label_shadowed.targets.yml": [
        "4: targets.one.query_sets[0]: label 'region' of metric 'sessions' (query set 'regional') is also one of the target's labels"
    ],
    # Columns are found ignoring case: n and N are one column, which would give two series of one cell.
    "columns_differing_in_case.queries.yml": [
        "3: query_sets.basic.values_twice: values: a column is listed twice",
        "8: query_sets.basic.label_is_value: value: column 'n' is also listed as a label",
        "14: query_sets.basic.timestamp_is_value: timestamp_value: column 'N' is also a value column",
    ],
    "timestamp_is_value.queries.yml": [
        "3: query_sets.basic.up: timestamp_value: column 'up' is also a value column",
        "13: query_sets.basic.info.static_value: Input should be a valid number",
    ],
    "parameters_bad.queries.yml": [
        "3: query_sets.basic.not_in_sql: parameters: the query must name every parameter as :name and no other (given but not in the query: :table; in the query but not given: none)",
        "16: query_sets.basic.uneven.parameters: every set must name the same parameters (schema), set 2 names table",
        "23: query_sets.basic.not_a_value.parameters: set 1, schema: expected a string, a number, true/false or null",
        "30: query_sets.basic.empty_matrix.parameters: schema: expected a non-empty list of mappings",
        "37: query_sets.basic.too_many.parameters: 1331 combinations, more than the 1000 runs a probe may make",
    ],
    "value_is_label.queries.yml": ["3: query_sets.basic.up: value: column 'up' is also listed as a label"],
    "invalid_yaml.queries.yml": ["5: invalid YAML: expected <block end>, but found '<block mapping start>'"],
    "duplicate_key.queries.yml": ["8: query_sets.basic.up: duplicate key"],
    "unknown_query_set.targets.yml": [
        f"4: targets.one.query_sets[1]: unknown query set 'nonexistent' (not defined in {CONFIGS / 'queries.yml'})"
    ],
    "unknown_target_key.targets.yml": [
        "2: targets.one.query_sets: required key is missing",
        "4: targets.one.query_set: unknown key",
    ],
    # An escape sequence or line break in a key must not act in the terminal or log that shows the error.
    "control_character_key.targets.yml": ["5: targets.one.time\\x1bout\\n: unknown key"],
    "unset_variable.targets.yml": ["3: targets.one.dsn: environment variable SQLPROBE_TEST_UNSET is not set"],
    "bad_timeout.targets.yml": ["5: targets.one.timeout: '10 seconds' is not a duration such as 500ms, 10s or 1m"],
    "bad_default.targets.yml": ["2: defaults.timeout: '-1s' is not a duration such as 500ms, 10s or 1m"],
    "lock_wait_above_timeout.targets.yml": ["2: targets.one: lock_wait_timeout: 6s is longer than the timeout (5s)"],
    # Session settings go into SQL text and libpq's options: checked per driver, values of safe characters only.
    "session_settings_bad.targets.yml": [
        "4: defaults.session_settings.sql_log_off: 'sql_log_off' is not a setting sqlprobe lets a MySQL/MariaDB session take (docs/configuration.md lists them)",
        "10: targets.mariadb.session_settings.autocommit: 'autocommit' is sqlprobe's own setting: each statement runs in a transaction of its own",
        "11: targets.mariadb.session_settings.lock_wait_timeout: 'lock_wait_timeout' is sqlprobe's own setting: set by lock_wait_timeout:",
        "12: targets.mariadb.session_settings.work_mem: 'work_mem' is not a setting sqlprobe lets a MySQL/MariaDB session take (docs/configuration.md lists them)",
        '18: targets.quoted.session_settings.log_slow_query: "OFF\'; DROP TABLE t; --": a text value holds letters, digits and _ . , : + / - only (no quotes, semicolons or blanks), at most 100',
        "19: targets.quoted.session_settings.time_zone: give a number, true/false or a text",
        "20: targets.quoted.session_settings.log statement: 'log statement' is not a server variable's name",
    ],
    "session_settings_other_drivers.targets.yml": [
        "8: targets.postgres.session_settings.statement_timeout: '10s' is not within the target's timeout (5000ms), which sqlprobe's own follows",
        "9: targets.postgres.session_settings.default_transaction_read_only: 'default_transaction_read_only' is sqlprobe's own setting: set by read_only:",
        "10: targets.postgres.session_settings.long_query_time: 'long_query_time' is not a setting sqlprobe lets a PostgreSQL session take (docs/configuration.md lists them)",
        "14: targets.lite.session_settings.jit: this driver takes no session settings (MySQL, MariaDB, PostgreSQL)",
    ],
    "metric_timeout_zero.queries.yml": ["8: query_sets.basic.up.timeout: Input should be greater than 0"],
    "missing_dsn.targets.yml": ["2: targets.one.dsn: required key is missing"],
    "unknown_driver.targets.yml": [
        "3: targets.one.dsn: unsupported database driver: Can't load plugin: sqlalchemy.dialects:nosuchdb.nosuchdriver"
    ],
    "driver_not_installed.targets.yml": [
        "3: targets.one.dsn: the database driver is not installed (cannot import 'MySQLdb')"
    ],
    "unknown_default_query_set.targets.yml": [
        f"2: defaults.query_sets[0]: unknown query set 'nonexistent' (not defined in {CONFIGS / 'queries.yml'})"
    ],
    "recursive_alias.targets.yml": ["2: targets.one: an alias refers to a node that contains it"],
    "not_a_url.targets.yml": [
        "3: targets.one.dsn: not a valid SQLAlchemy URL (expected e.g. mysql+pymysql://user:pass@host:3306/)"
    ],
    "secret_in_query_string.targets.yml": [
        "2: defaults.dsn: query-string key 'PassWord' carries a secret: give the password as user:password or in password_file",
        "7: targets.two.dsn: query-string key 'sslpassword' carries a secret: give the password as user:password or in password_file",
        "7: targets.two.dsn: query-string key 'passwd' carries a secret: give the password as user:password or in password_file",
        # Percent-encoded, as the driver would get it.
        "10: targets.three.dsn: query-string key 'password' carries a secret: give the password as user:password or in password_file",
    ],
    # Checked the way the driver takes them at connect; the value is never shown (it may be a secret).
    "dsn_unknown_query_key.targets.yml": [
        "4: targets.one.dsn: query parameter 'bogus_kw' is not one the mysql+pymysql driver takes" + AIOMYSQL_WHY
    ],
    # Credentials from a my.cnf would go around sqlprobe's masking and its TLS check.
    "dsn_option_file.targets.yml": [
        "4: targets.one.dsn: query parameter 'read_default_file' would have the driver read credentials and settings"
        " from an option file: give them in targets.yml (the dsn, password_file, tls), where sqlprobe keeps the"
        " password out of logs and errors and withholds it until TLS is on"
    ],
    "dsn_bad_query_value.targets.yml": [
        "4: targets.one.dsn: query parameter 'charset' has a value the mysql+pymysql driver does not take",
        # PyMySQL's, but not aiomysql's, which probes connect with.
        "4: targets.one.dsn: query parameter 'read_timeout' is not one the mysql+pymysql driver takes" + AIOMYSQL_WHY,
        "7: targets.two.dsn: query parameter 'bogus' is not one the postgresql+psycopg driver takes",
    ],
    # Charsets PyMySQL and the server know but Python has no codec for: every statement would fail at probe time.
    "dsn_charset_python_cannot_encode.targets.yml": [
        "4: targets.one.dsn: query parameter 'charset' has a value the mysql+pymysql driver does not take",
        "7: targets.two.dsn: query parameter 'charset' has a value the mysql+pymysql driver does not take",
    ],
    # The host would be the password's tail, sent to DNS.
    "dsn_password_with_at.targets.yml": [
        f"{line}: targets.{name}.dsn: the host part holds an '@': an '@' in the user or password must be"
        " percent-encoded (%40), as must any of : / ? # [ ] % there; or give the password in password_file"
        for line, name in ((4, "one"), (7, "module_like"))
    ],
    # A value under a key that may hold a secret, or that looks like a DSN, is never quoted.
    "dsn_yaml_tag.targets.yml": [
        "4: targets.one.dsn: the value (not quoted: it may hold a password) is not a valid !!float",
        "7: targets.two.dsn: the value (not quoted: it may hold a password) is not a valid !!int",
        "8: targets.two.timeout: '1x' is not a valid !!int",
    ],
    "listed_twice.targets.yml": ["4: targets.one.query_sets[1]: query set 'basic' is listed twice"],
    "not_a_mapping.targets.yml": ["1: expected a mapping (key: value), got a list"],
    "target_label_instance.queries.yml": [
        "7: query_sets.basic.up.labels[0]: label name 'instance' is reserved (Prometheus sets job and instance on every scraped series)"
    ],
    "target_label_job.targets.yml": [
        "5: targets.one.labels.job: label name 'job' is reserved (Prometheus sets job and instance on every scraped series)"
    ],
    # MySQL sessions run several statements in one text: a query must be one (PostgreSQL's protocol takes one).
    "several_statements.targets.yml": [
        "5: targets.mysql.query_sets[0]: metric 'sneaked' (query set 'several'): sqlprobe runs one statement per"
        " query: a ';' may end it, but not separate statements, nor stand in a string or comment (CHAR(59) writes one)",
        "5: targets.mysql.query_sets[0]: metric 'bound' (query set 'several'), in its parameters: sqlprobe runs one"
        " statement per query: a ';' may end it, but not separate statements, nor stand in a string or comment"
        " (CHAR(59) writes one)",
    ],
    "label_shadowed.targets.yml": [
        "4: targets.one.query_sets[0]: label 'region' of metric 'sessions' (query set 'regional') is also one of the target's labels"
    ],
    "clash_across_sets.targets.yml": [
        "4: targets.one.query_sets[1]: metric 'query_exporter_up' of query set 'basic_copy' is also defined by 'basic'"
    ],
    "tls_missing_file.targets.yml": [
        f"6: targets.one.tls.ca: cannot read {BAD / 'nowhere' / 'ca.pem'}: No such file or directory"
    ],
    "tls_default_missing_file.targets.yml": [
        "2: defaults.tls.ca: cannot read /nonexistent/ca.pem: No such file or directory"
    ],
    "tls_cert_without_key.targets.yml": ["5: targets.one.tls: cert and key go together: set both or neither"],
    "tls_unknown_key.targets.yml": ["7: targets.one.tls.verify_hostname: unknown key"],
    "tls_not_a_mapping.targets.yml": ["5: targets.one.tls: expected a mapping (key: value), got a boolean"],
    "tls_ca_not_pem.targets.yml": [
        f"6: targets.one.tls.ca: {BAD / 'tls_ca_not_pem.targets.yml'} holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)"
    ],
    "tls_cert_not_pem.targets.yml": [
        f"6: targets.one.tls.cert: {BAD / 'tls_cert_not_pem.targets.yml'} and {BAD / 'tls_cert_not_pem.targets.yml'} "
        "are not a PEM certificate and its private key"
    ],
    "module_address_twice.targets.yml": [
        "3: modules.mysql_prod.dsn: {address} must appear exactly once, as the whole host part of the dsn (e.g. mysql+pymysql://user@{address}/)"
    ],
    "module_address_not_host.targets.yml": [
        "3: modules.mysql_prod.dsn: {address} must appear exactly once, as the whole host part of the dsn (e.g. mysql+pymysql://user@{address}/)"
    ],
    "module_without_allow.targets.yml": [
        "2: modules.mysql_prod: a module needs allow or inventory (or both): where it may connect"
    ],
    "module_bad_allow.targets.yml": [
        "6: modules.mysql_prod.allow[0]: '127.20.0.1/16' is not a valid CIDR: 127.20.0.1/16 has host bits set",
        "7: modules.mysql_prod.allow[1]: 'db .example.net' is not a DNS name, an IP address or a CIDR: 'db .example.net' is not an address: expected host, host:port or [IPv6]:port",
        "8: modules.mysql_prod.allow[2]: '*.db.example.net:99999' is not an address: the port must be a number from 1 to 65535",
        "9: modules.mysql_prod.allow[3]: '127.*.*.*' is not a valid name glob: a glob matches names; write IP ranges as CIDRs",
        "11: modules.mysql_prod.allow[5]: '127.0.0.0/8:99999' is not a valid CIDR: the port must be a number from 1 to 65535",
    ],
    "module_bad_keys.targets.yml": [
        "6: modules.mysql_prod.default_port: Input should be greater than or equal to 1",
        "7: modules.mysql_prod.max_targets: Input should be a valid integer",
        "8: modules.mysql_prod.inventorry: unknown key",
    ],
}


def _files_for(case: str) -> tuple[Path, Path]:
    name, kind, _ = case.split(".")
    if kind == "queries":
        return CONFIGS / "basic_targets.yml", BAD / case
    companion = BAD / f"{name}.queries.yml"
    return BAD / case, companion if companion.exists() else CONFIGS / "queries.yml"


def test_every_bad_config_file_has_a_case() -> None:
    companions = {
        "clash_across_sets.queries.yml",
        "label_shadowed.queries.yml",
        "static_label_shadowed.queries.yml",
        "several_statements.queries.yml",
    }
    on_disk = {path.name for path in BAD.iterdir()} - companions
    assert on_disk == set(BAD_CASES)


@pytest.mark.parametrize(("case", "expected"), BAD_CASES.items(), ids=list(BAD_CASES))
def test_bad_config_is_rejected_with_file_line_key_path_and_reason(case: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(*_files_for(case), environ=ENV)
    assert [str(problem) for problem in raised.value.problems] == [f"{BAD / case}:{line}" for line in expected]


def test_errors_never_quote_a_dsn_password() -> None:
    for case in (
        "unknown_driver.targets.yml",
        "driver_not_installed.targets.yml",
        "not_a_url.targets.yml",
        "secret_in_query_string.targets.yml",
        "dsn_unknown_query_key.targets.yml",
        "dsn_bad_query_value.targets.yml",
        "dsn_password_with_at.targets.yml",
        "dsn_yaml_tag.targets.yml",
    ):
        with pytest.raises(ConfigError) as raised:
            load_config(*_files_for(case), environ=ENV)
        assert "hunter2" not in str(raised.value)
        assert "secret@" not in str(raised.value)


def test_problems_in_both_files_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(BAD / "missing_dsn.targets.yml", BAD / "unknown_type.queries.yml", environ=ENV)
    assert {problem.file for problem in raised.value.problems} == {
        str(BAD / "missing_dsn.targets.yml"),
        str(BAD / "unknown_type.queries.yml"),
    }


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yml: cannot read file"):
        load_config(tmp_path / "nowhere.yml", CONFIGS / "queries.yml", environ=ENV)


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "targets.yml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="expected a mapping \\(key: value\\), got nothing"):
        load_config(tmp_path / "targets.yml", CONFIGS / "queries.yml", environ=ENV)


def _check_config(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "--check-config", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_check_config_accepts_the_shipped_files() -> None:
    result = _check_config(env={"MYSQL_EXPORTER_PASSWORD": ""})
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 2 targets" in result.stdout


def test_check_config_accepts_the_shipped_targets_in_a_shell_without_the_password_variable() -> None:
    result = _check_config()
    assert (result.returncode, result.stderr) == (0, "")
    assert "configuration OK: 2 targets" in result.stdout


def test_without_a_queries_yml_in_the_working_directory_the_shipped_library_is_used(tmp_path: Path) -> None:
    (tmp_path / "targets.yml").write_text('targets:\n  demo: {dsn: "sqlite://", query_sets: [sqlite_demo]}\n')
    shipped_sets = len(yaml.safe_load((ROOT / "app" / "config" / "queries.yml").read_text())["query_sets"])
    result = _check_config(cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"sqlprobe: configuration OK: 1 targets, {shipped_sets} query sets (targets.yml, ")
    assert result.stdout.rstrip().endswith("app/config/queries.yml)")
    # A queries.yml beside targets.yml (here the working directory's) comes first.
    (tmp_path / "queries.yml").write_text(
        "query_sets:\n  sqlite_demo:\n    up: {query: 'select 1 as up', type: gauge, description: up, value: up}\n"
    )
    local = _check_config(cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert local.stdout == "sqlprobe: configuration OK: 1 targets, 1 query sets (targets.yml, queries.yml)\n"


def test_a_variable_with_a_default_takes_it_when_unset_and_the_environment_when_set(tmp_path: Path) -> None:
    (tmp_path / "targets.yml").write_text(
        "targets:\n"
        '  one: {dsn: "mysql+pymysql://u:${SQLPROBE_TEST_UNSET:-p@ss}@${SQLPROBE_TEST_HOST:-db1}:3306/", query_sets: [basic]}\n'
    )
    unset = load_config(tmp_path / "targets.yml", CONFIGS / "queries.yml", environ={})
    assert (unset.targets["one"].url.password, unset.targets["one"].url.host) == ("p@ss", "db1")
    given = load_config(
        tmp_path / "targets.yml",
        CONFIGS / "queries.yml",
        environ={"SQLPROBE_TEST_UNSET": "", "SQLPROBE_TEST_HOST": "db2"},
    )
    assert (given.targets["one"].url.password, given.targets["one"].url.host) == ("", "db2")


@pytest.mark.parametrize("default", ["x/y", "x?y", "x#y", "x@y"])
def test_a_default_with_a_url_delimiter_leaves_the_password_escaped_as_it_is(tmp_path: Path, default: str) -> None:
    # Where the user:password part ends was read from the text with the default in it: a '/' there switched the
    # escaping off, and a password from the environment was read as URL syntax (p%41ss became pAss).
    (tmp_path / "targets.yml").write_text(
        "targets:\n"
        f'  one: {{dsn: "mysql+pymysql://u:${{SQLPROBE_TEST_PW:-{default}}}@db1:3306/", query_sets: [basic]}}\n'
    )
    for password in ("p%41ss", "p@ss", default):
        config = load_config(tmp_path / "targets.yml", CONFIGS / "queries.yml", environ={"SQLPROBE_TEST_PW": password})
        assert (config.targets["one"].url.password, config.targets["one"].url.host) == (password, "db1")
    unset = load_config(tmp_path / "targets.yml", CONFIGS / "queries.yml", environ={})
    assert (unset.targets["one"].url.password, unset.targets["one"].url.host) == (default, "db1")


def test_the_default_queries_yml_is_the_one_beside_the_targets_file_not_the_working_directorys(tmp_path: Path) -> None:
    # sqlprobe --targets /etc/sqlprobe/targets.yml run from another directory read that directory's queries.yml.
    etc, home = tmp_path / "etc", tmp_path / "home"
    etc.mkdir()
    home.mkdir()
    (etc / "targets.yml").write_text('targets:\n  demo: {dsn: "sqlite://", query_sets: [mine]}\n')
    (etc / "queries.yml").write_text(
        "query_sets:\n  mine:\n    up: {query: 'select 1 as up', type: gauge, description: up, value: up}\n"
    )
    (home / "queries.yml").write_text("query_sets: {}\n")  # not a valid queries.yml: must not be read
    result = _check_config("--targets", str(etc / "targets.yml"), cwd=home, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"sqlprobe: configuration OK: 1 targets, 1 query sets ({etc / 'targets.yml'}, {etc / 'queries.yml'})\n"
    )


def test_check_config_prints_every_problem_and_exits_1() -> None:
    result = _check_config(
        "--targets", str(BAD / "unknown_target_key.targets.yml"), "--queries", str(BAD / "unknown_type.queries.yml")
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "sqlprobe: the configuration has 3 problem(s):"
    assert (
        f"  {BAD / 'unknown_type.queries.yml'}:5: query_sets.basic.up.type: Input should be 'gauge', 'counter' or 'untyped'"
        in lines
    )
    assert f"  {BAD / 'unknown_target_key.targets.yml'}:4: targets.one.query_set: unknown key" in lines
    assert "Traceback" not in result.stderr
