"""Prometheus HTTP service discovery: the targets of the config as target groups."""

from collections.abc import Mapping, Sequence

from app.config import Config

QUERY_SETS_LABEL = "__meta_sqlprobe_query_sets"
# Prometheus turns a __param_NAME label into the URL parameter NAME of each scrape.
QUERY_SET_PARAMETER_LABEL = "__param_query_set"

TargetGroup = Mapping[str, Sequence[str] | Mapping[str, str]]


def target_groups(config: Config, query_set: str | None = None) -> list[TargetGroup]:
    """One group per target, with its labels and query sets; only targets of ``query_set`` when given.

    Filtered groups also carry ``__param_query_set``, so the job that discovers them probes only that set.
    """
    groups: list[TargetGroup] = []
    for target in config.targets.values():
        if query_set is not None and query_set not in target.query_sets:
            continue
        labels = {**target.labels, QUERY_SETS_LABEL: ",".join(target.query_sets)}
        if query_set is not None:
            labels[QUERY_SET_PARAMETER_LABEL] = query_set
        groups.append({"targets": [target.name], "labels": labels})
    return groups
