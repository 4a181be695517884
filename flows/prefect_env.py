"""Embedded Prefect defaults, applied before Prefect is imported.

With no ``PREFECT_API_URL`` set, Prefect starts a temporary local server backed by
SQLite under ``PREFECT_HOME``: the embedded default a laptop user and the tests want.
Anything the user has already set in the environment wins.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    # No telemetry from batch jobs; it also races the local server's SQLite on first start.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Our flows pass dataset references, not pixels, so results are small; never pickle
    # them into a result store unless the deployment asks for it.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Ephemeral servers can be slow to come up on a loaded 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_embedded_defaults(log_level: str | None = None) -> None:
    """Set the embedded Prefect defaults in ``os.environ`` unless already set."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    if log_level is not None:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", log_level.upper())
