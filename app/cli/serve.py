"""Check the config, or serve it over HTTP with uvicorn: what the command line does once its signals are set."""

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys
from collections.abc import Sequence

import uvicorn

from app import __version__
from app.cli.flags import build_parser
from app.config import Config, load_config
from app.config.inventory import check_inventory
from app.config.library import default_queries
from app.drivers.fdlimit import hard_limit, raise_soft_limit, shortfall_warning
from app.errors import ConfigError, ConfigProblem
from app.probe.prober import ProbeLimits
from app.web.app import create_app
from app.web.http_protocol import HttpLimits, http_protocol
from app.web.internals import fallback_warnings, uvicorn_missing
from app.web.log_format import configure_logging
from app.web.webconfig import WebConfig, load_web_config, uvicorn_tls

log = logging.getLogger("sqlprobe")


def load_configs(args: argparse.Namespace) -> tuple[Config, WebConfig | None]:
    """Targets and queries, and the web config if given; a ConfigError lists the problems of every file."""
    problems: list[ConfigProblem] = []
    web_config = None
    if args.web_config is not None:
        try:
            web_config = load_web_config(args.web_config)
        except ConfigError as error:
            problems.extend(error.problems)
    try:
        config = load_config(args.targets, args.queries)
    except ConfigError as error:
        raise ConfigError([*error.problems, *problems]) from None
    problems.extend(check_inventory(config.modules.values()))
    if problems:
        raise ConfigError(problems)
    return config, web_config


def _raise_descriptor_limit(config: Config, max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one, log both, and warn if the config could need more."""
    limit = raise_soft_limit()
    log.info(
        "file descriptors: soft limit %d (was %d), hard limit %d",
        limit.soft,
        limit.found,
        limit.hard,
        extra={"event": "nofile_limit", "soft": limit.soft, "was": limit.found, "hard": limit.hard},
    )
    shortfall = shortfall_warning(config, max_connections, limit.soft)
    if shortfall is not None:
        log.warning("%s", shortfall, extra={"event": "nofile_shortfall"})


def _http_protocol(limits: HttpLimits) -> type[asyncio.Protocol] | str:
    """The bounded one-write protocol of app/web/http_protocol.py, or uvicorn's stock one if its internals are
    missing."""
    if uvicorn_missing():
        # "auto" is the httptools protocol when httptools is installed: usable unless its module is what is missing.
        return "h11" if importlib.util.find_spec("uvicorn.protocols.http.httptools_impl") is None else "auto"
    return http_protocol(limits)


def run(argv: Sequence[str] | None = None) -> int:
    """Run sqlprobe; the exit status is 1 for an invalid config."""
    args = build_parser().parse_args(argv)
    if args.queries is None:
        args.queries = default_queries(args.targets)
    configure_logging(args.log_level, args.log_format)
    try:
        config, web_config = load_configs(args)
    except ConfigError as error:
        problems = [str(problem) for problem in error.problems]
        if args.check_config:
            print(f"sqlprobe: the configuration has {len(problems)} problem(s):", file=sys.stderr)
            print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        else:
            log.error(
                "the configuration has %d problem(s):\n  %s",
                len(problems),
                "\n  ".join(problems),
                extra={"event": "config_invalid", "problems": problems},
            )
        return 1
    if args.check_config:
        modules = f", {len(config.modules)} modules" if config.modules else ""
        counts = f"{len(config.targets)} targets, {len(config.query_sets)} query sets{modules}"
        print(f"sqlprobe: configuration OK: {counts} ({args.targets}, {args.queries})")
        shortfall = shortfall_warning(config, args.max_connections, hard_limit())
        if shortfall is not None:
            print(f"sqlprobe: warning: {shortfall}", file=sys.stderr)
        return 0
    _raise_descriptor_limit(config, args.max_connections)
    host, port = args.bind
    for warning in fallback_warnings():
        log.warning(warning, extra={"event": "fallback"})
    log.info(
        "sqlprobe %s serving %d targets on %s:%d (%s, %s)",
        __version__,
        len(config.targets),
        host,
        port,
        args.targets,
        args.queries,
        extra={
            "event": "startup",
            "version": __version__,
            "targets": len(config.targets),
            "bind": f"{host}:{port}",
            "files": [str(args.targets), str(args.queries)],
        },
    )
    # uvicorn stops gracefully on SIGTERM, then re-raises it to the handler it found: a no-op one
    # makes that stop exit 0, as a service manager expects.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(
        create_app(
            config,
            max_workers=args.max_threads,
            reload_on_sighup=True,
            web_config=web_config,
            idle_engine_timeout=args.idle_engine_timeout,
            refresh_interval=args.refresh_interval,
            history_limit=args.history_limit,
            probe_limits=ProbeLimits(args.max_probes_in_flight, args.max_module_probes_in_flight),
        ),
        host=host,
        port=port,
        log_config=None,
        log_level=args.log_level,
        access_log=args.log_level == "debug",
        # sqlprobe never uses the client's address: no X-Forwarded-For work on every request.
        proxy_headers=False,
        # As many connects waiting to be accepted as connections allowed: a burst of scrapes (every target's at
        # once, after a restart) is accepted, not dropped by the kernel (which caps this at net.core.somaxconn).
        backlog=max(2048, args.max_connections),
        # Bounded before the app (and its basic auth) sees a request; an answer in one write, not two.
        http=_http_protocol(HttpLimits(args.max_header_size, args.header_timeout, args.max_connections)),
        **uvicorn_tls(web_config),
    )
    return 0
