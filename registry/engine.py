"""Database engines for the registry: SQLite (embedded default) and PostgreSQL.

SQLite is set up so that several processes (two flows, or worker processes of one) can
write one registry file safely:

* WAL journal: readers never block the writer and the writer never blocks readers;
* ``busy_timeout`` of 60 s: a writer waits for the lock instead of failing at once;
* write transactions start with ``BEGIN IMMEDIATE``, taking the write lock up front. A
  deferred transaction that reads and then writes can deadlock with another one doing
  the same, and SQLite then fails without waiting, whatever the busy timeout;
* foreign keys on (SQLite leaves them off by default);
* :func:`run_transaction` retries a whole transaction, with backoff, if SQLite still
  reports "database is locked" (or PostgreSQL a serialization failure or deadlock).

PostgreSQL (``postgresql+psycopg://``) needs nothing special beyond ``pool_pre_ping``.
URLs are only ever logged through :func:`describe_url`, which hides the password.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a SQLite connection waits for a lock before reporting "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Attempts of a whole transaction when the database reports a transient conflict.
TRANSACTION_ATTEMPTS = 6

_WRITE_OPTION = "coadd_registry_write"
_TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def describe_url(url: str | sa.URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return sa.make_url(url).render_as_string(hide_password=True)


def is_sqlite(engine: sa.Engine) -> bool:
    """Whether ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_engine(url: str | sa.URL, *, echo: bool = False) -> sa.Engine:
    """Engine for ``url`` with the settings this module describes.

    ``sqlite:///PATH`` (or ``sqlite://`` in memory, for tests) and
    ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`` are supported; any other
    SQLAlchemy URL is passed through unchanged.
    """
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, echo=echo)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("", "psycopg2"):
        log.debug("using the psycopg (3) driver for %s", describe_url(url))
        url = url.set(drivername="postgresql+psycopg")
    log.debug("connecting to %s", describe_url(url))
    return sa.create_engine(url, echo=echo, pool_pre_ping=True, future=True)


def _create_sqlite_engine(url: sa.URL, *, echo: bool) -> sa.Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if in_memory:
        # One shared connection, or each checkout would see a new empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (the driver's implicit BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a lock or serialization conflict worth retrying."""
    if not isinstance(error, DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    if isinstance(error, OperationalError):
        message = str(error.orig).lower()
        return "database is locked" in message or "database is busy" in message
    return False


@contextmanager
def transaction(engine: sa.Engine, *, write: bool) -> Iterator[sa.Connection]:
    """A connection inside one transaction (``BEGIN IMMEDIATE`` on SQLite if ``write``)."""
    with engine.connect() as connection:
        if write:
            connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


def run_transaction(
    engine: sa.Engine,
    work: Callable[[sa.Connection], T],
    *,
    write: bool = True,
    attempts: int = TRANSACTION_ATTEMPTS,
) -> T:
    """Run ``work(connection)`` in one transaction, retrying transient conflicts.

    ``work`` may run more than once, so it must not have effects outside the database
    (or they must be repeatable); everything it did is rolled back before a retry.
    """
    delay = 0.05
    for attempt in range(1, attempts + 1):
        try:
            with transaction(engine, write=write) as connection:
                return work(connection)
        except DBAPIError as error:
            if not is_transient(error) or attempt == attempts:
                raise
            pause = delay * (1.0 + random.random())
            log.warning(
                "transient database conflict on %s (attempt %d/%d), retrying in %.2f s: %s",
                describe_url(engine.url),
                attempt,
                attempts,
                pause,
                error.orig,
            )
            time.sleep(pause)
            delay = min(delay * 2.0, 2.0)
    raise AssertionError("unreachable")


def insert_ignoring_conflicts(
    connection: sa.Connection, table: sa.Table, index_elements: list[str] | None = None
) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the connection's backend.

    Concurrent writers may insert the same row (the same instrument, the same run); the
    loser's insert then does nothing and the caller compares with what is there.
    Foreign-key violations are still raised. To learn whether the row was inserted, add
    ``.returning(...)``: ``rowcount`` is not reliable for this statement on every driver.
    """
    name = connection.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        raise NotImplementedError(f"no INSERT ... ON CONFLICT for {name}")
    return dialect_insert(table).on_conflict_do_nothing(index_elements=index_elements)


def integrity_violation(error: sa.exc.IntegrityError) -> str:
    """``"unique"``, ``"foreign_key"``, ``"check"`` or ``"other"``: what ``error`` violated."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate == "23505":
        return "unique"
    if sqlstate == "23503":
        return "foreign_key"
    if sqlstate == "23514":
        return "check"
    message = str(error.orig).upper()
    if "UNIQUE" in message or "PRIMARY KEY" in message:
        return "unique"
    if "FOREIGN KEY" in message:
        return "foreign_key"
    if "CHECK" in message:
        return "check"
    return "other"


def bulk_insert(
    connection: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """``executemany`` of plain-valued tuples straight to the driver.

    For large batches of ints and strings (spatial index rows), skipping SQLAlchemy's
    per-row parameter processing halves the insert time. Values must need no type
    conversion (no UUIDs, datetimes or JSON).
    """
    if not rows:
        return
    preparer = connection.dialect.identifier_preparer
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = "INSERT INTO {} ({}) VALUES ({})".format(
        preparer.format_table(table),
        ", ".join(preparer.quote(c) for c in columns),
        ", ".join(marker for _ in columns),
    )
    connection.exec_driver_sql(statement, rows)
