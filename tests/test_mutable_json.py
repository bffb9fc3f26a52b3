"""JSON values changed in place, nested values included, are saved at commit, with or without
``update()``, on flowstore's models and a service's, on every backend."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from flowstore import Store
from flowstore.models import Deployment, Organization, TrackedDict, TrackedList
from tests.service_app import AcmeUnitOfWork, Project

EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "top-level set": lambda c: c.__setitem__("replicas", 5),
    "nested set": lambda c: c["nested"].__setitem__("depth", 2),
    "list append": lambda c: c["ports"].append(9090),
    "list in dict in list": lambda c: c["rules"][0]["hosts"].append("b"),
    "pop": lambda c: c.pop("replicas"),
    "del nested": lambda c: c["nested"].__delitem__("depth"),
    "setdefault": lambda c: c.setdefault("new", {}).__setitem__("x", 1),
    "update": lambda c: c.update({"replicas": 7, "extra": [1]}),
    "list extend": lambda c: c["ports"].extend([1, 2]),
    "list insert": lambda c: c["ports"].insert(0, 1),
    "list remove": lambda c: c["ports"].remove(8080),
    "list sort": lambda c: c["ports"].sort(reverse=True),
    "list slice": lambda c: c["ports"].__setitem__(slice(0, 1), [1, 2, 3]),
    "list clear": lambda c: c["ports"].clear(),
    "dict clear": lambda c: c["nested"].clear(),
    "iadd": lambda c: c["ports"].__iadd__([7]),
}


def initial() -> dict[str, Any]:
    return {
        "replicas": 2,
        "nested": {"depth": 1},
        "ports": [8080, 8081],
        "rules": [{"hosts": ["a"]}],
    }


def expected_after(name: str) -> dict[str, Any]:
    plain = initial()
    EDITS[name](plain)
    return plain


@pytest.mark.parametrize("name", sorted(EDITS))
@pytest.mark.parametrize("call_update", [True, False])
def test_an_in_place_edit_is_saved(store: Store, name: str, call_update: bool) -> None:
    with store.unit_of_work() as uow:
        ident = uow.deployments.add(Deployment(name="web", version="1", config=initial())).id
    with store.unit_of_work() as uow:
        deployment = uow.deployments.get(ident)
        EDITS[name](deployment.config)
        if call_update:
            uow.deployments.update(deployment)
    with store.unit_of_work() as uow:
        stored = uow.deployments.get(ident)
        assert stored.config == expected_after(name)
        assert stored.lock_version == 2  # a change, and its optimistic-lock check


def test_an_edit_of_a_detached_entity_is_saved_by_update(store: Store) -> None:
    with store.unit_of_work() as uow:
        deployment = uow.deployments.add(Deployment(name="web", version="1", config=initial()))
    deployment.config["rules"][0]["hosts"].append("z")  # after its unit of work ended
    with store.unit_of_work() as uow:
        uow.deployments.update(deployment)
    with store.unit_of_work() as uow:
        assert uow.deployments.get(deployment.id).config["rules"][0]["hosts"] == ["a", "z"]


def test_edits_after_add_and_add_many_are_saved(store: Store) -> None:
    with store.unit_of_work() as uow:
        one = uow.deployments.add(Deployment(name="one", version="1"))  # a defaulted {}
        many = uow.deployments.add_many(
            [Deployment(name=f"m{i}", version="1") for i in range(3)]
            + [Deployment(name="given", version="1", config={"a": [1]})]
        )
        one.config["x"] = 1
        many[0].config["y"] = {"z": 1}
        many[-1].config["a"].append(2)
    with store.unit_of_work() as uow:
        assert uow.deployments.get(one.id).config == {"x": 1}
        assert uow.deployments.get(many[0].id).config == {"y": {"z": 1}}
        assert uow.deployments.get(many[-1].id).config == {"a": [1, 2]}


def test_a_services_json_column_is_tracked_too(acme_store: Store[AcmeUnitOfWork]) -> None:
    with acme_store.unit_of_work() as uow:
        owner = uow.organizations.add(Organization(name="A", slug="a")).id
        ident = uow.projects.add(
            Project(org_id=owner, name="p", slug="p", settings={"flags": {"beta": False}})
        ).id
    with acme_store.unit_of_work() as uow:
        uow.projects.get(ident).settings["flags"]["beta"] = True
    with acme_store.unit_of_work() as uow:
        assert uow.projects.get(ident).settings == {"flags": {"beta": True}}


def test_a_value_taken_from_one_entity_is_copied_into_another(store: Store) -> None:
    with store.unit_of_work() as uow:
        first = uow.deployments.add(Deployment(name="a", version="1", config={"k": [1]}))
        second = uow.deployments.add(Deployment(name="b", version="1"))
        second.config = first.config  # a copy: later edits of one do not touch the other
        second.config["k"].append(2)
    with store.unit_of_work() as uow:
        assert uow.deployments.get(first.id).config == {"k": [1]}
        assert uow.deployments.get(second.id).config == {"k": [1, 2]}


def test_tracked_values_behave_as_plain_json() -> None:
    with Store() as store, store.unit_of_work() as uow:
        config = uow.deployments.add(Deployment(name="a", version="1", config=initial())).config
        assert isinstance(config, TrackedDict) and isinstance(config["ports"], TrackedList)
        assert config == initial() and json.loads(json.dumps(config)) == initial()
        assert type(copy.deepcopy(config)) is dict
        assert type(pickle.loads(pickle.dumps(config))) is dict
        assert type(copy.copy(config["ports"])) is list
