"""GET /probe as a bare ASGI app: the request that Prometheus sends for every target, every interval.

Every other route goes through FastAPI. /probe skips FastAPI's and Starlette's middleware chain, routing and
Request/Response objects, which together cost as much CPU as the probe's own work: it reads the query string
and the headers from the ASGI scope and writes its answer as two ASGI messages.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from app.config import AddressNotAllowed, ModuleRequestError, Target
from app.errors import where_it_failed
from app.probe.exporter import Exporter
from app.probe.module_targets import ModuleFull
from app.probe.prober import ClientGone, TooManyProbes
from app.probe.results import ProbeResult
from app.web.exposition import render_probe
from app.web.http_protocol import ARRIVED, GONE
from app.web.report import debug_report, failures

log = logging.getLogger(__name__)

PATH = "/probe"
# Seconds kept back from Prometheus's scrape timeout, so our answer arrives before it gives up.
SCRAPE_TIMEOUT_OFFSET = 0.5
_PLAIN_TEXT = b"text/plain; charset=utf-8"
_ACCEPT, _SCRAPE_TIMEOUT = b"accept", b"x-prometheus-scrape-timeout-seconds"
_READ = frozenset({_ACCEPT, _SCRAPE_TIMEOUT})
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}

# For /openapi.json: /probe has no FastAPI route to describe it.
OPENAPI_OPERATION: Mapping[str, Any] = {
    "get": {
        "summary": "Probe",
        "description": "Probe one target and answer with its metrics; a failed probe is probe_success 0, not an error.",
        "operationId": "probe_probe_get",
        "parameters": [
            {"name": "target", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "module", "in": "query", "schema": {"type": "string"}},
            {"name": "query_set", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
            {"name": "debug", "in": "query", "schema": {"type": "boolean", "default": False}},
            {"name": "X-Prometheus-Scrape-Timeout-Seconds", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The target's metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": {"description": "A bad parameter", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "403": {
                "description": "An address the module may not connect to",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "404": {"description": "An unknown target", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "503": {
                "description": "Too many probes in flight already",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        },
    }
}


class BadRequest(Exception):
    """A request sqlprobe cannot serve; its message is the answer's body."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class ProbeEndpoint:
    """Probe one target and answer with its metrics; a failed probe is probe_success 0, not an HTTP error."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await _answer(send, 405, f"Method Not Allowed: {scope['method']} {PATH}\n".encode(), [(b"allow", b"GET")])
            return
        gone = _gone(scope)
        watcher = None
        if gone is None:  # served by another protocol than sqlprobe's (tests, uvicorn's stock one): ASGI's way
            gone = asyncio.get_running_loop().create_future()
            watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            body, content_type = await self._probe(scope, gone)
        except ClientGone:
            return  # nobody to answer; the run was stopped if this probe was the last waiting for it
        except BadRequest as error:
            await _answer(send, error.status_code, f"{error}\n".encode())
            return
        except TooManyProbes as error:
            await _answer(send, 503, f"{error}\n".encode())
            return
        except Exception as error:  # noqa: BLE001 - a bug costs one answer, never a traceback to the client
            log.error("probe request failed unexpectedly: %s", where_it_failed(error))
            await _answer(send, 500, b"internal error, see sqlprobe's log\n")
            return
        finally:
            if watcher is not None:
                watcher.cancel()
        await _answer(send, 200, body, content_type=content_type)

    async def _probe(self, scope: Scope, gone: "asyncio.Future[None]") -> tuple[bytes, bytes]:
        config = self._exporter.config
        parameters = _parameters(scope["query_string"].decode("latin-1"))
        headers = _read_headers(scope["headers"])
        targets = [value for name, value in parameters if name == "target"]
        if not targets or not targets[0]:
            raise BadRequest("the 'target' parameter is required, e.g. /probe?target=NAME")
        if len(targets) > 1:
            raise BadRequest("give one 'target' parameter per probe")
        modules = [value for name, value in parameters if name == "module"]
        if len(modules) > 1:
            raise BadRequest("give at most one 'module' parameter per probe")
        found = self._module_target(modules[0], targets[0]) if modules else config.targets.get(targets[0])
        if found is None:
            raise BadRequest(f"unknown target {targets[0]!r}: no target of that name is configured", 404)
        debug_text = next((value for name, value in parameters if name == "debug"), "false")
        debug = _BOOLEANS.get(debug_text.lower())
        if debug is None:
            raise BadRequest(
                f"invalid request: debug: Input should be a valid boolean (true or false), not {debug_text!r}"
            )
        selected = _query_sets(found, [value for name, value in parameters if name == "query_set"])
        budget = _budget(found, headers.get(_SCRAPE_TIMEOUT))
        result = await self._exporter.prober.probe(found, selected, budget, _arrived(scope), gone)
        self._exporter.observe(result, selected)
        _log_failure(result)
        if debug or _rows(result) > _RENDERED_ON_THE_LOOP:
            # A big answer takes the event loop for as long as it is rendered (500,000 rows: seconds), and every
            # other probe would wait: rendered on a worker thread, the loop keeps its turns (the GIL switches).
            return await asyncio.to_thread(_render, result, debug, headers.get(_ACCEPT))
        return _render(result, debug, headers.get(_ACCEPT))

    def _module_target(self, module: str, address: str) -> Target:
        try:
            return self._exporter.module_target(module, address)
        except AddressNotAllowed as error:
            raise BadRequest(str(error), 403) from None
        except ModuleRequestError as error:
            raise BadRequest(str(error)) from None
        except ModuleFull as error:
            raise BadRequest(str(error), 503) from None


# Rows a probe's answer may hold and still be rendered on the event loop (a few milliseconds' work).
_RENDERED_ON_THE_LOOP = 2000


def _rows(result: ProbeResult) -> int:
    return sum(query.rows or 0 for query in result.queries)


def _render(result: ProbeResult, debug: bool, accept: str | None) -> tuple[bytes, bytes]:
    """The answer's body and content type: the debug report, or the exposition the client accepts."""
    if debug:
        text, _ = render_probe(result, None)
        return debug_report(result, text.decode()).encode(), _PLAIN_TEXT
    body, content_type = render_probe(result, accept)
    return body, content_type.encode("latin-1")


async def _answer(
    send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = (), content_type: bytes = _PLAIN_TEXT
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _parameters(query: str) -> list[tuple[str, str]]:
    """The query string's parameters, as parse_qsl(keep_blank_values=True) gives them."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    # Nothing to unquote (Prometheus sends target names plain): the same pairs without parse_qsl's per-pair work.
    return [(name, value) for pair in query.split("&") if pair for name, _, value in (pair.partition("="),)]


def _read_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The two request headers /probe reads, by lower-case name (ASGI sends them so); the first of repeated Accepts.

    A repeated scrape timeout is a bad request: which of them Prometheus meant cannot be known.
    """
    values: dict[bytes, str] = {}
    for name, value in headers:
        if name in _READ:
            if name not in values:
                values[name] = value.decode("latin-1")
            elif name == _SCRAPE_TIMEOUT:
                raise BadRequest("give one X-Prometheus-Scrape-Timeout-Seconds header per probe")
    return values


def _query_sets(target: Target, requested: list[str]) -> frozenset[str] | None:
    if not requested:
        return None
    unknown = [name for name in requested if name not in target.query_sets]
    if unknown:
        raise BadRequest(
            f"query set {unknown[0]!r} is not assigned to target {target.name!r} "
            f"(its query sets: {', '.join(target.query_sets)})"
        )
    return frozenset(requested)


def _arrived(scope: Scope) -> float | None:
    """When the request began to arrive (time.monotonic()), if the HTTP protocol said (app/web/http_protocol.py)."""
    arrived = (scope.get("extensions") or {}).get(ARRIVED) or {}
    at = arrived.get("monotonic")
    return at if isinstance(at, float) else None


def _gone(scope: Scope) -> "asyncio.Future[None] | None":
    """Done when the client has gone, if the HTTP protocol says so (app/web/http_protocol.py)."""
    gone = ((scope.get("extensions") or {}).get(GONE) or {}).get("future")
    return gone if isinstance(gone, asyncio.Future) else None


async def _watch_disconnect(receive: Receive, gone: "asyncio.Future[None]") -> None:
    """Set ``gone`` when ASGI says the client disconnected (cancelled once the probe is answered)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if not gone.done():
        gone.set_result(None)


def _budget(target: Target, scrape_timeout: str | None) -> float:
    """Seconds the probe may take: the scrape timeout less an offset, capped by the target's timeout."""
    if scrape_timeout is None:
        return target.timeout
    try:
        seconds = float(scrape_timeout)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BadRequest(f"X-Prometheus-Scrape-Timeout-Seconds must be a positive number, not {scrape_timeout!r}")
    # Below 1 s the offset would eat most of the scrape timeout: keep half of it instead.
    return min(max(seconds - SCRAPE_TIMEOUT_OFFSET, seconds / 2), target.timeout)


def _log_failure(result: ProbeResult) -> None:
    if result.success:
        return
    found = failures(result)
    details = "; ".join(f"{reason}: {error} (metrics: {', '.join(keys)})" for reason, error, keys in found)
    log.info(
        "probe of target %s failed: %s",
        result.target.name,
        details,
        extra={
            "event": "probe_failed",
            "target": result.target.name,
            "failures": [{"reason": reason, "error": error, "metrics": list(keys)} for reason, error, keys in found],
        },
    )
