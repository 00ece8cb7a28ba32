"""What of a DSN may be shown, and which of its query-string keys would smuggle a secret past the masking."""

from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL

# Query-string keys whose value is a secret: PyMySQL takes password/passwd, libpq password/sslpassword, and
# drivers name the rest alike. The DSN's user:password part and password_file are masked everywhere; a
# query string is not, so a secret there is refused at load instead.
_SECRET_KEY_PARTS = ("password", "passwd", "pwd", "secret", "token")


def secret_query_keys(url: URL) -> list[str]:
    """The query-string keys of ``url`` that carry a secret (compared case-insensitively)."""
    return [key for key in url.query if any(part in key.lower() for part in _SECRET_KEY_PARTS)]


def displayed(url: URL) -> str:
    """``url`` as it may be shown on a page or in a log: password masked, query-string values left out."""
    shown = url.set(query={}).render_as_string(hide_password=True)
    return shown + ("?" + "&".join(f"{key}=***" for key in url.query) if url.query else "")


def masked(text: str, password: str | None, public: Iterable[str]) -> str:
    """``text`` (a driver's message) with ``password``, as written or URL-escaped, starred where it stands on its own.

    Where it is part of a ``public`` text that stands in the message (the host or target name a probe request
    gave), it is left as it is: starring it there would tell whoever chose that name that it holds the password
    (a guess sent as a host name would be answered differently when right). An occurrence that runs past a public
    text is starred.
    """
    if not password:
        return text
    forms = sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True)
    shown = [(start, start + len(name)) for name in set(public) if name for start in _occurrences(text, name)]
    out, index = [], 0
    while index < len(text):
        form = next((form for form in forms if text.startswith(form, index)), None)
        if form is not None and not any(start <= index and index + len(form) <= end for start, end in shown):
            out.append("***")
            index += len(form)
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _occurrences(text: str, part: str) -> Iterable[int]:
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + 1)
