"""Fuzzing the HTTP face from its own OpenAPI schema: any request gets a documented answer or a plain-text 4xx."""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from app.config import Config
from app.web.app import create_app
from tests.fuzzing import fuzz_settings
from tests.helpers import metric, target, write_config
from tests.servers import free_port

# The app fixture is meant to serve every example of a test, not to be rebuilt per example.
FUZZ = fuzz_settings(300, HealthCheck.function_scoped_fixture)
# Each target's timeout is 1 s, so a probe answers within that plus a little, whatever header it was sent.
MAX_RESPONSE_SECONDS = 5.0
# FastAPI documents 422 for invalid parameters; sqlprobe answers those with 400, and an unknown target with 404.
PLAIN_TEXT_ERRORS = {400, 404}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A target that answers (in-memory SQLite) and one nobody listens for."""
    return write_config(
        tmp_path_factory.mktemp("fuzz_http"),
        {
            "memory": target("sqlite://", "answers", "also", timeout="1s"),
            "dead": target(f"mysql+pymysql://u:p@127.0.0.1:{free_port()}/", "answers", timeout="1s"),
        },
        {
            "answers": {"one": metric("select 1 as v", "v")},
            "also": {"two": metric("select 2 as w", "w", kind="counter")},
        },
    )


@pytest.fixture
def api(config: Config) -> BaseSchema:
    """The OpenAPI schema a fresh app serves, requests going to that app in-process over ASGI.

    One app per test, not per module: schemathesis's pytest plugin ends the app's lifespan after each test, and
    an app's lifespan runs once (its shutdown closes the prober's threads for good).
    """
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(config))


def answers_documented_status_or_plain_text_error(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """A documented status, or 400/404 with a one-line plain-text reason (never JSON, never an empty body)."""
    documented = {int(code) for code in case.operation.responses.status_codes}
    if response.status_code in documented - {422}:
        return
    assert response.status_code in PLAIN_TEXT_ERRORS, f"undocumented status {response.status_code}"
    assert response.headers["content-type"][0].startswith("text/plain"), response.headers
    assert response.text.strip(), "empty body"
    assert response.text.endswith("\n"), repr(response.text)


def answers_in_time(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """No request hangs: each answer comes within the targets' timeout and some slack."""
    assert response.elapsed < MAX_RESPONSE_SECONDS, f"answered after {response.elapsed:.1f} s"


CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    answers_documented_status_or_plain_text_error,
    answers_in_time,
]

generation_modes = st.sampled_from(list(GenerationMode))


# Not schemathesis.pytest.from_fixture(...).parametrize(): with pytest 9 it fails on the removed Node._nodeid.
@FUZZ
@given(data=st.data())
def test_every_operation_answers_any_request_without_a_server_error(api: BaseSchema, data: st.DataObject) -> None:
    case = data.draw(api.as_strategy(data.draw(generation_modes)))
    case.call_and_validate(checks=CHECKS)


# Header values travel as latin-1 without control characters; a server strips leading and trailing blanks.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=12)
scrape_timeouts = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-5, 100).map(str),
    st.sampled_from(["0", "-0", "0.0001", "1e309", "-1e309", "nan", "inf", "1_000", "0x10", "½", "10s", ""]),
    header_text.map(str.strip),
)
# The real names often, so that probes run; anything else too.
target_names = st.sampled_from(["memory", "dead"]) | st.text(max_size=12)
query_set_lists = st.lists(st.sampled_from(["answers", "also", "nonexistent"]) | st.text(max_size=8), max_size=3)
debug_flags = st.sampled_from(["true", "false", "1", "0", "yes", "off"]) | st.text(max_size=6)


@FUZZ
@given(data=st.data())
def test_probe_answers_any_target_query_set_debug_and_scrape_timeout(api: BaseSchema, data: st.DataObject) -> None:
    query: dict[str, object] = {"target": data.draw(target_names), "debug": data.draw(debug_flags)}
    if query_sets := data.draw(query_set_lists):
        query["query_set"] = query_sets
    timeout = data.draw(scrape_timeouts)
    headers = {} if timeout is None else {"X-Prometheus-Scrape-Timeout-Seconds": timeout}
    case = data.draw(api["/probe"]["GET"].as_strategy(data.draw(generation_modes), query=query, headers=headers))
    case.call_and_validate(checks=CHECKS)


def test_a_probe_of_each_target_answers_200(api: BaseSchema) -> None:
    """The fuzzers' targets do what they are there for: one answers, one is dead, both within their timeout."""
    for name, success in (("memory", "1.0"), ("dead", "0.0")):
        case = api["/probe"]["GET"].Case(query={"target": name})
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == 200
        assert f"probe_success {success}" in response.text
