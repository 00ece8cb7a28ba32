"""The HTTP face of sqlprobe: thin handlers over the prober, the config and the telemetry."""

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.config import Config, ModuleRequestError
from app.errors import ConfigError, where_it_failed
from app.probe.exporter import Exporter
from app.probe.history import DEFAULT_HISTORY_LIMIT, TargetKey
from app.probe.pauses import Pauses
from app.probe.prober import DEFAULT_PROBE_LIMITS, ProbeLimits
from app.web.basicauth import BasicAuth
from app.web.discovery import target_groups
from app.web.exposition import encode
from app.web.probe_endpoint import OPENAPI_OPERATION, PATH, BadRequest, ProbeEndpoint
from app.web.report import probe_log
from app.web.status_page import render_status_page
from app.web.webconfig import WebConfig

log = logging.getLogger(__name__)

# Threads are cheap while they wait on a socket (about 16 KiB each); a hung target holds one until just past
# its deadline.
# Threads for targets whose driver blocks (SQLite...); MySQL and PostgreSQL probes use none.
DEFAULT_MAX_WORKERS = 8
# An engine no probe used for this long is disposed with its connections: longer than any scrape interval.
DEFAULT_IDLE_ENGINE_TIMEOUT = 900.0
# How often inventory files are read again and password and TLS files checked for a change.
DEFAULT_REFRESH_INTERVAL = 30.0


async def get_exporter(request: Request) -> Exporter:
    """The Exporter of the app serving ``request`` (async: FastAPI would run a plain function on a thread)."""
    exporter: Exporter = request.app.state.exporter
    return exporter


ExporterDep = Annotated[Exporter, Depends(get_exporter)]


def create_app(
    config: Config,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    reload_on_sighup: bool = False,
    web_config: WebConfig | None = None,
    idle_engine_timeout: float = DEFAULT_IDLE_ENGINE_TIMEOUT,
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
    history_limit: int = DEFAULT_HISTORY_LIMIT,
    probe_limits: ProbeLimits = DEFAULT_PROBE_LIMITS,
) -> FastAPI:
    """Build the FastAPI app that serves ``config`` (``reload_on_sighup`` only where the app owns the process).

    With ``web_config`` naming basic-auth users, every request must carry one's credentials. The status page and
    /logs keep each target's last probe and the last ``history_limit`` failed probes; ``probe_limits`` bound the
    probes in flight.
    """
    exporter = Exporter(config, max_workers, history_limit, probe_limits)
    pauses = Pauses(exporter.telemetry.registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if reload_on_sighup:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload_logged(exporter)))
        sweeper = asyncio.create_task(_dispose_idle_engines(exporter, idle_engine_timeout))
        refresher = asyncio.create_task(_refresh_files(exporter, refresh_interval))
        pauses.start()
        exporter.freezer.start()
        watcher = asyncio.create_task(pauses.watch())
        yield
        watcher.cancel()
        exporter.freezer.stop()
        pauses.stop()
        sweeper.cancel()
        refresher.cancel()
        await exporter.close()

    users = web_config.users if web_config is not None else {}
    app = Sqlprobe(
        exporter, users, title="sqlprobe", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.exporter = exporter
    app.add_exception_handler(BadRequest, _bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_parameters)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.include_router(router)
    return app


class Sqlprobe(FastAPI):
    """The FastAPI app, with /probe served ahead of it by a bare ASGI endpoint (see app/web/probe_endpoint.py).

    With ``users``, every request must carry one's credentials (HTTP basic authentication).
    """

    def __init__(self, exporter: Exporter, users: Mapping[str, bytes], **settings: Any) -> None:
        super().__init__(**settings)
        self._probes = ProbeEndpoint(exporter)
        self._entry: ASGIApp = BasicAuth(self._route, users) if users else self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH:
            await self._probes(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema of its routes, and /probe's."""
        if self.openapi_schema is None:
            super().openapi()["paths"][PATH] = dict(OPENAPI_OPERATION)
        return super().openapi()


router = APIRouter()


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
        raise BadRequest(f"unknown query set {query_set!r}: no query set of that name is configured")
    # Thousands of inventory servers take a while to list: not on the event loop, which answers the probes.
    # (Config and the inventory's listings are replaced whole, never changed in place: safe from a thread.)
    return await asyncio.to_thread(lambda: JSONResponse(target_groups(config, exporter.inventory, query_set)))


@router.get("/", response_class=HTMLResponse)
async def status_page(
    exporter: ExporterDep,
    q: Annotated[
        str, Query(max_length=200, description="Only targets with every word of it (name, state, reason).")
    ] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Which page of 1,000 targets, failing first.")] = 1,
) -> HTMLResponse:
    """The fleet at a glance: every target's state, since when, its last probe and why it fails."""
    # Tens of milliseconds for thousands of targets: on a worker thread, so probes are not held up meanwhile.
    return HTMLResponse(await asyncio.to_thread(render_status_page, exporter, q, page))


@router.get("/logs", response_class=PlainTextResponse)
async def probe_logs(
    request: Request,
    exporter: ExporterDep,
    target: Annotated[str, Query(description="The target's name (or address, with module).")],
    module: Annotated[str | None, Query(description="The module it was probed with.")] = None,
) -> PlainTextResponse:
    """The debug account of the target's last probe, and of its last failed one if the last succeeded."""
    if len(request.query_params.getlist("target")) > 1 or len(request.query_params.getlist("module")) > 1:
        raise BadRequest("give one 'target' (and at most one 'module') parameter to /logs")
    config = exporter.config
    if module is None:
        key = TargetKey(None, target) if target in config.targets else _probed_with_a_module(exporter, target)
    else:
        found = config.modules.get(module)
        if found is None:
            raise BadRequest(f"unknown module {module!r}: it is not in {config.targets_file}", 404)
        try:
            key = TargetKey(module, str(found.address(target)))
        except ModuleRequestError as error:
            raise BadRequest(str(error)) from None
    state = exporter.history.state(key)
    if state is None:
        raise BadRequest(f"target {key} has not been probed since sqlprobe started (or was reloaded)", 404)
    # A big result's account takes a while to render: not on the event loop, which answers the probes.
    return PlainTextResponse(await asyncio.to_thread(probe_log, state, exporter.history.last_failed(key)))


def _probed_with_a_module(exporter: Exporter, target: str) -> TargetKey:
    """The module target an address without its module names (as in the shipped alerts' links, which know only the
    instance): the one module that has probed it. Otherwise a 404 saying what to give instead."""
    config = exporter.config
    probed = []
    for name, found in config.modules.items():
        try:
            key = TargetKey(name, str(found.address(target)))
        except ModuleRequestError:
            continue
        if exporter.history.state(key) is not None:
            probed.append(key)
    if len(probed) == 1:
        return probed[0]
    if probed:
        modules = ", ".join(sorted(str(key.module) for key in probed))
        raise BadRequest(f"target {target!r} has been probed with modules {modules}: add &module= to say which")
    message = f"unknown target {target!r}: it is not in {config.targets_file}"
    if config.modules:
        modules = ", ".join(sorted(config.modules))
        message += f", and no module has probed it since sqlprobe started (modules: {modules})"
    raise BadRequest(message, 404)


@router.post("/-/reload", response_class=PlainTextResponse)
async def reload(exporter: ExporterDep) -> PlainTextResponse:
    """Load targets.yml and queries.yml again; on any problem the previous config keeps serving."""
    try:
        reloaded = await exporter.reload_shared()
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
        try:
            disposed = await asyncio.to_thread(exporter.dispose_idle, idle_for)
        except Exception as error:  # noqa: BLE001 - one failed sweep must not end the sweeping
            log.error(
                "disposing idle engines failed, trying again later: %s",
                where_it_failed(error),
                extra={"event": "idle_engines_failed"},
            )
            continue
        if disposed:
            log.info(
                "disposed the engines of %d targets not probed for %gs",
                len(disposed),
                idle_for,
                extra={"event": "idle_engines_disposed", "targets": disposed},
            )


async def _refresh_files(exporter: Exporter, interval: float) -> None:
    """Every ``interval``: inventory files read again, and the config reloaded if a password or TLS file changed."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(exporter.refresh_files)
        except Exception as error:  # noqa: BLE001 - the next refresh tries again; the loop must not die
            log.error("refreshing inventory and secret files failed: %s", where_it_failed(error))


async def _reload_logged(exporter: Exporter) -> None:
    """A reload on SIGHUP: its outcome goes to the log (and to /metrics) only."""
    try:
        await exporter.reload_shared()
    except ConfigError:
        pass  # logged by the reload itself
    except Exception as error:  # noqa: BLE001 - the next SIGHUP must find a process that still reloads
        log.error(
            "reload on SIGHUP failed, the previous config keeps serving: %s",
            where_it_failed(error),
            extra={"event": "reload_failed"},
        )


@router.get("/-/healthy", response_class=PlainTextResponse)
async def healthy() -> str:
    """Liveness: the process serves HTTP."""
    return "OK"


@router.get("/-/ready", response_class=PlainTextResponse)
async def ready() -> str:
    """Readiness: the config is loaded, so probes can be served."""
    return "OK"


async def _bad_request(_: Request, error: BadRequest) -> PlainTextResponse:
    return PlainTextResponse(f"{error}\n", status_code=error.status_code)


async def _http_error(request: Request, error: HTTPException) -> PlainTextResponse:
    # Unknown paths and methods get a sentence too, not JSON.
    message = f"{error.detail}: {request.method} {request.url.path}"
    if error.status_code == 404:
        message += " (sqlprobe serves /probe, /metrics, /sd, /, /logs, /-/healthy, /-/ready and POST /-/reload)"
    return PlainTextResponse(f"{message}\n", status_code=error.status_code, headers=error.headers)


async def _invalid_parameters(_: Request, error: RequestValidationError) -> PlainTextResponse:
    problems = [f"{detail['loc'][-1]}: {detail['msg']}" for detail in error.errors()]
    return PlainTextResponse(f"invalid request: {'; '.join(problems)}\n", status_code=400)
