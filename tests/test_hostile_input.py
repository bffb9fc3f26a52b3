"""Hostile input, property-based: quotes, NULs, lone surrogates, LIKE wildcards, huge strings and
numbers, NaN, SQL expressions and values of the wrong type, fed into every filter, spec, field
and domain lookup, on every backend.

What must hold: only flowstore errors come out (``InvalidInputError`` for reads, which are
refused before any SQL, so the unit of work stays usable even on PostgreSQL); a failed call
leaves the database exactly as it was; what is stored reads back unchanged (values travel as
parameters, never as SQL); and ``contains``/``startswith`` match ``%``, ``_`` and ``\\``
literally, ``like`` with ``\\`` as its escape, the same on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, inspect, literal_column, select, text

from flowstore import Store, where
from flowstore.errors import AlreadyExistsError, FlowstoreError, InvalidInputError, NotFoundError
from flowstore.models import (
    FLOWSTORE_TABLES,
    Application,
    AuditLog,
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
    Template,
    User,
)
from flowstore.spec import OPERATORS, Spec
from flowstore.uow import UnitOfWork
from flowstore.validation import python_type as column_python_type

HOSTILE = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

REPOS: dict[str, type[Any]] = {
    "deployments": Deployment,
    "templates": Template,
    "requests": Request,
    "machines": Machine,
    "organizations": Organization,
    "applications": Application,
    "users": User,
    "policies": Policy,
    "audit_logs": AuditLog,
    "inference_requests": InferenceRequest,
}

SQLISH = [
    "' OR '1'='1",
    "'; DROP TABLE organizations; --",
    '" OR 1=1 --',
    "' UNION SELECT api_key_hash FROM applications --",
    "1); DELETE FROM users; --",
    "\\'; SELECT 1; --",
    "%",
    "_",
    "\\",
    "\\%",
    "%_%",
    "a%b_c\\d",
    "$1",
    "?",
    ":name",
    "%(name)s",
    "%s",
    "$$;$$",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202etxt",
    "😀",
    "NULL",
    "",
    " ",
    "\n\r\t",
]

texts = st.one_of(
    st.sampled_from(SQLISH),
    st.text(max_size=40),
    st.text(st.characters(exclude_categories=[]), max_size=20),
    st.text(alphabet="%_\\'\"ab", max_size=12),
    st.builds(
        lambda s, n: (s or "x") * n, st.text(max_size=3), st.sampled_from([100, 400, 5000, 70_000])
    ),
)
aware_datetimes = st.builds(
    lambda d, minutes: d.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
sql_expressions = st.sampled_from(
    [text("1=1"), literal_column("1"), Organization.name, Deployment.id]
)
other_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**400]),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e308, 5e-324]),
    st.decimals(),
    st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("1e999999"), Decimal("-1e12")]),
    st.binary(max_size=20),
    st.uuids(),
    st.datetimes(),
    aware_datetimes,
    st.dates(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.sampled_from(
        [
            DeploymentStatus.RUNNING,
            MachineStatus.RUNNING,
            PolicyType.BUDGET,
            object(),
            type,
            {1, 2},
            (1, 2),
        ]
    ),
    sql_expressions,
)
values = st.one_of(texts, other_values)


def column_names(model: type[Any]) -> list[str]:
    return [prop.key for prop in inspect(model).column_attrs]


def fields(model: type[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(column_names(model)),
        st.sampled_from(["", " ", "name; DROP TABLE x", "__class__", "__table__", "metadata"]),
        st.sampled_from(["registry", "id ", "ID", "org_id\x00", "1=1", "*"]),
        st.text(max_size=8),
        st.sampled_from([None, 1, b"name", ("name",)]),
    )


operators = st.one_of(
    st.sampled_from(sorted(OPERATORS)),
    st.sampled_from(["=", "LIKE", "== ", "; DROP", "", "in ", "~", None, 1, ["=="]]),
)


def leaves(model: type[Any]) -> st.SearchStrategy[tuple[Any, Any, Any]]:
    return st.tuples(fields(model), operators, st.one_of(values, st.lists(values, max_size=4)))


# -- helpers ---------------------------------------------------------------------------------


def snapshot(uow: UnitOfWork) -> dict[str, list[str]]:
    """Every row of every table, read inside the unit of work's own transaction."""
    conn = uow.session.connection()
    rows: dict[str, list[str]] = {}
    for table in Base.metadata.sorted_tables:
        if table.name not in FLOWSTORE_TABLES:
            continue  # a service's (tests/service_app.py): not in every test database
        found = [repr(sorted(row.items())) for row in conn.execute(select(table)).mappings()]
        rows[table.name] = sorted(found)
    return rows


def refused_or_returned(
    uow: UnitOfWork,
    call: Callable[[], Any],
    *allowed: type[FlowstoreError],
    before: dict[str, list[str]] | None = None,
) -> tuple[bool, Any]:
    """Run ``call``: it returns, or raises one of ``allowed`` (default ``InvalidInputError``),
    and then the database must still be ``before`` (when given). Anything else fails the test."""
    expected: tuple[type[FlowstoreError], ...] = allowed or (InvalidInputError,)
    try:
        return True, call()
    except expected as error:
        refused = error
    if before is not None:
        assert snapshot(uow) == before, f"a refused call changed the database: {refused}"
    return False, refused


_seq = itertools.count(1)


def seed(uow: UnitOfWork) -> dict[str, Any]:
    """One row of every model, linked as the foreign keys require."""
    n = next(_seq)
    org = uow.organizations.add(Organization(name=f"org {n}", slug=f"org-{n}-{uuid.uuid4()}"))
    app, key = uow.applications.create_with_api_key(org.id, f"app {n}")
    user = uow.users.add(
        User(org_id=org.id, email=f"u{n}@x.test", external_id=f"idp|{uuid.uuid4()}")
    )
    template = uow.templates.add(Template(name=f"t{n}", provider_type="aws", attributes={"a": 1}))
    request = uow.requests.add(Request(template_id=template.id, machine_count=1))
    deployment = uow.deployments.add(Deployment(name=f"svc{n}", version="1.0.0"))
    rows = {
        "organizations": org,
        "applications": app,
        "users": user,
        "templates": template,
        "requests": request,
        "deployments": deployment,
        "machines": uow.machines.add(
            Machine(request_id=request.id, instance_id=f"i-{uuid.uuid4()}")
        ),
        "policies": uow.policies.add(Policy(org_id=org.id, policy_type=PolicyType.BUDGET)),
        "audit_logs": uow.audit_logs.record(org.id, "create", "thing"),
        "inference_requests": uow.inference_requests.add(
            InferenceRequest(org_id=org.id, application_id=app.id, model="m", cost=Decimal("1.5"))
        ),
        "api_key": key,
    }
    uow.deployments.set_node_id(deployment.id, "node-1")
    return rows


def new_entity(uow: UnitOfWork, repo: str, parents: dict[str, Any]) -> Any:
    """A valid, unsaved entity of ``repo``'s model (its parents exist)."""
    n = next(_seq)
    org = parents["organizations"].id
    build: dict[str, Callable[[], Any]] = {
        "deployments": lambda: Deployment(name=f"d{n}", version="1", config={}),
        "templates": lambda: Template(name=f"t{n}", provider_type="aws", attributes={}),
        "requests": lambda: Request(template_id=parents["templates"].id, machine_count=1),
        "machines": lambda: Machine(
            request_id=parents["requests"].id, instance_id=f"i-{n}-{uuid.uuid4()}"
        ),
        "organizations": lambda: Organization(name=f"o{n}", slug=f"o-{n}-{uuid.uuid4()}"),
        "applications": lambda: Application(org_id=org, name=f"a{n}"),
        "users": lambda: User(org_id=org, email=f"e{n}@x.test"),
        "policies": lambda: Policy(org_id=org, policy_type=PolicyType.RATE_LIMIT, config={}),
        "audit_logs": lambda: AuditLog(org_id=org, action="a", resource_type="r", details={}),
        "inference_requests": lambda: InferenceRequest(
            org_id=org, application_id=parents["applications"].id, model="m"
        ),
    }
    return build[repo]()


@pytest.fixture
def parents(store: Store) -> dict[str, Any]:
    """One committed row of every model."""
    with store.unit_of_work() as uow:
        return seed(uow)


@pytest.fixture
def uow(store: Store, parents: dict[str, Any]) -> Any:
    """The unit of work a test runs in (after ``parents`` committed)."""
    with store.unit_of_work() as active:
        yield active


# -- filters and specs -----------------------------------------------------------------------


@HOSTILE
@given(data=st.data())
@pytest.mark.parametrize("repo_name", sorted(REPOS))
def test_hostile_filters_and_specs_are_refused_or_answered(
    uow: UnitOfWork, parents: dict[str, Any], repo_name: str, data: st.DataObject
) -> None:
    model = REPOS[repo_name]
    repo = getattr(uow, repo_name)
    field, op, value = data.draw(leaves(model), label="where")
    combine = data.draw(st.sampled_from(["one", "and", "or", "not", "filter", "order", "page"]))

    def query() -> Any:
        if combine == "filter":
            return repo.list(**{str(field): value}) if isinstance(field, str) else repo.list()
        if combine == "order":
            return repo.list(order_by=value)
        if combine == "page":
            return repo.list(limit=value, offset=data.draw(other_values, label="offset"))
        spec: Spec = where(field, op, value)
        other = where("id", "!=", parents[repo_name].id)
        if combine == "and":
            spec = spec & other
        elif combine == "or":
            spec = other | spec
        elif combine == "not":
            spec = ~spec
        return repo.list(spec), repo.count(spec)

    before = snapshot(uow)
    answered, result = refused_or_returned(uow, query)
    assert snapshot(uow) == before  # reads change nothing, answered or refused
    if answered and isinstance(result, tuple):
        rows, count = result
        assert count == len(rows)
        assert all(isinstance(row, model) for row in rows)
    # refused before any SQL: the unit of work is still usable, on every backend
    assert repo.count() >= 1
    assert repo.get(parents[repo_name].id).id == parents[repo_name].id


@HOSTILE
@given(value=values)
@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_every_operator_on_every_column_kind(
    uow: UnitOfWork, parents: dict[str, Any], op: str, value: Any
) -> None:
    """Each operator against a text, uuid, enum, int, bool, money, datetime and JSON column."""
    for model, field in (
        (Organization, "name"),
        (Application, "org_id"),
        (Deployment, "status"),
        (Policy, "priority"),
        (Policy, "enabled"),
        (InferenceRequest, "cost"),
        (AuditLog, "created_at"),
        (Template, "attributes"),
    ):
        repo_name = next(name for name, m in REPOS.items() if m is model)
        repo = getattr(uow, repo_name)
        argument = [value] if op == "in" else value
        refused_or_returned(uow, functools.partial(_list_where, repo, field, op, argument))
        assert repo.count() >= 1


def _list_where(repo: Any, field: str, op: str, value: Any) -> Any:
    return repo.list(where(field, op, value))


def test_nesting_and_size_are_bounded(uow: UnitOfWork, parents: dict[str, Any]) -> None:
    org = parents["organizations"]
    chain = functools.reduce(lambda a, b: a | b, [where("name", "==", f"n{i}") for i in range(200)])
    assert [o.id for o in uow.organizations.list(chain | where("id", "==", org.id))] == [org.id]
    spec = where("name", "==", org.name)
    with pytest.raises(InvalidInputError):
        for _ in range(100):
            spec = ~spec
    with pytest.raises(InvalidInputError):
        functools.reduce(lambda a, b: a & b, [where("name", "==", "x")] * 300)
    with pytest.raises(InvalidInputError):
        uow.organizations.list(where("name", "in", ["x"] * 10_001))
    with pytest.raises(InvalidInputError):
        uow.organizations.list(where("name", "==", "x") & "1=1")  # type: ignore[operator]


# -- entity fields on write ------------------------------------------------------------------


def normalized(value: Any, model: type[Any], field: str) -> Any:
    """What a stored ``value`` reads back as."""
    column = inspect(model).columns[field]
    if isinstance(column.type, JSON):
        return _numbers_as_floats(json.loads(json.dumps(value)))
    python_type: Any = column_python_type(column.type)
    if isinstance(value, str) and python_type is uuid.UUID:
        return uuid.UUID(value)
    if isinstance(python_type, type) and issubclass(python_type, Enum):
        return python_type(value)
    if python_type is Decimal:
        return Decimal(str(value) if isinstance(value, float) else value).quantize(
            Decimal("0.000001")
        )
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _numbers_as_floats(value: Any) -> Any:
    """PostgreSQL's JSONB keeps numbers as decimals (1e308 reads back as an integer)."""
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        result = call()
    except InvalidInputError as error:
        return ("refused", str(error))
    return (type(result).__name__, repr(result))


@settings(max_examples=100, deadline=None, database=None)
@given(data=st.data())
@pytest.mark.parametrize("model", [REPOS[name] for name in sorted(REPOS)])
def test_the_fast_write_checks_agree_with_coerce_value(model: type[Any], data: Any) -> None:
    """check_entity answers a value of exactly the column's type without calling
    coerce_value; for any value, both must accept (and convert) or refuse alike."""
    from flowstore.spec import check_json, coerce_value, column_checks

    plan = {key: check for key, check, _new, _existing in column_checks(model)}
    assert set(plan) == set(column_names(model))
    key = data.draw(st.sampled_from(sorted(plan)))
    value = data.draw(values.filter(lambda v: v is not None))
    column = inspect(model).columns[key]
    if isinstance(column.type, JSON):

        def checked_json() -> Any:
            check_json(key, value)
            return value

        expected = _outcome(checked_json)
    else:
        expected = _outcome(lambda: coerce_value(column, key, value))
    assert _outcome(lambda: plan[key](value)) == expected


WRITABLE: dict[str, list[str]] = {
    name: [c for c in column_names(model) if c not in {"id", "lock_version"}]
    for name, model in REPOS.items()
}


@HOSTILE
@given(data=st.data())
@pytest.mark.parametrize("repo_name", sorted(REPOS))
def test_hostile_field_values_are_stored_intact_or_refused(
    uow: UnitOfWork, parents: dict[str, Any], repo_name: str, data: st.DataObject
) -> None:
    model = REPOS[repo_name]
    repo = getattr(uow, repo_name)
    field = data.draw(st.sampled_from(WRITABLE[repo_name]), label="field")
    value = data.draw(values, label="value")
    entity = new_entity(uow, repo_name, parents)
    setattr(entity, field, value)
    before = snapshot(uow)
    stored, _ = refused_or_returned(
        uow, lambda: repo.add(entity), InvalidInputError, AlreadyExistsError, before=before
    )
    if stored:
        uow.session.expire_all()
        found = getattr(repo.get(entity.id), field)
        column = inspect(model).columns[field]
        if isinstance(column.type, JSON):
            found = _numbers_as_floats(found)
        if value is None and column.default is not None and not isinstance(column.type, JSON):
            assert found is not None  # None means "use the default"
        else:
            assert found == normalized(value, model, field)
    assert repo.count() >= 1  # usable after a refusal


@HOSTILE
@given(value=values)
@pytest.mark.parametrize("field", ["name", "version", "config", "status"])
def test_hostile_values_on_update_leave_the_row_intact(
    uow: UnitOfWork, parents: dict[str, Any], field: str, value: Any
) -> None:
    uow.session.expire_all()  # what the database holds, not what an earlier example set
    deployment = uow.deployments.get(parents["deployments"].id)
    before = {f: getattr(deployment, f) for f in ("name", "version", "config", "status")}
    rows = snapshot(uow)
    setattr(deployment, field, value)
    stored, _ = refused_or_returned(uow, lambda: uow.deployments.update(deployment))
    if not stored:
        uow.session.expire(deployment)  # discard the caller's refused change
        assert snapshot(uow) == rows
        assert {f: getattr(deployment, f) for f in before} == before


# -- domain lookups --------------------------------------------------------------------------


def domain_calls(
    uow: UnitOfWork, p: dict[str, Any], v: Any, w: Any
) -> list[tuple[bool, Callable[[], Any]]]:
    """Every repository extra, with hostile arguments ``v`` and ``w`` (and whether it writes)."""
    return [
        (False, lambda: uow.organizations.get_by_slug(v)),
        (False, lambda: uow.applications.get_by_api_key(v)),
        (True, lambda: uow.applications.create_with_api_key(p["organizations"].id, v)),
        (True, lambda: uow.applications.create_with_api_key(v, "name")),
        (True, lambda: uow.applications.rotate_api_key(v)),
        (False, lambda: uow.users.get_by_email(p["organizations"].id, v)),
        (False, lambda: uow.users.get_by_email(v, w)),
        (False, lambda: uow.users.get_by_external_id(v)),
        (False, lambda: uow.policies.get_applicable_policies(v, w)),
        (False, lambda: uow.policies.get_applicable_policies(p["organizations"].id, v, w)),
        (True, lambda: uow.audit_logs.record(p["organizations"].id, v, "thing", details={"k": w})),
        (True, lambda: uow.audit_logs.record(v, "action", "thing")),
        (False, lambda: uow.audit_logs.query(p["organizations"].id, action=v, since=w)),
        (False, lambda: uow.audit_logs.query(v, limit=w)),
        (False, lambda: uow.inference_requests.metrics(p["organizations"].id, v, w)),
        (False, lambda: uow.templates.find_by_attributes({"a": v})),
        (False, lambda: uow.templates.find_by_attributes(v)),
        (False, lambda: uow.templates.get_by_provider_type(v)),
        (False, lambda: uow.deployments.list_by_status(v)),
        (True, lambda: uow.deployments.set_node_id(p["deployments"].id, v)),
        (True, lambda: uow.deployments.set_node_id(v, "node")),
        (False, lambda: uow.deployments.get_node_id(v)),
        (True, lambda: uow.deployments.delete_node_id(v)),
        (False, lambda: uow.deployments.get_deployments_by_node_id(v)),
        (False, lambda: uow.requests.get_by_status(v)),
        (True, lambda: uow.requests.update_status(p["requests"].id, v)),
        (True, lambda: uow.requests.update_status(v, "completed")),
        (False, lambda: uow.machines.get_by_instance_ids([v, w])),
        (False, lambda: uow.machines.get_by_instance_ids(v)),
        (False, lambda: uow.machines.get_by_request_id(v)),
        (True, lambda: uow.machines.update_status(p["machines"].id, v)),
        (False, lambda: uow.organizations.get(v)),
        (False, lambda: uow.organizations.get_or_none(v)),
        (False, lambda: uow.organizations.exists(v)),
        (True, lambda: uow.organizations.delete(v)),
    ]


@settings(HOSTILE, max_examples=10)
@given(v=values, w=values)
def test_hostile_arguments_to_every_domain_extra(
    uow: UnitOfWork, parents: dict[str, Any], v: Any, w: Any
) -> None:
    state = snapshot(uow)
    for writes, call in domain_calls(uow, parents, v, w):
        answered, _ = refused_or_returned(uow, call, InvalidInputError, NotFoundError, before=state)
        if answered and writes:
            state = snapshot(uow)
    assert uow.organizations.get(parents["organizations"].id).slug == parents["organizations"].slug


# -- literal matching: the same answers on every backend -------------------------------------

ALPHABET = "ab%_\\'\"é"


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE with ``\\`` as the escape character, as a Python regex (the test's oracle)."""
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "")))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    names=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=6), min_size=1, max_size=8),
    needle=st.text(alphabet=ALPHABET, max_size=4),
)
def test_matching_treats_wildcards_literally_on_every_backend(
    store: Store, names: list[str], needle: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    # names that tell a literal match from a wildcard or escape match apart
    unescaped = re.sub(r"\\(.)", r"\1", needle)
    names = [
        *names,
        needle,
        unescaped,
        f"a{needle}b",
        needle.replace("%", "x").replace("_", "y"),
        needle.replace("\\", ""),
        unescaped.replace("%", "ab").replace("_", "a"),
    ]
    names = [name for name in names if name]
    with store.unit_of_work() as uow:
        org_ids = {
            uow.organizations.add(Organization(name=name, slug=f"{tag}-{i}")).id: name
            for i, name in enumerate(names)
        }
        mine = where("slug", "startswith", f"{tag}-")

        def matched(spec: Spec) -> list[str]:
            return sorted(o.name for o in uow.organizations.list(mine & spec))

        def expected(predicate: Callable[[str], bool]) -> list[str]:
            return sorted(name for name in org_ids.values() if predicate(name))

        assert matched(where("name", "contains", needle)) == expected(lambda n: needle in n)
        assert matched(where("name", "startswith", needle)) == expected(
            lambda n: n.startswith(needle)
        )
        assert matched(where("name", "==", needle)) == expected(lambda n: n == needle)
        assert matched(where("name", "!=", needle)) == expected(lambda n: n != needle)
        assume(
            not (len(needle) - len(needle.rstrip("\\"))) % 2
        )  # a lone trailing escape is refused
        regex = like_to_regex(needle)
        assert matched(where("name", "like", needle)) == expected(
            lambda n: bool(regex.fullmatch(n))
        )


def test_like_refuses_a_trailing_lone_escape_and_non_text_fields(uow: UnitOfWork) -> None:
    for spec in (
        where("name", "like", "abc\\"),
        where("priority", "like", "1%"),
        where("id", "contains", "0"),
        where("status", "startswith", "run"),
        where("config", "contains", "a"),
    ):
        model = Policy if spec_field(spec) == "priority" else Deployment
        repo = uow.policies if model is Policy else uow.deployments
        with pytest.raises(InvalidInputError):
            repo.list(spec)


def spec_field(spec: Spec) -> str:
    return str(getattr(spec, "field", ""))


def test_injection_strings_are_data(uow: UnitOfWork) -> None:
    """Classic injection strings are stored and found as plain text, and nothing else happens."""
    storable = [
        s for s in SQLISH if s and "\x00" not in s and "\ud800" not in s and "\udfff" not in s
    ]
    before = uow.organizations.count()
    stored = [
        uow.organizations.add(Organization(name=s, slug=f"inj-{i}-{uuid.uuid4().hex[:6]}"))
        for i, s in enumerate(storable)
    ]
    for org in stored:
        assert [o.id for o in uow.organizations.list(name=org.name)] == [org.id]
        assert org.id in {o.id for o in uow.organizations.list(where("name", "contains", org.name))}
    assert uow.organizations.count() == before + len(stored)
    assert uow.applications.count() == 1  # the DROP/DELETE strings did nothing


def test_values_of_the_wrong_type_are_refused_with_clear_messages(uow: UnitOfWork) -> None:
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: uow.policies.list(priority="1"), "integer"),
        (lambda: uow.policies.list(priority=2**31), "32 bits"),
        (lambda: uow.policies.list(enabled=1), "bool"),
        (lambda: uow.inference_requests.list(where("cost", ">", float("nan"))), "finite"),
        (lambda: uow.inference_requests.list(where("cost", ">", Decimal("1e15"))), "magnitude"),
        (lambda: uow.audit_logs.list(where("created_at", ">", datetime(2020, 1, 1))), "aware"),
        (lambda: uow.applications.list(org_id="not-a-uuid"), "UUID"),
        (lambda: uow.deployments.list(status="exploded"), "one of"),
        (lambda: uow.organizations.list(name="a\x00b"), "NUL"),
        (lambda: uow.organizations.list(name="\ud800"), "Unicode"),
        (lambda: uow.organizations.list(name="x" * 256), "at most 255"),
        (lambda: uow.organizations.list(name=text("1=1")), "SQL expression"),
        (lambda: uow.templates.list(attributes={"a": 1}), "JSON"),
        (lambda: uow.organizations.list(nope=1), "no field"),
        (lambda: uow.organizations.list(limit=-1), "non-negative"),
        (lambda: uow.organizations.list(order_by=[10**5000]), "order_by"),  # type: ignore[list-item]
        (lambda: uow.organizations.add(Organization(name=None, slug="s")), "required"),
        (lambda: uow.policies.add(Policy(priority=2**40)), "32 bits"),
        (
            lambda: uow.templates.add(
                Template(name="t", provider_type="p", attributes={"x": float("nan")})
            ),
            "finite",
        ),
        (
            lambda: uow.templates.add(Template(name="t", provider_type="p", attributes={1: "x"})),
            "keys",
        ),
        (
            lambda: uow.deployments.add(
                Deployment(name="d", version="1", config={"s": date(2020, 1, 1)})
            ),
            "JSON value",
        ),
    ]
    for call, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            call()
    with pytest.raises(NotFoundError):
        uow.organizations.get(10**5000)


def test_a_uuid_the_database_cannot_store_is_invalid_input(
    uow: UnitOfWork, parents: dict[str, Any]
) -> None:
    """MariaDB's UUID type refuses some non-RFC UUIDs (version >= 8, variant nibble 1-8) that
    PostgreSQL and SQLite store: there it is InvalidInputError, and nothing is written."""
    odd = uuid.UUID("a2f2e0d8-72ae-ed66-70c9-d5292e3a3937")
    entry = InferenceRequest(org_id=odd, application_id=parents["applications"].id, model="m")
    before = snapshot(uow)
    stored, _ = refused_or_returned(uow, lambda: uow.inference_requests.add(entry), before=before)
    if stored:
        uow.session.expire_all()
        assert uow.inference_requests.get(entry.id).org_id == odd
    assert uow.inference_requests.count(org_id=odd) == (1 if stored else 0)


def test_a_failed_check_constraint_is_invalid_input_on_every_backend(
    uow: UnitOfWork, parents: dict[str, Any]
) -> None:
    """MariaDB reports a failed CHECK as an OperationalError (4025); it is InvalidInputError."""
    negative = Request(template_id=parents["templates"].id, machine_count=-1)
    before = snapshot(uow)
    with pytest.raises(InvalidInputError, match="constraint"):
        uow.requests.add(negative)
    assert snapshot(uow) == before
