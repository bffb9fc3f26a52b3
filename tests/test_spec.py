"""flowstore.spec: every operator, combination and refusal, on every backend."""

from __future__ import annotations

import collections
import enum
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flowstore import InvalidInputError, Store, where
from flowstore.models import Deployment, DeploymentStatus, Template
from flowstore.spec import check_json
from tests import builders as b

NAMES = ["alpha", "beta", "50%_off", "under_score", r"back\slash", "percent%", "Alpha-2"]


@pytest.fixture
def named(store: Store) -> Store:
    with store.unit_of_work() as uow:
        for i, name in enumerate(NAMES):
            uow.deployments.add(
                Deployment(
                    name=name,
                    version=str(i),
                    status=DeploymentStatus.RUNNING if i % 2 else DeploymentStatus.PENDING,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
                )
            )
    return store


def _names(store: Store, *specs: object, **filters: object) -> set[str]:
    with store.unit_of_work() as uow:
        return {d.name for d in uow.deployments.list(*specs, **filters)}  # type: ignore[arg-type]


def test_comparisons(named: Store) -> None:
    assert _names(named, where("name", "==", "beta")) == {"beta"}
    assert _names(named, where("name", "!=", "beta")) == set(NAMES) - {"beta"}
    t3 = datetime(2026, 1, 1, 3, tzinfo=UTC)
    assert _names(named, where("created_at", "<", t3)) == set(NAMES[:3])
    assert _names(named, where("created_at", "<=", t3)) == set(NAMES[:4])
    assert _names(named, where("created_at", ">", t3)) == set(NAMES[4:])
    assert _names(named, where("created_at", ">=", t3)) == set(NAMES[3:])
    assert _names(named, where("version", "in", ["0", "1", "nope"])) == {"alpha", "beta"}
    assert _names(named, where("status", "in", [DeploymentStatus.RUNNING])) == {
        n for i, n in enumerate(NAMES) if i % 2
    }
    assert _names(named, where("status", "==", "running")) == _names(named, status="running")


def test_like_takes_a_pattern_as_given(named: Store) -> None:
    # lower-case letters only: LIKE's case rules differ between dialects and collations
    assert _names(named, where("name", "like", "%lph%")) == {"alpha", "Alpha-2"}
    assert _names(named, where("name", "like", "_eta")) == {"beta"}
    assert "under_score" in _names(named, where("name", "like", "under%"))


def test_contains_and_startswith_are_literal(named: Store) -> None:
    assert _names(named, where("name", "contains", "%")) == {"50%_off", "percent%"}
    assert _names(named, where("name", "contains", "_")) == {"50%_off", "under_score"}
    assert _names(named, where("name", "contains", "\\")) == {r"back\slash"}
    assert _names(named, where("name", "contains", "0%_o")) == {"50%_off"}
    assert _names(named, where("name", "startswith", "50%")) == {"50%_off"}
    assert _names(named, where("name", "startswith", "%")) == set()
    assert _names(named, where("name", "startswith", "_")) == set()
    assert _names(named, where("name", "contains", "pha")) >= {"alpha"}


def test_combinations(named: Store) -> None:
    a, bb = where("name", "==", "alpha"), where("name", "==", "beta")
    running = where("status", "==", DeploymentStatus.RUNNING)
    assert _names(named, a | bb) == {"alpha", "beta"}
    assert _names(named, (a | bb) & running) == {"beta"}
    assert _names(named, ~(a | bb)) == set(NAMES) - {"alpha", "beta"}
    assert _names(named, a | bb, running) == {"beta"}  # several specs are ANDed
    assert _names(named, ~running, version="0") == {"alpha"}


def test_none_means_is_null(store: Store) -> None:
    with store.unit_of_work() as uow:
        app = b.application(uow)
        with_user = b.user(uow, org_id=app.org_id)
        p1 = b.policy(uow, org_id=app.org_id, application_id=app.id)
        p2 = b.policy(uow, org_id=app.org_id, user_id=with_user.id)
    with store.unit_of_work() as uow:
        assert {p.id for p in uow.policies.list(application_id=None)} == {p2.id}
        assert {p.id for p in uow.policies.list(where("user_id", "==", None))} == {p1.id}
        assert {p.id for p in uow.policies.list(where("user_id", "!=", None))} == {p2.id}
        with pytest.raises(InvalidInputError):
            uow.policies.list(where("priority", "<", None))


def test_numbers_and_decimals(store: Store) -> None:
    with store.unit_of_work() as uow:
        for n in (1, 5, 10):
            b.template(uow, max_number=n)
        b.inference_request(uow, cost=Decimal("0.000001"))
        b.inference_request(uow, cost=Decimal("2.5"))
    with store.unit_of_work() as uow:
        assert sorted(t.max_number for t in uow.templates.list(where("max_number", ">=", 5))) == [
            5,
            10,
        ]
        assert uow.inference_requests.count(where("cost", ">", Decimal("0.000001"))) == 1
        assert uow.inference_requests.count(where("cost", "<=", 0.000001)) == 1
        assert uow.inference_requests.count(cost=Decimal("2.500000")) == 1


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        ("no_such_field", "==", 1),
        ("name", "~=", "x"),
        ("name", "in", "abc"),
        ("name", "in", 5),
        ("name", "like", 5),
        ("name", "contains", None),
        ("name", "==", 5),
        ("name", "==", "nul\x00byte"),
        ("status", "==", "exploded"),
        ("created_at", ">", "yesterday"),
        ("created_at", ">", datetime(2026, 1, 1)),
        ("id", "==", "not-a-uuid"),
        ("config", "==", {"a": 1}),
        ("lock_version", "==", True),
        ("lock_version", "==", 2**70),
        ("", "==", 1),
    ],
)
def test_bad_specs_are_invalid_input(store: Store, field: str, op: str, value: object) -> None:
    with store.unit_of_work() as uow, pytest.raises(InvalidInputError):
        uow.deployments.list(where(field, op, value))


def test_cost_refuses_nan_and_bool(store: Store) -> None:
    with store.unit_of_work() as uow:
        for bad in (float("nan"), float("inf"), True, "1.5"):
            with pytest.raises(InvalidInputError):
                uow.inference_requests.count(where("cost", ">", bad))


def test_specs_combine_only_with_specs() -> None:
    with pytest.raises(InvalidInputError):
        where("name", "==", "a") & "name = 'a'"  # type: ignore[operator]
    spec = ~(where("name", "==", "a") | where("version", "in", ["1"]))
    assert "where('name', '==', 'a')" in repr(spec)


def test_ids_in_specs(store: Store) -> None:
    with store.unit_of_work() as uow:
        t = uow.templates.add(Template(name="x", provider_type="p"))
    with store.unit_of_work() as uow:
        assert uow.templates.list(where("id", "==", str(t.id)))[0].id == t.id
        assert uow.templates.list(where("id", "in", [t.id, uuid.uuid4()]))[0].id == t.id


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


class _Big(enum.IntEnum):
    SMALL = 7
    HUGE = 2**64


@pytest.mark.parametrize(
    "value",
    [
        {"status": DeploymentStatus.RUNNING, "n": _Big.SMALL, "ok": True, "none": None},
        collections.OrderedDict(a=[1, 2.5, "ü"], b=(1, 2)),
        {"deep": {"er": {"est": ["x", {"k": -(2**63)}]}}},
        ["plain", 2**63 - 1, 1.5e300],
    ],
)
def test_check_json_accepts_json_values_and_their_subclasses(value: object) -> None:
    check_json("config", value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": "x\x00y"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"a": "\ud800"}, "Unicode"),
        ({"a": DeploymentStatus("running"), "b": _Big.HUGE}, "64 bits"),
        ({"a": 2**63}, "64 bits"),
        ({"a": float("nan")}, "finite"),
        ({1: "a"}, "keys must be strings"),
        ({"a": {1, 2}}, "set is not a JSON value"),
        ({"a": b"bytes"}, "bytes is not a JSON value"),
        (_nested(70), "nested deeper"),
    ],
)
def test_check_json_refuses_what_a_backend_would_not_store(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_json("config", value)


def test_check_json_takes_text_subclasses_as_keys() -> None:
    check_json("config", {DeploymentStatus.RUNNING: 1, "plain": {DeploymentStatus.FAILED: "x"}})
    with pytest.raises(InvalidInputError, match="NUL"):
        check_json("config", collections.OrderedDict({"a\x00": 1}))
