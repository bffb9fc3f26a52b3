"""Loud defaults (flowstore.startup): an unconfigured store says its data is lost at exit, a
misspelt ``FLOWSTORE_`` variable is reported with the setting it resembles, the development
API-key secret on a lasting database is called out; each once per process, as a WARNING."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from flowstore import Settings, Store, startup
from flowstore.models import Organization
from flowstore.startup import unknown_variables


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing said yet in this process, and no FLOWSTORE_ setting in the environment."""
    monkeypatch.setattr(startup, "_said", set())
    for name in list(os.environ):
        if name.startswith("FLOWSTORE_") and not name.startswith("FLOWSTORE_TEST_"):
            monkeypatch.delenv(name)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_an_unconfigured_store_says_its_data_is_lost_at_exit_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="flowstore"):
        Store().close()
        Store().close()
    said = [m for m in _warnings(caplog) if "in-memory" in m]
    assert len(said) == 1 and "lost when the process exits" in said[0]


def test_an_in_memory_database_asked_for_is_not_called_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="flowstore"):
        Store("sqlite://").close()
        Store(settings=Settings(database_url="sqlite://")).close()
    assert _warnings(caplog) == []


def test_a_misspelt_variable_is_reported_with_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLOWSTORE_DATABASE_ULR", "postgresql://x")
    monkeypatch.setenv("FLOWSTORE_TEST_ANYTHING", "1")  # the test kit's: not reported
    with caplog.at_level("WARNING", logger="flowstore"):
        Store("sqlite://").close()
    assert _warnings(caplog) == [
        "flowstore: FLOWSTORE_DATABASE_ULR names no setting, it is ignored; "
        "did you mean FLOWSTORE_DATABASE_URL?"
    ]
    assert unknown_variables({"FLOWSTORE_QWXZQJ": "1", "FLOWSTORE_ECHO": "1"}) == {
        "FLOWSTORE_QWXZQJ": None
    }


def _issue_a_key(store: Store[Any]) -> None:
    with store.unit_of_work() as uow:
        org = uow.organizations.add(Organization(name="Acme", slug=f"acme-{uuid.uuid4()}"))
        uow.applications.create_with_api_key(org.id, "gateway")


def test_the_development_secret_on_a_lasting_database_is_called_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    with caplog.at_level("WARNING", logger="flowstore"):
        with Store(url) as store:
            store.upgrade()
            assert _warnings(caplog) == []  # opening and migrating need no secret
            _issue_a_key(store)
            _issue_a_key(store)
        real = Settings(api_key_secret=SecretStr("a-real-secret"))
        with Store(url, settings=real) as store:
            _issue_a_key(store)
        with Store("sqlite://") as memory:
            _issue_a_key(memory)
    said = _warnings(caplog)
    assert len(said) == 1 and "FLOWSTORE_API_KEY_SECRET" in said[0]


def test_the_development_secret_in_memory_is_not_called_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="flowstore"), Store("sqlite://") as memory:
        _issue_a_key(memory)
    assert _warnings(caplog) == []


def test_the_async_store_says_the_same(caplog: pytest.LogCaptureFixture) -> None:
    from flowstore.aio import AsyncStore

    with caplog.at_level("WARNING", logger="flowstore"):
        AsyncStore()
    assert any("in-memory" in m for m in _warnings(caplog))
