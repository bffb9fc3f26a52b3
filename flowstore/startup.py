"""Loud defaults: what a store says, once per process, when its configuration is likely not what
its operator meant.

- No database URL configured: the data lives in an in-memory database and is lost at exit.
- A ``FLOWSTORE_`` environment variable that names no setting (a misspelling, say
  ``FLOWSTORE_DATABASE_ULR``): reported with the closest setting. It is a warning, not a
  refusal: a variable meant for a newer flowstore, or for a tool beside it, must not stop a
  service from starting. ``FLOWSTORE_TEST_*`` belongs to the test kit and the suite.
- The development API-key secret used to hash a key on a database that outlives the process:
  API-key hashes made with a published secret protect nothing.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Mapping

from flowstore.config import DEV_API_KEY_SECRET, Settings

__all__ = ["PREFIX", "report_api_key_secret", "report_configuration", "unknown_variables"]

log = logging.getLogger("flowstore")

PREFIX = "FLOWSTORE_"
#: Variables flowstore reads that are not settings: the test kit's and the suite's.
_OTHERS = ("FLOWSTORE_TEST_", "FLOWSTORE_MIGRATIONS")

_said: set[str] = set()
_lock = threading.Lock()


def _once(key: str, message: str, *args: object) -> None:
    with _lock:
        if key in _said:
            return
        _said.add(key)
    log.warning(message, *args)


def unknown_variables(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """``FLOWSTORE_`` variables that name no setting, each with the closest setting's variable
    (or ``None``)."""
    environ = os.environ if environ is None else environ
    known = sorted(name.upper() for name in Settings.model_fields)
    found: dict[str, str | None] = {}
    for name in environ:
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper.startswith(_OTHERS):
            continue
        setting = upper[len(PREFIX) :]
        if setting in known:
            continue
        close = difflib.get_close_matches(setting, known, n=1, cutoff=0.6)
        found[name] = PREFIX + close[0] if close else None
    return found


def report_configuration(settings: Settings, *, url_given: bool, memory: bool) -> None:
    """Warn (once each per process) about an in-memory database nobody asked for and unknown
    ``FLOWSTORE_`` variables."""
    if memory and not url_given and "database_url" not in settings.model_fields_set:
        _once(
            "memory",
            "flowstore: no database URL is configured (FLOWSTORE_DATABASE_URL), so the data "
            "lives in an in-memory SQLite database and is lost when the process exits",
        )
    for name, close in unknown_variables().items():
        hint = f"; did you mean {close}?" if close else ""
        _once(f"unknown:{name}", "flowstore: %s names no setting, it is ignored%s", name, hint)


def report_api_key_secret(secret: str, *, memory: bool) -> None:
    """Warn (once per process) when API keys are hashed with the development secret on a
    database that outlives the process (called where a key is hashed, not at start-up: a
    migration or a worker never needs the secret)."""
    if not memory and secret == DEV_API_KEY_SECRET:
        _once(
            "secret",
            "flowstore: API keys are hashed with the development secret, which is public; set "
            "FLOWSTORE_API_KEY_SECRET to a long random value before issuing real keys",
        )
