"""Attaching objects whose rows were just inserted to their session, as a flush leaves them:
the one module of flowstore that sets ORM internals (``Session._autobegin_t``, the
transaction's ``_new``, ``InstanceState._commit_all_states``, ``state.key``, ``session_id``).

:func:`register_inserted` makes new objects persistent in one pass: attached, in the identity
map, unmodified, and recorded in the transaction, so that a rollback turns them back into
transient objects (their values kept), as after a flush that is rolled back.

Whether it does so on the installed SQLAlchemy is not read from attribute names: the first
time it is needed, :func:`private_route` tries it on an object of a throwaway model in a
session without a database and checks what came of it with public APIs only (:func:`probe`).
If the probe raises or finds anything a flush would leave otherwise, the fast write path is
not taken and every batch goes through the public fallback, the ordinary flush
(``Repository.add_many`` adds the objects and flushes); this is logged once, at INFO.
``tests/test_sa_contract.py`` runs the probe on the installed release, so a SQLAlchemy that
changes what it relies on fails there, loudly, rather than only slowing ``add_many`` down.

Why not ``make_transient_to_detached`` and ``Session.add_all``, public both: the objects are
then persistent, but a rollback leaves them persistent and expired (their values gone, a
read looks for a row that was never committed) where a flushed object becomes transient
again, values kept. Matching that would need transaction bookkeeping of our own; the flush
is the faithful public route.

What the private route is worth (``scripts/bench_bulk_fallback.py``: ``add_many`` of 5,000
deployments and the commit, in-memory SQLite, median of five runs): 68 µs per object with it,
108 to 127 µs by the flush fallback, 1.6x to 1.8x (three runs on 2026-12-03, a 2-core machine
under a load of about 2; an earlier, quieter run gave 67 and 126 µs, 1.9x).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, inspect
from sqlalchemy.orm import Mapper, Session, registry
from sqlalchemy.orm.state import InstanceState

__all__ = ["private_route", "probe", "register_inserted"]

log = logging.getLogger(__name__)


def register_inserted(
    session: Session,
    identity_class: type[Any],
    primary_key: tuple[str, ...],
    states: list[Any],
    dicts: list[dict[str, Any]],
) -> None:
    """Make ``states`` (new objects whose rows were just inserted, ``dicts`` their values)
    persistent in ``session`` as a flush does (``Session._save_impl`` then
    ``_register_persistent``), in one pass: attached, in the identity map, unmodified, and
    recorded in the transaction, so that a rollback turns them back into transient objects.
    It fires none of the lifecycle events a flush would (``add_many`` checks that none listen).
    Call it only when :func:`private_route` says so."""
    transaction = session._autobegin_t()
    created = transaction._new
    identity_map = session.identity_map
    hash_key = session.hash_key
    single = primary_key[0] if len(primary_key) == 1 else None
    for state, values in zip(states, dicts, strict=True):
        ident = (values[single],) if single else tuple(values[key] for key in primary_key)
        state.session_id = hash_key
        state.key = (identity_class, ident, None)
        identity_map.replace(state)
        created[state] = True
    InstanceState._commit_all_states(zip(states, dicts, strict=True), identity_map)


class _Probe:
    """The throwaway model of :func:`probe` (mapped in a registry of its own)."""

    id: int
    name: str | None


def probe() -> str | None:
    """Run :func:`register_inserted` on a new object in a session with no database and check
    the outcome with public APIs; ``None`` when it is what a flush leaves, else what differs.
    It may raise (an internal gone)."""
    private = registry()
    table = Table(
        "flowstore_probe",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(20)),
    )
    cls = type("FlowstoreProbe", (_Probe,), {})
    try:
        mapper: Mapper[Any] = private.map_imperatively(cls, table)
        session = Session()  # no bind: any SQL the probe caused would raise
        try:
            return _disagreement(session, mapper, cls)
        finally:
            session.close()
    finally:
        private.dispose()


def _disagreement(session: Session, mapper: Mapper[Any], cls: type[Any]) -> str | None:
    obj: Any = cls()
    obj.id, obj.name = 1, "x"
    state = inspect(obj)
    key = mapper.identity_key_from_primary_key((1,))
    register_inserted(session, key[0], ("id",), [state], [state.dict])
    if not state.persistent or state.identity_key != key:
        return "the object is not persistent under its identity key"
    if session.identity_map.get(key) is not obj or session.get(cls, 1) is not obj:
        return "the object is not in the identity map"
    if obj in session.new or obj in session.dirty or state.modified:
        return "the object counts as new or changed: a flush would write it again"
    if state.attrs.name.history.has_changes():
        return "the object's attributes have pending changes"
    session.flush()  # nothing to write (with no bind, anything to write would raise)
    session.rollback()
    if not state.transient or session.identity_map.get(key) is not None:
        return "after a rollback the object is not transient again"
    if (state.dict.get("id"), state.dict.get("name")) != (1, "x"):
        return "after a rollback the object lost its values"
    return None


@functools.cache
def private_route() -> bool:
    """Whether :func:`register_inserted` does what a flush does on this SQLAlchemy (probed
    once, on first use); ``False`` sends every ``add_many`` through the ordinary flush."""
    try:
        problem = probe()
    except Exception as error:  # an internal renamed or changed: the public route
        problem = f"{type(error).__name__}: {error}"
    if problem is None:
        return True
    log.info(
        "add_many takes the ordinary flush: the fast path's attach step does not work on "
        "this SQLAlchemy (%s)",
        problem,
    )
    return False
