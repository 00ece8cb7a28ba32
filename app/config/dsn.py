"""A target's DSN from targets.yml: environment references filled in, checked the way its driver takes it."""

import re
from collections.abc import Mapping
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.config.dsn_query import query_problems
from app.config.dsn_secrets import secret_query_keys
from app.config.model import ADDRESS, ADDRESS_PLACEHOLDER
from app.config.yamlfile import KeyPath, YamlDocument
from app.errors import ConfigProblem

PASSWORD_AT = (
    "the host part holds an '@': an '@' in the user or password must be percent-encoded (%40), as must any of"
    " : / ? # [ ] % there; or give the password in password_file"
)
# ${NAME}, or ${NAME:-default} for a value used when NAME is not set (as in a shell).
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def dsn_template(
    dsn: str, doc: YamlDocument, path: KeyPath, environ: Mapping[str, str], problems: list[ConfigProblem]
) -> URL | None:
    """A module's DSN with a placeholder host where ``{address}`` stands: the one part a probe may fill in."""
    wrong = (
        f"{ADDRESS} must appear exactly once, as the whole host part of the dsn (e.g. mysql+pymysql://user@{ADDRESS}/)"
    )
    if dsn.count(ADDRESS) != 1:
        problems.append(doc.problem(path, wrong))
        return None
    url = resolve_dsn(dsn.replace(ADDRESS, ADDRESS_PLACEHOLDER), doc, path, environ, problems)
    if url is not None and (url.host != ADDRESS_PLACEHOLDER or url.port is not None):
        problems.append(doc.problem(path, wrong))
        return None
    return url


def resolve_dsn(
    dsn: str, doc: YamlDocument, path: KeyPath, environ: Mapping[str, str], problems: list[ConfigProblem]
) -> URL | None:
    """``dsn`` with its ${VAR}s and ${VAR:-default}s filled in, as a URL; None (with the problems said) if unusable."""
    missing = [
        match.group(1)
        for match in _ENV_REFERENCE.finditer(dsn)
        if match.group(1) not in environ and match.group(2) is None
    ]
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        problems.append(doc.problem(path, f"environment variable {names} is not set"))
        return None
    try:
        url = make_url(_substitute(dsn, environ))
        url.get_dialect().import_dbapi()
    except NoSuchModuleError as error:
        # The message names only the dialect/driver, never the credentials.
        problems.append(doc.problem(path, f"unsupported database driver: {error}"))
        return None
    except ImportError as error:
        problems.append(doc.problem(path, f"the database driver is not installed (cannot import {error.name!r})"))
        return None
    except (ArgumentError, ValueError):
        # Never quote the DSN: it may hold a password.
        problems.append(
            doc.problem(path, "not a valid SQLAlchemy URL (expected e.g. mysql+pymysql://user:pass@host:3306/)")
        )
        return None
    if url.host is not None and "@" in url.host:
        # What follows the password's '@' was read as the host, and would be sent to DNS: never quoted.
        problems.append(doc.problem(path, PASSWORD_AT))
        return None
    secrets = secret_query_keys(url)
    refused = [
        # The key only, never its value; the other keys are checked as the driver takes them.
        *(
            f"query-string key {key!r} carries a secret: give the password as user:password or in password_file"
            for key in secrets
        ),
        *query_problems(url.set(query={key: value for key, value in url.query.items() if key not in secrets})),
    ]
    problems.extend(doc.problem(path, problem) for problem in refused)
    return None if refused else url


def _substitute(dsn: str, environ: Mapping[str, str]) -> str:
    """Replace each ${VAR}; a value in the user:password part is URL-escaped, so any password works as it is."""
    # Where the user:password part ends is read with each reference blanked out (same length): a default holding
    # '/', '?', '#' or '@' must not move it.
    blank = _ENV_REFERENCE.sub(lambda match: "x" * len(match.group()), dsn)
    scheme_end = blank.find("://")
    authority = re.match(r"[^/?#]*", blank[scheme_end + 3 :]) if scheme_end >= 0 else None
    userinfo_end = scheme_end + 3 + authority.group().rfind("@") if authority else -1

    def value(match: re.Match[str]) -> str:
        text = environ.get(match.group(1), match.group(2) or "")
        return quote(text, safe="") if scheme_end < match.start() < userinfo_end else text

    return _ENV_REFERENCE.sub(value, dsn)
