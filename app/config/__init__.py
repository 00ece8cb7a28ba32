"""The configuration layer: targets.yml and queries.yml read, checked and compiled into frozen objects.

It imports nothing of sqlprobe's but app.errors; every other layer may import it.
"""

from app.config.load import load_config
from app.config.model import (
    ADDRESS,
    BUILTIN_FAMILIES,
    AddressNotAllowed,
    Config,
    InvalidAddress,
    Metric,
    Module,
    ModuleRequestError,
    Query,
    Target,
    UnknownModule,
)

__all__ = [
    "ADDRESS",
    "BUILTIN_FAMILIES",
    "AddressNotAllowed",
    "Config",
    "InvalidAddress",
    "Metric",
    "Module",
    "ModuleRequestError",
    "Query",
    "Target",
    "UnknownModule",
    "load_config",
]
