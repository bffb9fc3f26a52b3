"""The async face of a service's unit of work: built from the same declaration, awaited, typed
(generated classes that mypy checks), and unable to drift from the sync classes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowstore import InvalidInputError, Store, TenantScopeError
from flowstore.aio import AsyncStore, AsyncUnitOfWork
from flowstore.aio.codegen import generate_flowstore, generate_module
from flowstore.models import Base, Organization
from flowstore.uow import UnitOfWork
from tests.service_app import SERVICE_TABLES, AcmeUnitOfWork, Note, NoteRepository, Tag
from tests.test_aio import aio_url, arun, migrated_sqlite_file  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "flowstore" / "aio" / "generated"


def test_flowstores_generated_faces_are_up_to_date() -> None:
    """Regenerating gives the committed files: the sync and async faces cannot drift (run
    ``python -m flowstore.aio.codegen --flowstore`` after changing a repository's public
    methods)."""
    expected = generate_flowstore()
    committed = {path.name: path.read_text(encoding="utf-8") for path in GENERATED.glob("*.py")}
    assert committed == expected


def service_face(tmp_path: Path) -> ModuleType:
    """The typed async face of tests.service_app's unit of work, written and imported."""
    text = generate_module(
        AcmeUnitOfWork,
        doc="Typed async face of tests.service_app:AcmeUnitOfWork.",
        args=" tests.service_app:AcmeUnitOfWork",
        skip=list(UnitOfWork.repositories.values()),
    )
    path = tmp_path / "acme_aio.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("acme_aio", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["acme_aio"] = module
    spec.loader.exec_module(module)
    return module


def service_tables(url: str) -> str:
    """``url`` with the service's tables created (an in-memory database gets every table)."""
    if url != "sqlite://":
        with Store(url) as store, store.engine.begin() as conn:
            tables = [Base.metadata.tables[name] for name in SERVICE_TABLES]
            Base.metadata.create_all(conn, tables=tables, checkfirst=True)
    return url


def test_the_async_face_is_built_from_the_sync_declaration(aio_url: str) -> None:  # noqa: F811
    async def body(store: AsyncStore[Any]) -> None:
        async with store.unit_of_work() as uow:
            assert type(uow).sync_class is AcmeUnitOfWork
            owner = (await uow.organizations.add(Organization(name="A", slug="a"))).id
            note = await uow.notes.add(Note(org_id=owner, title="hello"))
            await uow.tags.add_many([Tag(name="b", label="B"), Tag(name="a", label="A")])
        async with store.unit_of_work() as uow:
            found = await uow.notes.get(note.id)
            assert found.title == "hello"
            assert [t.name for t in await uow.tags.list()] == ["a", "b"]
            assert await uow.notes.list_and_count() == ([found], 1)
        async with store.unit_of_work(org_id=owner) as uow:
            with pytest.raises(TenantScopeError):
                await uow.tags.count()
            assert await uow.notes.count() == 1

    arun(service_tables(aio_url), body, unit_of_work_class=AcmeUnitOfWork)


def test_the_generated_service_face_is_used_and_registered(
    tmp_path: Path,
    aio_url: str,  # noqa: F811
) -> None:
    face = service_face(tmp_path)
    typed = face.AsyncAcmeUnitOfWork
    assert AsyncUnitOfWork.for_sync_class(AcmeUnitOfWork) is typed
    assert face.AsyncNoteRepository.wraps is NoteRepository

    async def body(store: AsyncStore[Any]) -> None:
        async with store.unit_of_work() as unit:
            assert type(unit) is typed  # the generated class
            uow: Any = unit
            assert type(uow.notes) is face.AsyncNoteRepository
            owner = (await uow.organizations.add(Organization(name="A", slug="a"))).id
            project = await uow.projects.by_slug(owner, "missing")  # a service's own method
            assert project is None

    arun(service_tables(aio_url), body, unit_of_work_class=typed)


def test_a_class_that_is_not_a_unit_of_work_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="UnitOfWork subclass"):
        AsyncStore("sqlite://", unit_of_work_class=dict)


MYPY_PROBE = """
    from flowstore.aio import AsyncStore

    async def probe(store: AsyncStore) -> None:
        async with store.unit_of_work() as uow:
            deployment = await uow.deployments.get("x")
            reveal_type(deployment)
            await uow.deployments.gett("x")
            await uow.deployments.get("x", strict=True)
            await uow.deployments.add("not a deployment")
"""


def test_mypy_checks_every_awaited_repository_call(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(MYPY_PROBE), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(probe)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    output = result.stdout
    assert 'Revealed type is "flowstore.models.deployment.Deployment"' in output, output
    assert '"AsyncDeploymentRepository" has no attribute "gett"' in output, output
    assert 'Unexpected keyword argument "strict"' in output, output
    assert 'incompatible type "str"; expected "Deployment"' in output, output
    assert "Found 3 errors in 1 file" in output, output
