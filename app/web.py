"""The HTTP face of sqlprobe: thin handlers over the prober, the config and the telemetry."""

import asyncio
import contextlib
import html
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from app import __version__
from app.basicauth import BasicAuth
from app.config import Config, Target
from app.discovery import target_groups
from app.errors import ConfigError
from app.exporter import Exporter
from app.exposition import encode, render_probe
from app.prober import ProbeResult
from app.report import debug_report
from app.webconfig import WebConfig

log = logging.getLogger(__name__)

# Seconds kept back from Prometheus's scrape timeout, so our answer arrives before it gives up.
SCRAPE_TIMEOUT_OFFSET = 0.5
# Threads are cheap while they wait on a socket (about 16 KiB each); a hung target holds one until just past
# its deadline.
DEFAULT_MAX_WORKERS = 128
# An engine no probe used for this long is disposed with its connections: longer than any scrape interval.
DEFAULT_IDLE_ENGINE_TIMEOUT = 900.0


async def get_exporter(request: Request) -> Exporter:
    """The Exporter of the app serving ``request`` (async: FastAPI would run a plain function on a thread)."""
    exporter: Exporter = request.app.state.exporter
    return exporter


ExporterDep = Annotated[Exporter, Depends(get_exporter)]


class BadRequest(Exception):
    """A request sqlprobe cannot serve; its message is the answer's body."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def create_app(
    config: Config,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    reload_on_sighup: bool = False,
    web_config: WebConfig | None = None,
    idle_engine_timeout: float = DEFAULT_IDLE_ENGINE_TIMEOUT,
) -> FastAPI:
    """Build the FastAPI app that serves ``config`` (``reload_on_sighup`` only where the app owns the process).

    With ``web_config`` naming basic-auth users, every request must carry one's credentials.
    """
    exporter = Exporter(config, max_workers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if reload_on_sighup:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload_logged(exporter)))
        sweeper = asyncio.create_task(_dispose_idle_engines(exporter, idle_engine_timeout))
        yield
        sweeper.cancel()
        exporter.close()

    app = FastAPI(title="sqlprobe", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.exporter = exporter
    app.add_exception_handler(BadRequest, _bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_parameters)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.include_router(router)
    if web_config is not None and web_config.users:
        app.add_middleware(BasicAuth, users=web_config.users)
    return app


router = APIRouter()


# /probe reads its parameters itself (FastAPI's injection and validation cost a tenth of a probe's CPU);
# they are documented here for /openapi.json.
_PROBE_PARAMETERS = [
    {"name": "target", "in": "query", "required": True, "schema": {"type": "string"}},
    {"name": "query_set", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
    {"name": "debug", "in": "query", "schema": {"type": "boolean", "default": False}},
    {"name": "X-Prometheus-Scrape-Timeout-Seconds", "in": "header", "schema": {"type": "string"}},
]
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@router.get("/probe", response_class=PlainTextResponse, openapi_extra={"parameters": _PROBE_PARAMETERS})
async def probe(request: Request) -> Response:
    """Probe one target and answer with its metrics; a failed probe is probe_success 0, not an error."""
    exporter: Exporter = request.app.state.exporter
    config = exporter.config
    parameters = request.query_params
    targets = parameters.getlist("target")
    if not targets or not targets[0]:
        raise BadRequest("the 'target' parameter is required, e.g. /probe?target=NAME")
    if len(targets) > 1:
        raise BadRequest("give one 'target' parameter per probe")
    found = config.targets.get(targets[0])
    if found is None:
        raise BadRequest(f"unknown target {targets[0]!r}: it is not in {config.targets_file}", 404)
    debug = _BOOLEANS.get(parameters.get("debug", "false").lower())
    if debug is None:
        raise BadRequest(
            f"invalid request: debug: Input should be a valid boolean (true or false), not {parameters['debug']!r}"
        )
    selected = _query_sets(found, parameters.getlist("query_set"))
    budget = _budget(found, request.headers.get("x-prometheus-scrape-timeout-seconds"))
    result = await exporter.prober.probe(found, selected, budget)
    exporter.telemetry.observe(result)
    _log_failure(result)
    if debug:
        text, _ = render_probe(result, None)
        return PlainTextResponse(debug_report(result, text.decode()))
    body, content_type = render_probe(result, request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.get("/metrics", response_class=PlainTextResponse)
async def own_metrics(request: Request, exporter: ExporterDep) -> Response:
    """The exporter's own metrics (not the targets')."""
    body, content_type = encode(exporter.telemetry.registry, request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.get("/sd", response_class=JSONResponse)
async def service_discovery(
    request: Request,
    exporter: ExporterDep,
    query_set: Annotated[str | None, Query(description="Only targets that have this query set.")] = None,
) -> JSONResponse:
    """The targets in Prometheus's HTTP service discovery format, one group per target."""
    if len(request.query_params.getlist("query_set")) > 1:
        raise BadRequest("give at most one 'query_set' parameter to /sd")
    config = exporter.config
    if query_set is not None and query_set not in config.query_sets:
        raise BadRequest(f"unknown query set {query_set!r}: it is not in {config.queries_file}")
    return JSONResponse(target_groups(config, query_set))


@router.get("/", response_class=HTMLResponse)
async def landing_page(exporter: ExporterDep) -> HTMLResponse:
    """A page listing every target with links to probe it."""
    rows = []
    for target in exporter.config.targets.values():
        probe_url = "/probe?" + urlencode({"target": target.name})
        rows.append(
            "<tr><td>{name}</td><td>{sets}</td><td>{dsn}</td>"
            '<td><a href="{probe}">probe</a> <a href="{probe}&amp;debug=true">debug</a></td></tr>'.format(
                name=html.escape(target.name),
                sets=html.escape(", ".join(target.query_sets)),
                dsn=html.escape(target.display_dsn),
                probe=html.escape(probe_url),
            )
        )
    return HTMLResponse(_LANDING_PAGE.format(version=html.escape(__version__), count=len(rows), rows="\n".join(rows)))


@router.post("/-/reload", response_class=PlainTextResponse)
async def reload(exporter: ExporterDep) -> PlainTextResponse:
    """Load targets.yml and queries.yml again; on any problem the previous config keeps serving."""
    try:
        reloaded = await asyncio.to_thread(exporter.reload)
    except ConfigError as error:
        problems = "".join(f"  {problem}\n" for problem in error.problems)
        return PlainTextResponse(
            f"reload failed, the previous config keeps serving; {len(error.problems)} problem(s):\n{problems}",
            status_code=500,
        )
    config = reloaded.config
    if not reloaded.changed:
        return PlainTextResponse("config unchanged\n")
    return PlainTextResponse(
        f"config reloaded: {len(config.targets)} targets, {len(config.query_sets)} query sets, "
        f"{len(reloaded.disposed)} engines disposed\n"
    )


async def _dispose_idle_engines(exporter: Exporter, idle_for: float) -> None:
    """Every so often, close the engines of targets no longer probed (removed from Prometheus, say)."""
    while True:
        await asyncio.sleep(min(60.0, idle_for / 2))
        disposed = await asyncio.to_thread(exporter.engines.dispose_idle, idle_for)
        if disposed:
            log.info(
                "disposed the engines of %d targets not probed for %gs",
                len(disposed),
                idle_for,
                extra={"event": "idle_engines_disposed", "targets": disposed},
            )


async def _reload_logged(exporter: Exporter) -> None:
    """A reload on SIGHUP: its outcome goes to the log (and to /metrics) only."""
    with contextlib.suppress(ConfigError):
        await asyncio.to_thread(exporter.reload)


@router.get("/-/healthy", response_class=PlainTextResponse)
async def healthy() -> str:
    """Liveness: the process serves HTTP."""
    return "OK"


@router.get("/-/ready", response_class=PlainTextResponse)
async def ready() -> str:
    """Readiness: the config is loaded, so probes can be served."""
    return "OK"


_LANDING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sqlprobe</title></head>
<body>
<h1>sqlprobe {version}</h1>
<p>Prometheus exporter that runs your SQL against a fleet of databases.
Own metrics: <a href="/metrics">/metrics</a>.
Targets for Prometheus's <code>http_sd_configs</code>: <a href="/sd">/sd</a>.</p>
<h2>Targets ({count})</h2>
<table>
<tr><th>target</th><th>query sets</th><th>DSN</th><th></th></tr>
{rows}
</table>
</body></html>
"""


def _query_sets(target: Target, requested: list[str] | None) -> frozenset[str] | None:
    if not requested:
        return None
    unknown = [name for name in requested if name not in target.query_sets]
    if unknown:
        raise BadRequest(
            f"query set {unknown[0]!r} is not assigned to target {target.name!r} "
            f"(its query sets: {', '.join(target.query_sets)})"
        )
    return frozenset(requested)


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
    by_error: dict[tuple[str, str], list[str]] = {}
    for metric, _ in result.metric_results():
        if metric.error is not None:
            # One line per event: drivers' messages may span several (psycopg adds hints).
            message = " ".join(str(metric.error).split())
            by_error.setdefault((metric.error.reason, message), []).append(metric.metric.key)
    details = "; ".join(f"{reason}: {error} (metrics: {', '.join(keys)})" for (reason, error), keys in by_error.items())
    failures = [{"reason": reason, "error": error, "metrics": keys} for (reason, error), keys in by_error.items()]
    log.info(
        "probe of target %s failed: %s",
        result.target.name,
        details,
        extra={"event": "probe_failed", "target": result.target.name, "failures": failures},
    )


async def _bad_request(_: Request, error: BadRequest) -> PlainTextResponse:
    return PlainTextResponse(f"{error}\n", status_code=error.status_code)


async def _http_error(request: Request, error: HTTPException) -> PlainTextResponse:
    # Unknown paths and methods get a sentence too, not JSON.
    message = f"{error.detail}: {request.method} {request.url.path}"
    if error.status_code == 404:
        message += " (sqlprobe serves /probe, /metrics, /sd, /, /-/healthy, /-/ready and POST /-/reload)"
    return PlainTextResponse(f"{message}\n", status_code=error.status_code, headers=error.headers)


async def _invalid_parameters(_: Request, error: RequestValidationError) -> PlainTextResponse:
    problems = [f"{detail['loc'][-1]}: {detail['msg']}" for detail in error.errors()]
    return PlainTextResponse(f"invalid request: {'; '.join(problems)}\n", status_code=400)
