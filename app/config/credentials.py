"""A target's credentials_command: the program checked at load (it exists and may be run), never run here."""

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from app.config.schema import TargetSpec
from app.config.secret_files import Locate
from app.config.yamlfile import YamlDocument
from app.errors import ConfigProblem

# Characters of a command's name told in a message at most.
MAX_NAME = 120


@dataclass(frozen=True, slots=True)
class CredentialsCommand:
    """A program that prints a target's credentials (a password, or JSON with a user name and password)."""

    argv: tuple[str, ...]  # argv[0] an absolute path, found at load
    ttl: float | None  # seconds its credentials stay good when what it prints gives no lifetime; None: until refused

    @property
    def name(self) -> str:
        """How messages name it: as written in targets.yml, the program's path cut to its file name."""
        named = shlex.join((Path(self.argv[0]).name, *self.argv[1:]))
        return f"({named[:MAX_NAME]}…)" if len(named) > MAX_NAME else f"({named})"


def load_credentials_command(
    spec: TargetSpec, url: URL, doc: YamlDocument, locate: Locate, problems: list[ConfigProblem]
) -> CredentialsCommand | None:
    """The target's command, its program found (a path relative to the targets file, or a name on PATH) and
    executable; None, with a problem, if it is not, or if the DSN or password_file gives a password too."""
    assert spec.credentials_command is not None
    where = locate(("credentials_command",))
    if url.password is not None or spec.password_file is not None:
        given = "the dsn has a password" if url.password is not None else "password_file gives one"
        problems.append(doc.problem(where, f"{given} too: give only one"))
        return None
    if url.get_backend_name() not in {"mysql", "mariadb", "postgresql"}:
        problems.append(
            doc.problem(where, "only MySQL, MariaDB and PostgreSQL targets take their credentials from a command")
        )
        return None
    program = spec.credentials_command[0]
    if "/" in program:
        path = Path(doc.file).absolute().parent / program
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(program)
    if found is None:
        problem = f"{program!r} is not an executable file" if "/" in program else f"{program!r} is not on PATH"
        problems.append(doc.problem((*where, 0), f"{problem} (the command is checked, not run, at load)"))
        return None
    return CredentialsCommand((found, *spec.credentials_command[1:]), spec.credentials_ttl)
