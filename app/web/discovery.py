"""Prometheus HTTP service discovery: the named targets and the servers of module inventories as target groups."""

from collections.abc import Mapping, Sequence

from app.config import Config
from app.config.inventory import Inventory

QUERY_SETS_LABEL = "__meta_sqlprobe_query_sets"
MODULE_LABEL = "__meta_sqlprobe_module"
# Prometheus turns a __param_NAME label into the URL parameter NAME of each scrape.
QUERY_SET_PARAMETER_LABEL = "__param_query_set"
MODULE_PARAMETER_LABEL = "__param_module"

TargetGroup = Mapping[str, Sequence[str] | Mapping[str, str]]


def target_groups(config: Config, inventory: Inventory, query_set: str | None = None) -> list[TargetGroup]:
    """One group per target, with its labels and query sets; only targets of ``query_set`` when given.

    A server listed in a module's inventory is a target too: its group carries the module as ``__param_module``.
    Filtered groups also carry ``__param_query_set``, so the job that discovers them probes only that set.
    """
    groups: list[TargetGroup] = []
    for target in config.targets.values():
        if query_set is None or query_set in target.query_sets:
            labels = {**target.labels, QUERY_SETS_LABEL: ",".join(target.query_sets)}
            groups.append({"targets": [target.name], "labels": _filtered(labels, query_set)})
    for module in config.modules.values():
        if query_set is not None and query_set not in module.template.query_sets:
            continue
        for address, file_labels in inventory.servers(module.name).items():
            labels = {
                **module.template.labels,
                **file_labels,
                QUERY_SETS_LABEL: ",".join(module.template.query_sets),
                MODULE_LABEL: module.name,
                MODULE_PARAMETER_LABEL: module.name,
            }
            groups.append({"targets": [str(address)], "labels": _filtered(labels, query_set)})
    return groups


def _filtered(labels: dict[str, str], query_set: str | None) -> dict[str, str]:
    return labels if query_set is None else {**labels, QUERY_SET_PARAMETER_LABEL: query_set}
