"""What of a DSN may be shown, and which of its query-string keys would smuggle a secret past the masking."""

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
