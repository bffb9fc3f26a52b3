"""API keys: random (``secrets``), stored only as HMAC-SHA-256 under the server's secret,
compared in constant time, and rotated so that the old key stops working at once.

The raw key must never reach the database: not as a column value, not as a bound parameter
(so not in an ``echo`` log either), and not in a repr.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, select, text

from flowstore import Settings, Store
from flowstore.errors import InvalidInputError, NotFoundError
from flowstore.models import FLOWSTORE_TABLES, Base, Organization
from flowstore.repositories import RepositoryContext
from flowstore.repositories.application import API_KEY_PREFIX, generate_api_key, hash_api_key
from flowstore.uow import UnitOfWork

KEY_PATTERN = re.compile(rf"^{API_KEY_PREFIX}[A-Za-z0-9_-]{{43}}$")


def _org(store: Store) -> uuid.UUID:
    with store.unit_of_work() as uow:
        return uow.organizations.add(Organization(name="acme", slug=f"acme-{uuid.uuid4()}")).id


def _secret(store: Store) -> str:
    return store.settings.api_key_secret.get_secret_value()


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every statement and its parameters, as sent to the driver while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append(f"{statement} {parameters!r}")

    event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    event.remove(store.engine, "before_cursor_execute", record)


def _database_text(store: Store) -> str:
    """Every value of every row of every table, as one string."""
    with store.engine.connect() as conn:
        rows = [
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            if table.name in FLOWSTORE_TABLES
            for row in conn.execute(select(table))
        ]
    return "\n".join(rows)


def test_generated_keys_are_random_and_well_formed(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {generate_api_key() for _ in range(500)}
    assert len(keys) == 500
    assert all(KEY_PATTERN.match(key) for key in keys)
    drawn: list[int] = []
    real = secrets.token_urlsafe

    def spy(nbytes: int) -> str:
        drawn.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(secrets, "token_urlsafe", spy)  # the module generate_api_key uses
    generate_api_key()
    assert drawn == [32]  # 256 bits from the OS's CSPRNG


def test_the_key_is_stored_only_as_its_hmac(store: Store, statements: list[str]) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        app, raw = uow.applications.create_with_api_key(org, "billing")
    expected = hmac.new(_secret(store).encode(), raw.encode(), hashlib.sha256).hexdigest()
    assert app.api_key_hash == expected == hash_api_key(raw, _secret(store))
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw).id == app.id  # type: ignore[union-attr]
        assert uow.applications.list(api_key_hash=expected)[0].id == app.id
    secret_part = raw.removeprefix(API_KEY_PREFIX)
    dump = _database_text(store)
    assert expected in dump
    assert secret_part not in dump
    assert secret_part[:16] not in dump
    sent = "\n".join(statements)
    assert expected in sent  # the lookup goes by hash...
    assert secret_part not in sent  # ...the raw key is never a parameter
    assert secret_part not in repr(app) and secret_part not in str(app.__dict__)


def test_wrong_keys_find_nothing(store: Store) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        _, raw = uow.applications.create_with_api_key(org, "billing")
    flipped = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    with store.unit_of_work() as uow:
        repo = uow.applications
        wrong_keys = (flipped, raw + "x", raw[:-1], raw.upper(), " " + raw, "", "fs_", "x" * 10_000)
        for wrong in wrong_keys:
            assert repo.get_by_api_key(wrong) is None
        for odd in ("\x00" + raw, raw + "\ud800", "'; DROP TABLE applications; --", "%"):
            assert repo.get_by_api_key(odd) is None
        for not_text in (None, 42, raw.encode(), [raw]):
            with pytest.raises(InvalidInputError):
                repo.get_by_api_key(not_text)  # type: ignore[arg-type]
        assert repo.get_by_api_key(raw) is not None


def test_rotation_invalidates_the_old_key(store: Store) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        app, first = uow.applications.create_with_api_key(org, "billing")
    with store.unit_of_work() as uow:
        second = uow.applications.rotate_api_key(app.id)
    with store.unit_of_work() as uow:
        third = uow.applications.rotate_api_key(str(app.id))
    assert len({first, second, third}) == 3
    assert all(KEY_PATTERN.match(key) for key in (second, third))
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(first) is None
        assert uow.applications.get_by_api_key(second) is None
        found = uow.applications.get_by_api_key(third)
        assert found is not None and found.id == app.id
        assert found.api_key_hash == hash_api_key(third, _secret(store))
        with pytest.raises(NotFoundError):
            uow.applications.rotate_api_key(uuid.uuid4())


def test_rotation_rolled_back_keeps_the_old_key(store: Store) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        app, raw = uow.applications.create_with_api_key(org, "billing")
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        uow.applications.rotate_api_key(app.id)
        raise RuntimeError("the caller failed before handing out the new key")
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is not None


def test_another_server_secret_does_not_match(store: Store) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        app, raw = uow.applications.create_with_api_key(org, "billing")
    other = Settings(api_key_secret=SecretStr("a-different-server-secret"))
    with UnitOfWork(store.session_factory, RepositoryContext(settings=other)) as uow:
        assert uow.applications.get_by_api_key(raw) is None
        assert hash_api_key(raw, "a-different-server-secret") != app.api_key_hash
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is not None


def test_an_empty_server_secret_is_refused(store: Store) -> None:
    org = _org(store)
    empty = Settings(api_key_secret=SecretStr(""))
    with UnitOfWork(store.session_factory, RepositoryContext(settings=empty)) as uow:
        with pytest.raises(InvalidInputError, match="api_key_secret"):
            uow.applications.create_with_api_key(org, "billing")
        with pytest.raises(InvalidInputError, match="api_key_secret"):
            uow.applications.get_by_api_key(generate_api_key())


def test_lookup_compares_in_constant_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    org = _org(store)
    with store.unit_of_work() as uow:
        _, raw = uow.applications.create_with_api_key(org, "billing")
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the function get_by_api_key calls
    with store.unit_of_work() as uow:
        assert uow.applications.get_by_api_key(raw) is not None
    assert compared and all(len(a) == len(b) == 64 for a, b in compared)


def test_the_raw_key_is_not_logged_even_with_echo(
    store: Store, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    loud = Store(store.url, echo="debug") if not store.is_memory else None
    target = loud or store
    if loud is None:
        store.engine.echo = "debug"
    try:
        with caplog.at_level(logging.DEBUG):
            org = _org(target)
            with target.unit_of_work() as uow:
                app, raw = uow.applications.create_with_api_key(org, "billing")
                rotated = uow.applications.rotate_api_key(app.id)
                assert uow.applications.get_by_api_key(rotated) is not None
                assert uow.applications.get_by_api_key(raw) is None
                uow.session.execute(text("SELECT 1"))
    finally:
        if loud is not None:
            loud.close()
        else:
            store.engine.echo = False
    logged = caplog.text + capsys.readouterr().out
    assert "INSERT INTO applications" in logged  # echo was really on
    for key in (raw, rotated):
        assert key.removeprefix(API_KEY_PREFIX) not in logged
    assert hash_api_key(rotated, _secret(target)) in logged  # the hash is a parameter, and fine
    assert _secret(target) not in logged


def test_settings_never_show_the_server_secret() -> None:
    settings = Settings(api_key_secret=SecretStr("top-secret-hmac-key"))
    shown_forms = (repr(settings), str(settings), repr(settings.api_key_secret))
    for shown in (*shown_forms, settings.model_dump_json()):
        assert "top-secret-hmac-key" not in shown
    assert set(string.hexdigits) >= set(hash_api_key("k", "top-secret-hmac-key"))
