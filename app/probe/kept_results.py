"""Results kept for ``min_interval``: a query's successful result served again to later probes of its target
while younger than the interval, for the metrics each probe asks for."""

import time

from app.config import Query, Target
from app.config.parameters import ParameterSets
from app.probe.results import QueryResult

# Results of queries whose metrics set min_interval, by (target name, SQL, parameters): the target and the result.
ResultCache = dict[tuple[str, str, ParameterSets], tuple[Target, QueryResult]]


def kept_result(cache: ResultCache, target: Target, query: Query) -> QueryResult | None:
    """A successful result of ``query`` on ``target`` younger than its min_interval, for the metrics it feeds now."""
    if query.min_interval is None:
        return None
    kept_for, result = cache.get((target.name, query.sql, query.parameters), (None, None))
    if kept_for is not target or result is None or time.monotonic() - result.ran_at >= query.min_interval:
        return None
    by_key = {metric_result.metric.key: metric_result for metric_result in result.metrics}
    if any(metric.key not in by_key for metric in query.metrics):
        return None  # it ran for other query sets than this probe's
    metrics = tuple(by_key[metric.key] for metric in query.metrics)
    return result._replace(query=query, metrics=metrics, from_cache=True)


def keep(cache: ResultCache, target: Target, query: Query, result: QueryResult) -> None:
    """Keep ``result`` for later probes if its query's metrics allow it; never a failure."""
    if query.min_interval is not None and result.success:
        cache[target.name, query.sql, query.parameters] = (target, result)
