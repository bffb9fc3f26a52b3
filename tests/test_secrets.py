"""Secrets stay secret: no database password, API key or server secret in an error, a repr,
a log line or SQLAlchemy's ``echo`` output.

Every test captures what flowstore and SQLAlchemy log (``echo`` on, every ``sqlalchemy``
logger at DEBUG, stdout too) while it connects, fails, migrates and handles API keys, then
scans all of it, with the full chained tracebacks of the errors, for the secrets.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import URL

from flowstore import Settings, Store
from flowstore.config import DEV_API_KEY_SECRET
from flowstore.errors import ConnectionFailedError, FlowstoreError, InvalidInputError, mask_secrets
from flowstore.models import Organization
from tests.backends import SERVER_BACKENDS

PASSWORD = "s3cr3t-pw"
HMAC_SECRET = "hmac-server-secret-never-shown"
CLOSED_PORT_URLS = (
    f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/x",
    f"postgresql://app:{PASSWORD}@127.0.0.1:1/x?sslmode=disable",
    f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/x",
    f"mysql://app:{PASSWORD}@127.0.0.1:1/x",
)


@pytest.fixture
def everything_logged(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[list[str]]:
    """Collects log records and stdout/stderr; the test appends error texts to it."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    caplog.set_level(logging.DEBUG, logger="alembic")
    texts: list[str] = []
    yield texts
    captured = capsys.readouterr()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    logged = [f"{record.getMessage()} {record.exc_text or ''}" for record in records]
    everything = "\n".join([*logged, captured.out, captured.err, *texts])
    for secret in (PASSWORD, HMAC_SECRET):
        assert secret not in everything


def _whole(error: BaseException) -> str:
    """The error as a log handler would print it: message, repr and the chained traceback."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def _connect_timeout_settings() -> Settings:
    return Settings(connect_timeout=2, api_key_secret=SecretStr(HMAC_SECRET), echo=True)


@pytest.mark.parametrize("url", CLOSED_PORT_URLS)
def test_a_failed_connection_never_shows_the_password(
    url: str, everything_logged: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(url, settings=_connect_timeout_settings(), echo_pool="debug")
    try:
        everything_logged += [repr(store), store.safe_url, repr(store.engine), str(store.url)]
        with pytest.raises(ConnectionFailedError) as by_ping:
            store.ping()
        with pytest.raises(ConnectionFailedError) as by_work, store.unit_of_work() as uow:
            uow.organizations.add(Organization(name="x", slug="x"))
        everything_logged += [_whole(by_ping.value), _whole(by_work.value)]
    finally:
        store.close()
    assert any(r.name.startswith("sqlalchemy") for r in caplog.records)  # the capture works


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:notaport/x",
        f"mysql+pymysql://u:{PASSWORD}@[::1/x",
        f"nosuchdialect://u:{PASSWORD}@h/x",
        f"postgresql+nosuchdriver://u:{PASSWORD}@h/x",
    ],
)
def test_a_malformed_url_never_shows_the_password(url: str, everything_logged: list[str]) -> None:
    with pytest.raises(InvalidInputError) as refused:
        Store(url)
    everything_logged.append(_whole(refused.value))


def test_settings_and_urls_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSTORE_DATABASE_URL", f"postgresql://app:{PASSWORD}@db.internal/prod")
    monkeypatch.setenv("FLOWSTORE_API_KEY_SECRET", HMAC_SECRET)
    settings = Settings()
    assert settings.api_key_secret.get_secret_value() == HMAC_SECRET  # it is read...
    shown = [
        repr(settings),
        str(settings),
        settings.safe_database_url,
        repr(settings.api_key_secret),
    ]
    shown.append(settings.model_dump_json(exclude={"database_url"}))
    for text in shown:  # ...and never shown
        assert PASSWORD not in text
        assert HMAC_SECRET not in text
    assert "app:***@db.internal" in settings.safe_database_url
    store = Store(settings=settings)
    assert PASSWORD not in repr(store) and PASSWORD not in store.safe_url
    store.close()


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        (f"postgresql://app:{PASSWORD}@h/db", "postgresql://app:***@h/db"),
        ("mysql+pymysql://root:p%40ss%3Aw%2Frd@h:3306/db", "mysql+pymysql://root:***@h:3306/db"),
        (f"host=h user=app password={PASSWORD} dbname=x", "host=h user=app password=*** dbname=x"),
        (f"PASSWORD='{PASSWORD} with space' next", "PASSWORD=*** next"),
        (f'pwd="{PASSWORD}"', "pwd=***"),
        ("postgresql://app@h/db", "postgresql://app@h/db"),
    ],
)
def test_mask_secrets(raw: str, masked: str) -> None:
    assert mask_secrets(raw) == masked


def test_working_with_a_password_url_logs_no_secret(
    backend: str,
    server_stores: dict[str, Store],
    everything_logged: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real server, a URL with a password, echo on: connect, migrate, write, fail, and keys."""
    if backend not in SERVER_BACKENDS:
        pytest.skip("SQLite URLs carry no password")
    suite = server_stores[backend]
    if backend == "postgresql":
        # trust authentication: the password is sent and ignored, so the connection succeeds
        url: URL = suite.url.set(password=PASSWORD)
    else:
        url = suite.url  # MariaDB root has no password: a wrong one is refused below
        wrong = Store(url.set(password=PASSWORD), settings=_connect_timeout_settings())
        with pytest.raises(ConnectionFailedError) as denied:
            wrong.ping()
        wrong.close()
        everything_logged.append(_whole(denied.value))
    store = Store(url, settings=_connect_timeout_settings(), echo_pool="debug")
    try:
        store.upgrade()  # already at head: Alembic still connects and logs
        with store.unit_of_work() as uow:
            org = uow.organizations.add(Organization(name="acme", slug=f"acme-{uuid.uuid4()}"))
            app, raw = uow.applications.create_with_api_key(org.id, "billing")
            rotated = uow.applications.rotate_api_key(app.id)
            assert uow.applications.get_by_api_key(rotated) is not None
            assert uow.applications.get_by_api_key(raw) is None
        with pytest.raises(FlowstoreError) as failed, store.unit_of_work() as uow:
            uow.organizations.add(Organization(name="dup", slug=org.slug))
        everything_logged += [_whole(failed.value), repr(store), repr(store.engine)]
    finally:
        store.close()
    logged = "\n".join([caplog.text, *everything_logged])
    assert "INSERT INTO applications" in logged  # echo really showed the statements
    assert raw.removeprefix("fs_") not in logged
    assert rotated.removeprefix("fs_") not in logged


def test_api_keys_stay_out_of_the_logs_on_every_backend(
    store: Store,
    everything_logged: list[str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store.engine.echo = "debug"
    keys: list[str] = []
    try:
        with store.unit_of_work() as uow:
            org = uow.organizations.add(Organization(name="acme", slug=f"acme-{uuid.uuid4()}"))
            app, raw = uow.applications.create_with_api_key(org.id, "billing")
            keys += [raw, uow.applications.rotate_api_key(app.id)]
            for key in keys:
                uow.applications.get_by_api_key(key)
            everything_logged += [repr(app), repr(uow.applications.get(app.id))]
    finally:
        store.engine.echo = False
    logged = caplog.text + capsys.readouterr().out
    assert "INSERT INTO applications" in logged  # echo really showed the statements
    for key in keys:
        assert key.removeprefix("fs_") not in logged
    assert DEV_API_KEY_SECRET not in logged
    everything_logged.append(logged)
