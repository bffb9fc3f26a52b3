"""The test kit: the installed pytest plugin on a user's project, isolation between tests (on
SQLite and on the servers through ``--flowstore-url``), and the factories.

These tests use the kit themselves (the ``uow`` fixture and the factories); the user projects
run in temporary folders through ``pytester``, with no conftest, only the installed plugin.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from flowstore import AlreadyExistsError, InvalidInputError, Store
from flowstore.models import (
    FLOWSTORE_TABLES,
    Base,
    Deployment,
    InferenceRequest,
    Job,
    JobSchedule,
    JobStatus,
    Machine,
    Organization,
    Policy,
    PolicyType,
    Request,
    Template,
    User,
)
from flowstore.schema import head_revision
from flowstore.testing import isolated_unit_of_work, migrated_store
from flowstore.testing.factories import (
    ApplicationFactory,
    AuditLogFactory,
    DeploymentFactory,
    DeploymentNodeFactory,
    InferenceRequestFactory,
    JobFactory,
    JobScheduleFactory,
    MachineFactory,
    OrganizationFactory,
    PolicyFactory,
    RequestFactory,
    TemplateFactory,
    UserFactory,
    using_session,
)
from flowstore.testing.plugin import URL_ENV
from flowstore.uow import UnitOfWork
from tests.conftest import BACKENDS, server_database

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"

USER_PROJECT = """
from sqlalchemy import text

from flowstore.models import Deployment, Machine, Organization, Request, Template
from flowstore.schema import head_revision
from flowstore.testing.factories import MachineFactory, OrganizationFactory


def test_a_writes_and_commits(flowstore_store, uow):
    uow.deployments.add(Deployment(name="api", version="1.0.0"))
    uow.commit()
    MachineFactory()
    OrganizationFactory(slug="acme")
    uow.commit()
    with flowstore_store.unit_of_work() as other:  # service code that takes the store
        other.organizations.add(Organization(name="Globex", slug="globex"))
    assert uow.organizations.count() == 2


def test_b_sees_nothing(uow):
    for model in (Deployment, Machine, Request, Template, Organization):
        assert uow.session.query(model).count() == 0, model
    OrganizationFactory(slug="acme")  # the slug is free again


def test_c_schema_is_at_head(flowstore_store):
    assert flowstore_store.current_revision() == head_revision()
    with flowstore_store.unit_of_work() as uow:  # no `uow` fixture: nothing to roll back
        assert uow.session.execute(text("SELECT count(*) FROM machines")).scalar_one() == 0
"""


# Hypothesis's plugin costs about a second per inner run and plays no part in these projects.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def _counts(uow: UnitOfWork, *models: type[Base]) -> list[int]:
    return [uow.session.scalar(select(func.count()).select_from(m)) or 0 for m in models]


# -- the installed plugin on a user's project ----------------------------------------------


def test_user_project_gets_isolated_fixtures_from_the_installed_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=USER_PROJECT)
    assert not list(pytester.path.glob("conftest.py"))
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=3)

    without_plugin = pytester.runpytest(*QUIET, "-p", "no:flowstore")
    without_plugin.assert_outcomes(errors=3)
    without_plugin.stdout.fnmatch_lines(["*fixture 'uow' not found*"])


def test_the_docs_examples_run(pytester: pytest.Pytester) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) >= 2
    pytester.makepyfile(**{f"test_docs_{i}": block for i, block in enumerate(blocks)})
    result = pytester.runpytest(*QUIET)
    tests_in_docs = sum(block.count("\ndef test_") for block in blocks)
    assert tests_in_docs >= 4
    result.assert_outcomes(passed=tests_in_docs)


@pytest.mark.parametrize("backend", [b for b in ("postgresql", "mysql") if b in BACKENDS])
def test_flowstore_url_runs_the_fixtures_on_a_server(
    pytester: pytest.Pytester, request: pytest.FixtureRequest, backend: str
) -> None:
    database = server_database(request, backend, "kit")
    url = database.url.render_as_string(hide_password=False)
    pytester.makepyfile(test_user=USER_PROJECT)
    # In a subprocess: pytester's in-process runs drop the modules they imported afterwards,
    # and psycopg's compiled core does not survive being imported twice in one process.
    result = pytester.runpytest_subprocess(*QUIET, f"--flowstore-url={url}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"flowstore: fixtures use {backend}*"])
    with Store(url) as store:  # migrated once, and nothing left behind
        assert store.current_revision() == head_revision()
        with store.unit_of_work() as uow:
            assert _counts(uow, Deployment, Machine, Request, Template, Organization) == [0] * 5


def test_the_environment_variable_chooses_the_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'kit.sqlite3'}"
    monkeypatch.setenv(URL_ENV, url)
    pytester.makepyfile(test_user=USER_PROJECT)
    pytester.runpytest(*QUIET).assert_outcomes(passed=3)
    with Store(url) as store:
        assert store.current_revision() == head_revision()
        with store.unit_of_work() as uow:
            assert _counts(uow, Deployment, Machine, Organization) == [0, 0, 0]


@pytest.mark.parametrize(
    ("url", "header", "error"),
    [
        (
            "mysql://kit:s3cret@127.0.0.1:1/x",
            "flowstore: fixtures use mysql+pymysql://kit:***@127.0.0.1:1/x",
            "*cannot prepare the test database: ConnectionFailedError(*",
        ),
        (
            "nonsense://kit:s3cret@",
            "flowstore: fixtures use nonsense://kit:***@",
            "*cannot prepare the test database: InvalidInputError(*",
        ),
    ],
)
def test_a_bad_database_is_a_clear_error_without_the_password(
    pytester: pytest.Pytester, url: str, header: str, error: str
) -> None:
    pytester.makepyfile(test_user="def test_x(uow):\n    pass\n")
    result = pytester.runpytest(*QUIET, f"--flowstore-url={url}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([header, error])
    assert "s3cret" not in result.stdout.str()


# -- isolation, driven directly --------------------------------------------------------------


def test_commits_inside_an_isolated_unit_of_work_are_rolled_back() -> None:
    with migrated_store() as store:
        kw_before = dict(store.session_factory.kw)
        with isolated_unit_of_work(store) as uow:
            uow.organizations.add(Organization(name="Acme", slug="acme"))
            uow.commit()
            MachineFactory()
            with store.unit_of_work() as other:
                other.organizations.add(Organization(name="Globex", slug="globex"))
            assert _counts(uow, Organization, Machine) == [2, 1]
        assert store.session_factory.kw == kw_before
        with store.unit_of_work() as uow:
            assert _counts(uow, Organization, Machine, Request, Template) == [0, 0, 0, 0]
        with isolated_unit_of_work(store) as uow:
            OrganizationFactory(slug="acme")  # free again


def test_rollback_and_savepoints_work_inside_the_test(uow: UnitOfWork) -> None:
    kept = OrganizationFactory()
    uow.commit()
    OrganizationFactory()
    uow.rollback()
    assert [o.id for o in uow.organizations.list()] == [kept.id]
    with pytest.raises(AlreadyExistsError), uow.savepoint():
        OrganizationFactory(slug="inner")
        uow.organizations.add(Organization(name="Dup", slug=kept.slug))
    assert uow.organizations.count() == 1


def test_a_second_connection_is_refused_and_the_test_transaction_survives() -> None:
    with migrated_store() as store:
        with isolated_unit_of_work(store) as uow:
            OrganizationFactory()
            uow.commit()
            with pytest.raises(InvalidInputError, match="already in use"):
                store.current_revision()
            assert _counts(uow, Organization) == [1]
        with store.unit_of_work() as uow:
            assert _counts(uow, Organization) == [0]


def test_another_thread_writes_into_the_test_transaction(
    flowstore_store: Store, uow: UnitOfWork
) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with flowstore_store.unit_of_work() as other:
                other.organizations.add(Organization(name="Thread", slug="thread"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []
    OrganizationFactory()
    uow.commit()
    assert _counts(uow, Organization) == [2]


def test_an_isolated_unit_of_work_does_not_nest() -> None:
    with migrated_store() as store, isolated_unit_of_work(store):
        nested = isolated_unit_of_work(store)
        with pytest.raises(InvalidInputError, match="already inside"):
            nested.__enter__()


def test_the_session_store_is_migrated_by_the_revisions(flowstore_store: Store) -> None:
    assert flowstore_store.current_revision() == head_revision()
    with flowstore_store.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    assert tables == set(FLOWSTORE_TABLES) | {"alembic_version"}


# -- factories -------------------------------------------------------------------------------


def test_a_machine_factory_makes_its_request_and_template(uow: UnitOfWork) -> None:
    machine = MachineFactory.create()
    assert _counts(uow, Machine, Request, Template) == [1, 1, 1]
    request = uow.requests.get(machine.request_id)
    assert uow.templates.get(request.template_id).provider_type in {"aws", "gcp", "azure"}
    assert re.fullmatch(r"i-[0-9a-f]{17}", machine.instance_id)
    assert machine.lock_version == 1


def test_passing_a_parent_or_its_id_reuses_it(uow: UnitOfWork) -> None:
    request = RequestFactory()
    MachineFactory(request=request)
    MachineFactory(request_id=request.id)
    MachineFactory(request__template_id=request.template_id)
    assert _counts(uow, Machine, Request, Template) == [3, 2, 1]
    org = OrganizationFactory()
    UserFactory(org=org)
    UserFactory(org_id=org.id)
    ApplicationFactory(org_id=org.id)
    AuditLogFactory(org_id=org.id)
    assert _counts(uow, Organization, User) == [1, 2]


def test_unique_values_do_not_collide(uow: UnitOfWork) -> None:
    org = OrganizationFactory()
    users = UserFactory.create_batch(25, org=org)
    orgs = OrganizationFactory.create_batch(25, name="Same Name Inc")
    machines = MachineFactory.create_batch(25, request=RequestFactory())
    apps = ApplicationFactory.create_batch(25, org=org)
    for values in (
        [u.email for u in users],
        [u.external_id for u in users],
        [o.slug for o in orgs],
        [m.instance_id for m in machines],
        [a.api_key_hash for a in apps],
    ):
        assert len(set(values)) == 25
    assert all(re.fullmatch(r"same-name-inc-\d+", o.slug) for o in orgs)
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com", u.email) for u in users)


def test_values_are_realistic(uow: UnitOfWork) -> None:
    deployment = DeploymentFactory()
    assert re.fullmatch(r"\d+\.\d+\.\d+", deployment.version)
    assert deployment.config["image"].endswith(f"/{deployment.name}:{deployment.version}")
    node = DeploymentNodeFactory(deployment=deployment)
    assert uow.deployments.get_node_id(deployment.id) == node.node_id
    template = TemplateFactory(provider_type="aws")
    assert template.attributes["region"] in {"us-east-1", "eu-west-1"}
    assert template.name.startswith("aws-")
    call = InferenceRequestFactory(prompt_tokens=1000, completion_tokens=100)
    assert call.cost == Decimal("0.004500")
    budget = PolicyFactory(policy_type=PolicyType.BUDGET)
    assert "monthly_limit_usd" in budget.config


def test_an_application_authenticates_with_its_raw_key(uow: UnitOfWork) -> None:
    app = ApplicationFactory.create(raw_api_key="fs_test_key")
    other = ApplicationFactory.create()
    assert app.api_key_hash not in (None, "fs_test_key")
    assert uow.applications.get_by_api_key("fs_test_key") is app
    assert uow.applications.get_by_api_key("fs_other") is None
    assert other.api_key_hash != app.api_key_hash


def test_policies_take_their_organization_from_their_parent(uow: UnitOfWork) -> None:
    app = ApplicationFactory()
    user = UserFactory(org_id=app.org_id)
    org_level = PolicyFactory(org_id=app.org_id, priority=5)
    app_level = PolicyFactory(application=app)
    user_level = PolicyFactory(user=user)
    by_id = PolicyFactory(application_id=app.id, priority=1)
    assert {p.org_id for p in (app_level, user_level, by_id)} == {app.org_id}
    assert _counts(uow, Organization, Policy) == [1, 4]
    applicable = uow.policies.get_applicable_policies(app.org_id, app.id, user.id)
    assert [p.id for p in applicable] == [user_level.id, by_id.id, app_level.id, org_level.id]


def test_inference_requests_add_up_in_the_metrics(uow: UnitOfWork) -> None:
    app = ApplicationFactory()
    calls = InferenceRequestFactory.create_batch(3, application=app)
    InferenceRequestFactory()  # another organization's
    start = datetime.now(UTC) - timedelta(minutes=1)
    metrics = uow.inference_requests.metrics(app.org_id, start, start + timedelta(minutes=2))
    assert metrics.total_requests == 3
    assert metrics.total_tokens == sum(c.prompt_tokens + c.completion_tokens for c in calls)
    assert metrics.total_cost == sum(c.cost for c in calls)
    assert _counts(uow, InferenceRequest) == [4]


def test_jobs_are_claimable_and_finished_ones_valid(
    flowstore_store: Store, uow: UnitOfWork
) -> None:
    job = JobFactory(queue="emails", priority=5)
    JobFactory(queue="emails")
    done = JobFactory(status=JobStatus.DONE)
    dead = JobFactory(status=JobStatus.DEAD, max_attempts=3)
    running = JobFactory(status=JobStatus.RUNNING)
    assert done.finished_at is not None and dead.attempts == 3 and dead.last_error
    assert running.claim_token is not None and running.lease_expires_at is not None
    queue = flowstore_store.queue("emails")  # its own transactions join the test's
    claimed = queue.dequeue()
    assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
    queue.acknowledge(claimed)
    assert queue.get(job.id).status is JobStatus.DONE
    assert _counts(uow, Job) == [5]


def test_a_queue_made_before_the_test_joins_its_transaction(store: Store) -> None:
    queue = store.queue("emails")  # as an app makes it at start-up, before any test
    queue.enqueue({"kept": True})
    with isolated_unit_of_work(store) as uow, using_session(uow.session):
        job = queue.enqueue({"task": "send_invoice_email"})
        JobScheduleFactory(queue="emails")
        assert queue.enqueue_scheduled() == 1  # the factory's periodic job is due at once
        claimed = queue.dequeue()
        assert claimed is not None and claimed.payload == {"kept": True}
        queue.acknowledge(claimed)
        assert _counts(uow, Job, JobSchedule) == [3, 1]
        assert queue.get(job).status is JobStatus.QUEUED
    with store.unit_of_work() as uow:  # the test's writes, the acknowledgement too, are gone
        assert [j.payload for j in uow.session.scalars(select(Job))] == [{"kept": True}]
        assert uow.session.scalars(select(Job)).one().status is JobStatus.QUEUED
        assert _counts(uow, JobSchedule) == [0]


def test_a_duplicate_is_already_exists_and_the_session_survives(uow: UnitOfWork) -> None:
    first = OrganizationFactory()
    with pytest.raises(AlreadyExistsError):
        OrganizationFactory(slug=first.slug)
    MachineFactory()
    with pytest.raises(AlreadyExistsError):
        MachineFactory(instance_id=uow.machines.list()[0].instance_id)
    uow.commit()
    assert _counts(uow, Organization, Machine) == [1, 1]


def test_factories_without_a_session_say_how_to_get_one() -> None:
    with pytest.raises(InvalidInputError, match="uow"):
        OrganizationFactory()


def test_build_needs_no_session() -> None:
    machine = MachineFactory.build()
    policy = PolicyFactory.build()
    assert machine.id is not None and machine.request_id is not None
    assert policy.org_id is not None


def test_factories_outside_pytest_with_an_explicit_session() -> None:
    with Store("sqlite://") as store:
        with store.unit_of_work() as uow, using_session(uow.session):
            machine = MachineFactory()
        with store.unit_of_work() as uow:
            assert uow.machines.get(machine.id).instance_id == machine.instance_id
    with pytest.raises(InvalidInputError):
        OrganizationFactory()


def test_isolation_part_one_commits(uow: UnitOfWork) -> None:
    OrganizationFactory(slug="kit-isolation")
    uow.commit()
    assert uow.organizations.get_by_slug("kit-isolation") is not None


def test_isolation_part_two_sees_nothing(uow: UnitOfWork) -> None:
    assert uow.organizations.get_by_slug("kit-isolation") is None
    assert _counts(uow, Organization) == [0]


def test_every_model_has_a_factory_and_the_docs_list_it() -> None:
    from flowstore.testing import factories

    text = DOCS.read_text()
    models = {
        mapper.class_
        for mapper in Base.registry.mappers
        if getattr(mapper.local_table, "name", None) in FLOWSTORE_TABLES
    }
    assert len(models) >= 12
    for model in models:
        factory_class = getattr(factories, f"{model.__name__}Factory")
        assert factory_class._meta.model is model
        assert f"`{model.__name__}Factory`" in text
