"""flowstore behind PgBouncer in transaction pooling mode (tests/pgbouncer.py, Debian's
pgbouncer 1.18, which does not carry prepared statements across server connections): with
``prepared_statements=False`` units of work from many threads, the queue, statement timeouts,
change events, read-only units of work and the async face all work through a pool of two
server connections; with psycopg's default server-side preparing, two clients collide.

``make test-pgbouncer`` runs the whole PostgreSQL suite this way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from flowstore import FlowstoreError, Settings, StatementTimeoutError, Store
from flowstore.aio import AsyncStore
from flowstore.models import Deployment, JobStatus, Organization
from tests.backends import selected_backends
from tests.conftest import server_database
from tests.pgbouncer import PgBouncer, direct, require_pgbouncer
from tests.test_cli import HANDLER_MODULE, assert_ok, cli_env, run_cli
from tests.test_timeouts import SLOW

pytestmark = pytest.mark.skipif(
    "postgresql" not in selected_backends(), reason="PostgreSQL is not among the backends"
)

BEHIND_A_POOLER = Settings(prepared_statements=False, pool_size=4)
#: psycopg's server-side preparing, whatever FLOWSTORE_PREPARED_STATEMENTS says (``make
#: test-pgbouncer`` turns it off for the whole run)
PREPARING = Settings(prepared_statements=True)


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> URL:
    """A migrated throwaway database on the main server (its direct URL, also when the suite
    itself runs through a PgBouncer: these tests put one of their own in front of it)."""
    require_pgbouncer()
    made = direct(server_database(request, "postgresql", "bouncer").url)
    with Store(made) as store:
        store.upgrade()
    return made


@pytest.fixture(scope="module")
def url(database: URL) -> Iterator[str]:
    """That database through a PgBouncer of two server connections."""
    with PgBouncer(database, pool_size=2) as bouncer:
        yield bouncer.url(str(database.database)).render_as_string(hide_password=False)


def test_units_of_work_from_many_threads_share_two_server_connections(url: str) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with Store(url, settings=BEHIND_A_POOLER) as store:
                for n in range(25):  # each statement far past psycopg's threshold of 5 runs
                    with store.unit_of_work() as uow:
                        dep = uow.deployments.add(Deployment(name=f"w{worker}-{n}", version="1"))
                        uow.deployments.list(limit=5)
                    with store.unit_of_work(read_only=True) as uow:
                        assert uow.deployments.get(dep.id).name == f"w{worker}-{n}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store(url, settings=BEHIND_A_POOLER) as store, store.unit_of_work() as uow:
        assert uow.deployments.count() >= 100
        assert len(store.events.read(limit=1000)) >= 100  # the events' transaction-level lock


def test_the_queue_and_a_statement_timeout_work_through_the_pooler(url: str) -> None:
    with Store(url, settings=BEHIND_A_POOLER) as store:
        queue = store.queue("bouncer")
        ids = [queue.enqueue({"n": n}) for n in range(20)]
        done = 0
        while (job := queue.dequeue()) is not None:
            queue.acknowledge(job)
            done += 1
        assert done == len(ids)
        with pytest.raises(StatementTimeoutError), store.unit_of_work(timeout=0.3) as uow:
            uow.session.execute(SLOW)  # SET LOCAL: it ends with its transaction
        with store.unit_of_work() as uow:  # the next transaction has no limit left over
            assert uow.session.execute(text("SHOW statement_timeout")).scalar() == "0"


def test_the_async_face_works_through_the_pooler(url: str) -> None:
    async def main() -> None:
        async with AsyncStore(url, settings=BEHIND_A_POOLER) as store:
            for n in range(12):
                async with store.unit_of_work() as uow:
                    await uow.organizations.add(Organization(name=f"A{n}", slug=f"bouncer-{n}"))
                async with store.unit_of_work() as uow:
                    assert await uow.organizations.get_by_slug(f"bouncer-{n}") is not None

    asyncio.run(main())


def test_server_side_preparing_collides_behind_the_pooler(database: URL) -> None:
    """Why the setting exists: two clients' psycopg both name their first prepared statement
    ``_pg3_0``, on the one server connection the pooler gives them in turn."""
    with PgBouncer(database, pool_size=1) as single:
        through = single.url(str(database.database)).render_as_string(hide_password=False)
        with (
            Store(through, settings=PREPARING) as first,
            Store(through, settings=PREPARING) as second,
            pytest.raises(FlowstoreError, match="prepared statement"),
        ):
            for store in (first, second):
                for _ in range(7):
                    with store.unit_of_work() as uow:
                        uow.organizations.count()
        with (
            Store(through, settings=BEHIND_A_POOLER) as first,
            Store(through, settings=BEHIND_A_POOLER) as second,
        ):
            for store in (first, second):
                for _ in range(7):
                    with store.unit_of_work() as uow:
                        uow.organizations.count()


def test_a_worker_behind_the_pooler_takes_a_direct_listen_url_and_empties_its_queue(
    database: URL, url: str, tmp_path: Path
) -> None:
    with Store(url, settings=BEHIND_A_POOLER) as store:
        ids = [store.queue("mail").enqueue({"n": n}) for n in range(3)]
    (tmp_path / "demo_handlers.py").write_text(HANDLER_MODULE)
    listen_url = database.render_as_string(hide_password=False)
    result = run_cli(
        "worker", "--queue", "mail", "--handler", "demo_handlers:handle", "--until-empty",
        "--url", url, "--listen-url", listen_url,
        env=cli_env(FLOWSTORE_PREPARED_STATEMENTS="false"), cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    with Store(url, settings=BEHIND_A_POOLER) as store:
        assert {store.queue("mail").get(i).status for i in ids} == {JobStatus.DONE}
