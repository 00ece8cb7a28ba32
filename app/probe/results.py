"""What a probe found: each metric's samples, each query's run, the whole probe. Immutable, made per probe."""

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import NamedTuple

from app.config import Metric, Query, Target
from app.errors import ProbeError

LabelValues = tuple[str, ...]
_NOTHING_SKIPPED: Mapping[str, int] = MappingProxyType({})

# Results are named tuples: immutable like the config's frozen dataclasses, and made several times per probe, where
# a frozen dataclass's __init__ (object.__setattr__ per field) costs three times as much.


class Family(NamedTuple):
    """One family a ``name_from`` metric made from its rows: its name, type, help, label names and samples."""

    name: str  # a counter's without _total
    kind: str
    documentation: str
    label_names: tuple[str, ...]
    samples: tuple[tuple[LabelValues, float], ...]


class MetricResult(NamedTuple):
    """The samples one metric got from its query, the rows it skipped, or why it failed."""

    metric: Metric
    samples: tuple[tuple[LabelValues, float], ...] = ()
    skipped: Mapping[str, int] = _NOTHING_SKIPPED
    error: ProbeError | None = None
    # Each sample's time in Unix seconds (None: none in its row), in the order of samples; () without timestamp_value.
    timestamps: tuple[float | None, ...] = ()
    families: tuple[Family, ...] = ()  # a name_from metric's families (its samples are theirs, not in samples)

    @property
    def sample_count(self) -> int:
        """Samples the metric gave, in all its families."""
        return len(self.samples) + sum(len(family.samples) for family in self.families)


class QueryResult(NamedTuple):
    """One SQL text's run: rows returned, time taken, and what its metrics made of the rows."""

    query: Query
    duration: float
    rows: int | None
    error: ProbeError | None
    metrics: tuple[MetricResult, ...]
    ran_at: float = 0.0  # time.monotonic() when the SQL ran
    from_cache: bool = False  # served again within the metrics' min_interval, not run by this probe

    @property
    def success(self) -> bool:
        """True when the query ran and every metric it feeds could read its columns."""
        return self.error is None and all(result.error is None for result in self.metrics)


class ProbeResult(NamedTuple):
    """Everything one probe found, in the order the queries ran."""

    target: Target
    budget: float
    duration: float
    queries: tuple[QueryResult, ...]
    at: float = 0.0  # time.monotonic() when the probe answered: the age of kept results is counted to it

    @property
    def success(self) -> bool:
        """True only if the connection and every query succeeded."""
        return all(query.success for query in self.queries)

    def metric_results(self) -> Iterator[tuple[MetricResult, QueryResult]]:
        """Each metric's result with the query result that fed it."""
        for query in self.queries:
            for metric in query.metrics:
                yield metric, query


def failed_query(query: Query, error: ProbeError, duration: float = 0.0) -> QueryResult:
    """A query that did not run (or did not finish): every metric it feeds fails with ``error``."""
    return QueryResult(query, duration, None, error, tuple(MetricResult(m, error=error) for m in query.metrics))
