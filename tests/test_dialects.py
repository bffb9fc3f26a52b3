"""Dialect behaviour the generic contract tests do not reach, checked on every backend:
timestamps, JSON attribute matching, exact money, unique keys, cascades, MySQL index limits,
and stable ordering when creation times tie.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Boolean, Integer, String, Uuid, text
from sqlalchemy.sql.type_api import TypeEngine

from flowstore import AlreadyExistsError, InvalidInputError, Store, where
from flowstore.models import (
    Base,
    Deployment,
    DeploymentStatus,
    InferenceRequest,
    Machine,
    MachineStatus,
    Organization,
    Policy,
    PolicyType,
    Request,
    RequestStatus,
    Template,
)
from flowstore.models.base import UTCDateTime
from flowstore.schema import include_object_for
from tests import builders

# -- timestamps ---------------------------------------------------------------------------------

EXACT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2), "CEST")


def _saved_template(store: Store, **values: Any) -> Template:
    with store.unit_of_work() as uow:
        saved = uow.templates.add(
            Template(**{"name": "t", "provider_type": "aws", "attributes": {}, **values})
        )
    with store.unit_of_work() as uow:
        return uow.templates.get(saved.id)


def test_utc_timestamps_keep_their_microseconds(store: Store) -> None:
    loaded = _saved_template(store, created_at=EXACT, updated_at=EXACT)
    assert loaded.created_at == EXACT
    assert loaded.created_at.microsecond == 123456
    assert loaded.created_at.utcoffset() == timedelta(0)


def test_an_aware_non_utc_timestamp_is_stored_as_the_same_instant_in_utc(store: Store) -> None:
    local = datetime(2026, 3, 4, 7, 6, 7, 654321, tzinfo=PLUS_TWO)
    loaded = _saved_template(store, created_at=local, updated_at=local)
    assert loaded.created_at == local  # the same instant...
    assert loaded.created_at.utcoffset() == timedelta(0)  # ...expressed in UTC
    assert (loaded.created_at.hour, loaded.created_at.microsecond) == (5, 654321)
    with store.engine.connect() as conn:  # what the database holds is UTC, too
        raw = conn.execute(text("SELECT created_at FROM templates")).scalar_one()
    if isinstance(raw, str):
        raw = datetime.fromisoformat(raw)
    if raw.tzinfo is None:
        raw = raw.replace(tzinfo=UTC)
    assert raw == local


def test_extreme_timestamps_round_trip(store: Store) -> None:
    for moment in (
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),  # past the 32-bit epoch limit
        datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        assert _saved_template(store, created_at=moment, updated_at=moment).created_at == moment
        with store.unit_of_work() as uow:
            uow.session.execute(text("DELETE FROM templates"))


def test_a_naive_timestamp_is_refused(store: Store) -> None:
    with store.unit_of_work() as uow, pytest.raises(InvalidInputError):
        uow.templates.add(
            Template(name="t", provider_type="aws", attributes={}, created_at=datetime(2026, 1, 1))
        )
    saved = _saved_template(store)
    with store.unit_of_work() as uow:
        template = uow.templates.get(saved.id)
        template.updated_at = datetime(2026, 1, 1)
        with pytest.raises(InvalidInputError):
            uow.templates.update(template)
        uow.rollback()
    with store.unit_of_work() as uow:
        assert uow.templates.get(saved.id).updated_at == saved.updated_at
        with pytest.raises(InvalidInputError):
            uow.templates.list(where("created_at", "<", datetime(2026, 1, 1)))


def test_time_comparisons_use_the_instant_not_the_wall_clock(store: Store) -> None:
    _saved_template(store, name="early", created_at=EXACT, updated_at=EXACT)
    later = EXACT + timedelta(microseconds=1)
    _saved_template(store, name="late", created_at=later, updated_at=later)
    same_instant_elsewhere = EXACT.astimezone(PLUS_TWO)
    with store.unit_of_work() as uow:
        after = uow.templates.list(where("created_at", ">", same_instant_elsewhere))
        assert [t.name for t in after] == ["late"]
        at = uow.templates.list(where("created_at", "==", same_instant_elsewhere))
        assert [t.name for t in at] == ["early"]
        newest_first = uow.templates.list(order_by="-created_at")
        assert [t.name for t in newest_first] == ["late", "early"]


def test_the_session_time_zone_does_not_shift_timestamps(store: Store) -> None:
    """Whatever zone a server session is set to, values read back are the stored instant."""
    saved = _saved_template(store, created_at=EXACT, updated_at=EXACT)
    zone_sql = {
        "postgresql": "SET LOCAL TIME ZONE 'Asia/Kolkata'",
        "mysql": "SET time_zone = '+05:30'",
        "mariadb": "SET time_zone = '+05:30'",
    }.get(store.dialect)
    if zone_sql is None:
        pytest.skip("SQLite has no session time zone")
    with store.unit_of_work() as uow:
        uow.session.execute(text(zone_sql))
        try:
            loaded = uow.templates.get(saved.id)
            assert loaded.created_at == EXACT
            assert loaded.created_at.utcoffset() == timedelta(0)
        finally:
            if store.dialect != "postgresql":  # a session setting: the connection is pooled
                uow.session.execute(text("SET time_zone = '+00:00'"))


def test_mysql_sessions_run_in_utc(store: Store) -> None:
    if store.dialect not in {"mysql", "mariadb"}:
        pytest.skip("only MySQL/MariaDB have a session time_zone to pin")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT @@session.time_zone")).scalar_one() == "+00:00"


# -- JSON attribute matching --------------------------------------------------------------------

DOC_A: dict[str, Any] = {
    "s": "x",
    "i": 1,
    "f": 1.5,
    "t": True,
    "fl": False,
    "n": None,
    "zero": 0,
    "es": "",
    "big": 9007199254740993,
    "nested": {"k": {"deep": "v"}, "other": 1},
    "list": [1, "two", {"three": 3}],
    "it's": "quote",
    'say "hi"': "dq",
    "a.b": "dot",
    "back\\slash": "bs",
    "ключ": "значение",
    "emoji 🚀": "🚀",
    "pct": "5_%",
    "sql": "'; DROP TABLE templates; --",
    "empty": {},
}
DOC_B: dict[str, Any] = {
    "s": "X",
    "i": True,
    "t": 1,
    "f": 1.50,
    "big": 9007199254740992,
    "nested": {"k": {"deep": "w"}, "other": True},
    "list": [1],
    "a": {"b": "dot-nested"},
    "pct": "50%",
}
DOC_C: dict[str, Any] = {}

JSON_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({}, {"a", "b", "c"}),
    ({"s": "x"}, {"a"}),
    ({"s": "X"}, {"b"}),
    ({"s": 1}, set()),
    ({"i": 1}, {"a"}),
    ({"i": True}, {"b"}),
    ({"i": "1"}, set()),
    ({"i": 1.0}, {"a"}),
    ({"t": True}, {"a"}),
    ({"t": 1}, {"b"}),
    ({"fl": False}, {"a"}),
    ({"fl": 0}, set()),
    ({"zero": 0}, {"a"}),
    ({"zero": False}, set()),
    ({"f": 1.5}, {"a", "b"}),
    ({"n": None}, {"a"}),
    ({"missing": None}, set()),
    ({"es": ""}, {"a"}),
    ({"big": 9007199254740993}, {"a"}),
    ({"big": 9007199254740992}, {"b"}),
    ({"nested": {"k": {"deep": "v"}}}, {"a"}),
    ({"nested": {"other": 1}}, {"a"}),
    ({"nested": {"other": True}}, {"b"}),
    ({"nested": {}}, {"a", "b"}),
    ({"nested": {"k": {}}}, {"a", "b"}),
    ({"empty": {}}, {"a"}),
    ({"list": [1]}, {"a", "b"}),
    ({"list": ["two"]}, {"a"}),
    ({"list": [{"three": 3}]}, {"a"}),
    ({"list": [2]}, set()),
    ({"list": []}, {"a", "b"}),
    ({"it's": "quote"}, {"a"}),
    ({'say "hi"': "dq"}, {"a"}),
    ({"a.b": "dot"}, {"a"}),
    ({"a": {"b": "dot-nested"}}, {"b"}),
    ({"back\\slash": "bs"}, {"a"}),
    ({"ключ": "значение"}, {"a"}),
    ({"emoji 🚀": "🚀"}, {"a"}),
    ({"pct": "5_%"}, {"a"}),
    ({"pct": "50%"}, {"b"}),
    ({"sql": "'; DROP TABLE templates; --"}, {"a"}),
    ({"s": "x", "i": 1, "t": True}, {"a"}),
    ({"s": "x", "i": 2}, set()),
    ({"s": "x", "nested": {"other": 1}, "list": ["two"]}, {"a"}),
]


@pytest.fixture
def json_templates(store: Store) -> dict[uuid.UUID, str]:
    with store.unit_of_work() as uow:
        saved = {
            name: uow.templates.add(Template(name=name, provider_type="json", attributes=doc)).id
            for name, doc in (("a", DOC_A), ("b", DOC_B), ("c", DOC_C))
        }
    return {ident: name for name, ident in saved.items()}


def test_json_documents_round_trip_exactly(store: Store, json_templates: dict[Any, str]) -> None:
    docs = {"a": DOC_A, "b": DOC_B, "c": DOC_C}
    with store.unit_of_work() as uow:
        for ident, name in json_templates.items():
            loaded = uow.templates.get(ident).attributes
            assert loaded == docs[name]
            # containers come back tracked (dict and list subclasses): compare the JSON kinds
            assert {k: json_kind(v) for k, v in loaded.items()} == {
                k: json_kind(v) for k, v in docs[name].items()
            }


def json_kind(value: Any) -> type[Any]:
    """The JSON kind of a loaded value: a tracked container counts as its plain type."""
    for kind in (dict, list):
        if isinstance(value, kind):
            return kind
    return type(value)


def test_find_by_attributes_matches_alike_on_every_dialect(
    store: Store, json_templates: dict[Any, str]
) -> None:
    """Every case in one unit of work (one database set-up for the whole matrix)."""
    mismatches = []
    with store.unit_of_work() as uow:
        for wanted, expected in JSON_CASES:
            found = {json_templates[t.id] for t in uow.templates.find_by_attributes(wanted)}
            if found != expected:
                mismatches.append((wanted, sorted(found), sorted(expected)))
    assert mismatches == []


# -- money --------------------------------------------------------------------------------------


def test_many_small_costs_sum_exactly(store: Store) -> None:
    costs = [Decimal("0.000001"), Decimal("0.1"), Decimal("0.2"), Decimal("0.333333")] * 250
    start = datetime.now(UTC) - timedelta(minutes=1)
    org_id, app_id = uuid.uuid4(), uuid.uuid4()
    with store.unit_of_work() as uow:
        uow.inference_requests.add_many(
            InferenceRequest(org_id=org_id, application_id=app_id, model="m", cost=cost)
            for cost in costs
        )
    with store.unit_of_work() as uow:
        metrics = uow.inference_requests.metrics(org_id, start, datetime.now(UTC) + timedelta(1))
    assert metrics.total_requests == 1000
    assert metrics.total_cost == sum(costs, Decimal(0)) == Decimal("158.333500")
    assert isinstance(metrics.total_cost, Decimal)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (Decimal("123456789012.123456"), Decimal("123456789012.123456")),
        (Decimal("-0.000001"), Decimal("-0.000001")),
        (Decimal("0"), Decimal("0.000000")),
        (0.1, Decimal("0.100000")),  # a float goes through its shortest repr, not binary noise
    ],
)
def test_costs_round_trip_exactly(store: Store, given: Any, stored: Decimal) -> None:
    with store.unit_of_work() as uow:
        saved = uow.inference_requests.add(
            InferenceRequest(
                org_id=uuid.uuid4(), application_id=uuid.uuid4(), model="m", cost=given
            )
        )
    with store.unit_of_work() as uow:
        loaded = uow.inference_requests.get(saved.id).cost
    assert loaded == stored and str(loaded) == str(stored)


# -- unique keys --------------------------------------------------------------------------------


def test_unique_keys_are_enforced_alike(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = builders.org(uow, slug="acme")
        builders.user(uow, org_id=org.id, email="a@example.com", external_id="idp|1")
        builders.machine(uow, instance_id="i-1")
        attempts: list[Callable[[], object]] = [
            lambda: builders.org(uow, slug="acme"),
            lambda: builders.user(uow, org_id=org.id, email="a@example.com", external_id="x"),
            lambda: builders.user(uow, email="b@example.com", external_id="idp|1"),
            lambda: builders.machine(uow, instance_id="i-1"),
        ]
        for attempt in attempts:
            with pytest.raises(AlreadyExistsError):
                attempt()
        # Same email in another org, and different-case slugs, are different keys.
        builders.user(uow, email="a@example.com", external_id="idp|2")
        builders.org(uow, slug="ACME")
    with store.unit_of_work() as uow:
        lower, upper = uow.organizations.get_by_slug("acme"), uow.organizations.get_by_slug("ACME")
        assert lower is not None and upper is not None and lower.id != upper.id
        assert uow.users.count() == 2
        assert uow.machines.count() == 1


def test_trailing_spaces_and_case_make_different_strings(store: Store) -> None:
    """Strings compare exactly everywhere (on MySQL/MariaDB given the binary no-pad collation
    docs/backends.md asks for): no case folding, no padding with spaces."""
    with store.unit_of_work() as uow:
        for slug in ("acme", "acme ", "Acme"):
            builders.org(uow, slug=slug)
    with store.unit_of_work() as uow:
        for slug in ("acme", "acme ", "Acme"):
            found = uow.organizations.get_by_slug(slug)
            assert found is not None and found.slug == slug
        assert uow.organizations.get_by_slug("acme  ") is None
        assert uow.organizations.get_by_slug("ACME") is None


def test_unique_keys_hold_across_units_of_work(store: Store) -> None:
    with store.unit_of_work() as uow:
        builders.org(uow, slug="solo")
    with pytest.raises(AlreadyExistsError), store.unit_of_work() as uow:
        builders.org(uow, slug="solo")
    with store.unit_of_work() as uow:
        assert uow.organizations.count() == 1


def test_null_external_ids_do_not_collide(store: Store) -> None:
    with store.unit_of_work() as uow:
        org = builders.org(uow)
        for n in range(3):
            builders.user(uow, org_id=org.id, email=f"u{n}@example.com", external_id=None)
    with store.unit_of_work() as uow:
        assert uow.users.count() == 3


# -- cascades and restrictions ------------------------------------------------------------------


def test_deleting_an_organization_deletes_its_applications_users_and_policies(
    store: Store,
) -> None:
    with store.unit_of_work() as uow:
        doomed, kept = builders.org(uow), builders.org(uow)
        for org in (doomed, kept):
            app = builders.application(uow, org_id=org.id)
            user = builders.user(uow, org_id=org.id)
            for scope in ({}, {"application_id": app.id}, {"user_id": user.id}):
                uow.policies.add(
                    Policy(org_id=org.id, policy_type=PolicyType.BUDGET, config={}, **scope)
                )
    with store.unit_of_work() as uow:
        uow.organizations.delete(doomed.id)
    with store.unit_of_work() as uow:
        assert [o.id for o in uow.organizations.list()] == [kept.id]
        for repository in (uow.applications, uow.users, uow.policies):
            assert repository.count(org_id=doomed.id) == 0
        assert (uow.applications.count(), uow.users.count(), uow.policies.count()) == (1, 1, 3)


def test_deleting_an_application_deletes_its_policies_only(store: Store) -> None:
    with store.unit_of_work() as uow:
        app = builders.application(uow)
        uow.policies.add(
            Policy(
                org_id=app.org_id, application_id=app.id, policy_type=PolicyType.BUDGET, config={}
            )
        )
        uow.policies.add(Policy(org_id=app.org_id, policy_type=PolicyType.BUDGET, config={}))
    with store.unit_of_work() as uow:
        uow.applications.delete(app.id)
    with store.unit_of_work() as uow:
        assert [p.application_id for p in uow.policies.list()] == [None]


def test_request_and_deployment_children_cascade_and_templates_restrict(store: Store) -> None:
    with store.unit_of_work() as uow:
        template = builders.template(uow)
        request = uow.requests.add(
            Request(template_id=template.id, machine_count=2, status=RequestStatus.PENDING)
        )
        for n in range(2):
            uow.machines.add(
                Machine(request_id=request.id, instance_id=f"i-{n}", status=MachineStatus.PENDING)
            )
        deployment = uow.deployments.add(
            Deployment(name="d", version="1", status=DeploymentStatus.RUNNING, config={})
        )
        uow.deployments.set_node_id(deployment.id, "node-1")
    with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
        uow.templates.delete(template.id)  # a request still uses it
    with store.unit_of_work() as uow:
        uow.requests.delete(request.id)
        uow.deployments.delete(deployment.id)
    with store.unit_of_work() as uow:
        assert uow.machines.count() == 0
        assert uow.deployments.get_deployments_by_node_id("node-1") == []
        uow.templates.delete(template.id)  # free now
        assert uow.templates.count() == 0


def test_a_dangling_foreign_key_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError), store.unit_of_work() as uow:
        uow.requests.add(
            Request(template_id=uuid.uuid4(), machine_count=1, status=RequestStatus.PENDING)
        )


# -- MySQL index limits -------------------------------------------------------------------------

MYSQL_MAX_KEY_BYTES = 3072  # InnoDB, DYNAMIC row format


def _key_bytes(sql_type: TypeEngine[Any]) -> int:
    """Worst-case bytes a column takes in a MySQL index (utf8mb4: four bytes a character)."""
    if isinstance(sql_type, String):
        assert sql_type.length, f"an indexed string needs a length: {sql_type!r}"
        return 4 * sql_type.length
    if isinstance(sql_type, Uuid) or isinstance(getattr(sql_type, "impl", None), Uuid):
        return 32 * 4  # CHAR(32) where there is no native uuid type
    if isinstance(sql_type, UTCDateTime):
        return 8
    if isinstance(sql_type, Integer | Boolean):
        return 8
    raise AssertionError(f"unexpected indexed type {sql_type!r}")


def test_every_index_fits_mysql_key_limit() -> None:
    checked = 0
    for table in Base.metadata.tables.values():
        on_mysql = include_object_for("mysql")  # leaves out indexes made on other databases only
        keys = [
            list(index.columns)
            for index in table.indexes
            if on_mysql(index, index.name, "index", False, None)
        ]
        keys += [list(c.columns) for c in table.constraints if hasattr(c, "columns") and c.columns]
        for columns in keys:
            size = sum(_key_bytes(column.type) for column in columns)
            assert size <= MYSQL_MAX_KEY_BYTES, (table.name, [c.name for c in columns], size)
            checked += 1
    assert checked > len(Base.metadata.tables)


def test_mysql_indexes_cover_whole_columns(store: Store) -> None:
    """No index was silently shortened to a prefix (which would weaken unique keys)."""
    if store.dialect not in {"mysql", "mariadb"}:
        pytest.skip("prefix indexes exist only on MySQL/MariaDB")
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, index_name, sub_part FROM information_schema.statistics"
                " WHERE table_schema = DATABASE()"
            )
        ).all()
    assert rows
    assert [r for r in rows if r[2] is not None] == []


def test_indexed_strings_take_their_full_length_of_four_byte_characters(store: Store) -> None:
    slug = "🚀" * 100
    instance = "𝄞" * 255
    with store.unit_of_work() as uow:
        org = builders.org(uow, slug=slug, name="ü" * 255)
        builders.machine(uow, instance_id=instance)
    with store.unit_of_work() as uow:
        found = uow.organizations.get_by_slug(slug)
        assert found is not None and found.id == org.id
        assert [m.instance_id for m in uow.machines.get_by_instance_ids([instance])] == [instance]
        with pytest.raises(AlreadyExistsError):
            builders.org(uow, slug=slug)


# -- ordering and paging ------------------------------------------------------------------------


def test_pages_do_not_overlap_when_creation_times_tie(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.templates.add_many(
            Template(
                name=f"t{n:02}",
                provider_type="aws",
                attributes={},
                created_at=EXACT,
                updated_at=EXACT,
            )
            for n in range(25)
        )
    with store.unit_of_work() as uow:
        everything = [t.id for t in uow.templates.list()]
        pages = [[t.id for t in uow.templates.list(limit=7, offset=o)] for o in range(0, 28, 7)]
        again = [t.id for t in uow.templates.list()]
        by_name = [t.name for t in uow.templates.list(order_by="provider_type")]
    assert everything == again == sorted(everything)  # ties broken by id, the same every time
    assert [i for page in pages for i in page] == everything
    assert len(set(everything)) == 25
    assert len(by_name) == 25


def test_descending_order_by_a_tied_field_still_pages_cleanly(store: Store) -> None:
    with store.unit_of_work() as uow:
        uow.templates.add_many(
            Template(name="same", provider_type="aws", max_number=n % 3, attributes={})
            for n in range(12)
        )
    with store.unit_of_work() as uow:
        full = [t.id for t in uow.templates.list(order_by=["-max_number", "name"])]
        paged = [
            t.id
            for offset in range(0, 12, 5)
            for t in uow.templates.list(order_by=["-max_number", "name"], limit=5, offset=offset)
        ]
        numbers = [t.max_number for t in uow.templates.list(order_by="-max_number")]
    assert paged == full
    assert numbers == sorted(numbers, reverse=True)


def test_organizations_accept_the_slug_lookup_after_a_cascade(store: Store) -> None:
    """The unique slug is free again once its organization is deleted."""
    with store.unit_of_work() as uow:
        first = uow.organizations.add(Organization(name="A", slug="reused"))
    with store.unit_of_work() as uow:
        uow.organizations.delete(first.id)
    with store.unit_of_work() as uow:
        second = uow.organizations.add(Organization(name="B", slug="reused"))
    with store.unit_of_work() as uow:
        found = uow.organizations.get_by_slug("reused")
        assert found is not None and found.id == second.id
