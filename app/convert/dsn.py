"""DSNs of other exporters as sqlprobe DSNs: the drivers sqlprobe ships, environment references kept as ${VAR}."""

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import URL

# Backend → the driver sqlprobe installs for it.
DRIVERS = {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql", "postgresql": "postgresql+psycopg", "sqlite": "sqlite"}


@dataclass(frozen=True)
class EnvRef:
    """A value the exporter reads from an environment variable when it starts."""

    name: str

    @property
    def reference(self) -> str:
        """As sqlprobe writes it in a DSN."""
        return "${" + self.name + "}"


def sqlprobe_drivername(backend: str) -> str | None:
    """The SQLAlchemy drivername sqlprobe uses for ``backend`` (``postgres`` too), or None if it has none."""
    return DRIVERS.get("postgresql" if backend == "postgres" else backend)


def render(url: URL, references: Mapping[str, EnvRef]) -> str:
    """``url`` as text, each placeholder in ``references`` replaced by its ${VAR} (sqlprobe escapes the value)."""
    text = url.render_as_string(hide_password=False)
    for placeholder, ref in references.items():
        text = text.replace(placeholder, ref.reference)
    return text
