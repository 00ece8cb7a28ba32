"""The status page at ``/``: the fleet at a glance, from the probe history, rendered on request as plain HTML."""

import html
import time
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import urlencode

from app import __version__
from app.probe.exporter import Exporter
from app.probe.history import History, Probe, TargetKey, TargetState
from app.web.report import failures

FAILING, NEVER_PROBED, OK = "failing", "never probed", "ok"
_ORDER = {FAILING: 0, NEVER_PROBED: 1, OK: 2}
# A driver's message can be long; the log has it whole.
_MESSAGE_CHARS = 240


class Row(NamedTuple):
    """One target on the page: its state, since when (time.time()), and its last probe if it had one."""

    key: TargetKey
    state: str
    since: float
    last: Probe | None
    title: str  # shown on hover: what the target is
    failing: tuple[Probe, ...] = ()  # the last failed probe of each selection of query sets


def status_rows(exporter: Exporter) -> list[Row]:
    """Named targets, module targets listed in inventories or probed lately: failing, never probed, then ok."""
    rows = list(_rows(exporter))
    rows.sort(key=lambda row: (_ORDER[row.state], row.key.name, row.key.module or ""))
    return rows


def _rows(exporter: Exporter) -> Iterator[Row]:
    config, history = exporter.config, exporter.history
    for target in config.targets.values():
        key = TargetKey(None, target.name)
        yield _row_of(key, history.state(key), history, f"{target.display_dsn} ({', '.join(target.query_sets)})")
    probed = dict(history.module_targets())
    for module in config.modules.values():
        title = f"module {module.name}: {module.display_dsn} ({', '.join(module.template.query_sets)})"
        for address in list(exporter.inventory.servers(module.name)):
            key = TargetKey(module.name, str(address))
            yield _row_of(key, probed.pop(key, None), history, title)
    for key, state in probed.items():
        yield _row_of(key, state, history, f"module {key.module}")


def _row_of(key: TargetKey, state: TargetState | None, history: History, title: str) -> Row:
    if state is None:
        since = history.added_at(key.name) if key.module is None else history.started_at
        return Row(key, NEVER_PROBED, since, None, title)
    return Row(key, OK if state.ok else FAILING, state.since, state.last, title, tuple(state.failing()))


# Rows on a page at most, failing ones first: 20,000 inventory servers made an 8 MB page, rendered and sent on the
# event loop, that held every probe back for seconds per request. The search and the pages reach every row.
MAX_ROWS = 1000


def render_status_page(exporter: Exporter, search: str = "", page: int = 1) -> str:
    """The page: counts of all targets, then one table row per target that matches ``search`` (every word of it in
    the row's name, module, state or reasons), MAX_ROWS a page, then the modules."""
    now = time.time()
    rows = status_rows(exporter)
    counts = {state: 0 for state in _ORDER}
    for row in rows:
        counts[row.state] += 1
    words = search.lower().split()
    matching = [row for row in rows if all(word in _searched_text(row) for word in words)] if words else rows
    pages = max(1, -(-len(matching) // MAX_ROWS))
    page = min(page, pages)
    shown = matching[(page - 1) * MAX_ROWS : page * MAX_ROWS]
    return _PAGE.format(
        version=html.escape(__version__),
        total=len(rows),
        failing=counts[FAILING],
        never=counts[NEVER_PROBED],
        ok=counts[OK],
        limit=exporter.history.limit,
        search=html.escape(search),
        rows="".join(_row(row, now) for row in shown),
        pager=_pager(search, page, pages, len(matching), len(rows)),
        modules=_modules(exporter),
    )


def _searched_text(row: Row) -> str:
    """What the search looks in: the target's name and module, its state and why it fails."""
    reasons = (
        f"{failure.reason} {failure.message} {' '.join(failure.metrics)}"
        for probe in row.failing
        for failure in failures(probe.result)
    )
    return " ".join((row.key.name, row.key.module or "", row.state, *reasons)).lower()


def _pager(search: str, page: int, pages: int, matching: int, total: int) -> str:
    """Which rows the page shows, and links to the pages before and after."""
    if pages == 1 and matching == total:
        return ""
    first, last = (page - 1) * MAX_ROWS + 1, min(page * MAX_ROWS, matching)
    shown = f"targets {first:,} to {last:,} of {matching:,}" if matching else "no target"
    found = f" matching {html.escape(repr(search))}" if search.split() else ""
    links = [
        f'<a href="{html.escape(_page_url(search, number))}">{label}</a>'
        for number, label in ((page - 1, "previous page"), (page + 1, "next page"))
        if 1 <= number <= pages
    ]
    return f'<p class="m" id="pages">{shown}{found} (failing ones first) {" · ".join(links)}</p>\n'


def _page_url(search: str, page: int) -> str:
    return "/?" + urlencode(({"q": search} if search else {}) | {"page": page})


def _modules(exporter: Exporter) -> str:
    """The modules and where they may connect: /probe?target=ADDRESS&module=NAME."""
    modules = exporter.config.modules.values()
    if not modules:
        return ""
    rows = "".join(
        "<tr><td>{name}</td><td>{sets}</td><td>{dsn}</td><td>{allow}</td><td>{servers}</td><td>{probed}</td></tr>\n".format(
            name=html.escape(module.name),
            sets=html.escape(", ".join(module.template.query_sets)),
            dsn=html.escape(module.display_dsn),
            allow=html.escape(", ".join(rule.text for rule in module.allow)),
            servers=len(exporter.inventory.servers(module.name)),
            probed=exporter.module_targets.count(module.name),
        )
        for module in modules
    )
    return (
        f"<h2>Modules ({len(modules)})</h2>\n<p>Probe with <code>/probe?target=ADDRESS&amp;module=NAME</code>.</p>\n"
        "<table>\n<thead><tr><th>module</th><th>query sets</th><th>DSN</th><th>allow</th><th>inventory servers</th>"
        f"<th>engines</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    )


def _row(row: Row, now: float) -> str:
    query = {"target": row.key.name} | ({"module": row.key.module} if row.key.module is not None else {})
    probe_url = html.escape("/probe?" + urlencode(query))
    links = f'<a href="{probe_url}&amp;debug=true">debug</a> <a href="{probe_url}">probe</a>'
    name = html.escape(row.key.name)
    if row.key.module is not None:
        name += f' <span class="m">{html.escape(row.key.module)}</span>'
    last = age = duration = problem = ""
    if row.last is not None:
        links = f'<a href="{html.escape("/logs?" + urlencode(query))}">log</a> {links}'
        age = _span(now - row.last.ended_at) + " ago"
        duration = f"{row.last.result.duration:.3f}s"
        last = f' title="{_when(row.last.ended_at)}"'
        problem = "".join(
            f"<div>{_sets(probe)}<b>{html.escape(failure.reason)}</b> {html.escape(_shortened(failure.message))}"
            f' <span class="m">({html.escape(", ".join(failure.metrics))})</span></div>'
            for probe in row.failing
            for failure in failures(probe.result)
        )
    state_class = row.state.replace(" ", "-")
    return (
        f'<tr class="{state_class}"><td title="{html.escape(row.title)}">{name}</td>'
        f'<td class="s">{row.state}</td><td title="{_when(row.since)}">{_span(now - row.since)}</td>'
        f"<td{last}>{age}</td><td>{duration}</td><td>{problem}</td><td>{links}</td></tr>\n"
    )


def _sets(probe: Probe) -> str:
    """For a probe restricted to some query sets, which."""
    if probe.selection is None:
        return ""
    return f'<span class="m">[{html.escape(", ".join(sorted(probe.selection)))}]</span> '


def _shortened(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 1] + "…"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _span(seconds: float) -> str:
    """A duration as people say it: 4s, 3m 12s, 2h 5m, 3d 4h."""
    seconds = max(0, int(seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // smaller_size
            return f"{seconds // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{seconds}s"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>sqlprobe</title>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;width:100%}}
th,td{{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}}
th{{background:#f4f4f4}}
.s{{font-weight:bold}}
.s,td:first-child,td:last-child{{white-space:nowrap}}
.failing .s,.bad{{color:#b00020}}
.ok .s{{color:#1b7f3b}}
.never-probed .s{{color:#777}}
.m{{color:#666;font-size:90%}}
.counts b{{font-size:130%}}
#filter{{font-size:14px;padding:.3em;width:20em}}
</style></head>
<body>
<h1>sqlprobe</h1>
<p class="counts"><b id="total">{total}</b> targets &middot; <b id="failing" class="bad">{failing}</b> failing
&middot; <b id="never">{never}</b> not probed yet &middot; <b id="ok">{ok}</b> ok</p>
<form method="get" action="/"><input id="filter" name="q" type="search" value="{search}"
placeholder="filter: name, state, reason… (Enter searches every target)" autofocus>
<span class="m">Each target's last probe is kept, and the last {limit} failed ones; the log link shows them.
sqlprobe {version}: own metrics at <a href="/metrics">/metrics</a>, targets for Prometheus at <a href="/sd">/sd</a>.
</span></form>
{pager}
<table>
<thead><tr><th>target</th><th>state</th><th>since</th><th>last probe</th><th>took</th><th>why it fails</th><th></th>
</tr></thead>
<tbody id="targets">
{rows}</tbody></table>
{modules}<script>
document.getElementById("filter").oninput = function () {{
  var words = this.value.toLowerCase();
  for (var row of document.getElementById("targets").rows) row.hidden = !row.textContent.toLowerCase().includes(words);
}};
</script>
</body></html>
"""
