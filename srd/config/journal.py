"""The journal's settings: where it lives, checked without opening it.

``failover.journal`` names the journal; ``srd check`` checks the name here, and the journal
(``srd.journal``) opens what it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

JOURNAL_FILE = "journal.sqlite3"
"""The journal's file in a state directory."""
POSTGRES_SCHEMES = ("postgresql", "postgres")


class JournalUrlError(ValueError):
    """A journal URL that names no journal srd can open; the message says what is wrong."""


@dataclass(frozen=True)
class PostgresTarget:
    url: str
    """As configured: it never holds a password (``postgres_target`` refuses one)."""
    shown: str
    """For messages: scheme, user, host, port and database."""


def check_journal_url(url: str) -> None:
    """Check a journal URL's syntax without opening it: JournalUrlError says what is wrong."""
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        postgres_target(url)
    else:
        sqlite_path(url)


def sqlite_path(target: str | Path) -> Path:
    """The SQLite file ``target`` (a state directory or a ``sqlite:///`` URL) names."""
    text = str(target)
    if "://" not in text:
        return Path(target) / JOURNAL_FILE
    url = urlsplit(text)
    if url.scheme != "sqlite":
        raise JournalUrlError(
            f"unsupported journal URL scheme {url.scheme!r}: expected sqlite:///abs/path"
            " or postgresql://user@host:port/db"
        )
    if url.netloc or not url.path.startswith("/"):
        raise JournalUrlError(
            f"journal URL {text!r} must name an absolute path: sqlite:///abs/path"
        )
    return Path(url.path)


def postgres_target(url: str) -> PostgresTarget:
    """Check a ``postgresql://user@host:port/db`` URL without connecting."""
    # libpq parses the query parameters; only a PostgreSQL journal needs psycopg loaded.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    netloc = parts.hostname or ""
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if port == -1:
        raise JournalUrlError(f"journal URL {shown}: the port is not a number")
    if parts.password is not None:
        raise JournalUrlError(
            f"journal URL {shown}: remove the password from the URL; give it as"
            " failover.journal_password ({env: VARIABLE} or {file: /path})"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise JournalUrlError(f"journal URL {shown}: {exc}") from None
    if "password" in params:
        raise JournalUrlError(
            f"journal URL {shown}: remove password= from the URL; give it as"
            " failover.journal_password ({env: VARIABLE} or {file: /path})"
        )
    if not params.get("dbname"):
        raise JournalUrlError(f"journal URL {shown}: name the database: postgresql://user@host/db")
    return PostgresTarget(url, shown)
