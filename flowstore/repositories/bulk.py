"""The fast path of ``Repository.add_many`` (and ``add``'s one-row INSERT): one driver call
writes the whole batch.

An ORM flush spends most of its time on per-object bookkeeping (and, without client-side
primary keys, on RETURNING round trips). For a batch of new objects of one plain model,
:func:`insert_many` does what the flush would, in bulk, with the steps of ``flowstore.writes``:
the model's plan (``writes.plan``: which columns, which defaults, from the public mapping);
one pass over the objects that checks their values and fills the column defaults in Python
(``writes.rows``: ids, timestamps, ``lock_version``); one driver call (``writes.send``:
``COPY`` on PostgreSQL with psycopg, an executemany of a positional ``INSERT`` elsewhere,
Core's ``insert()`` for drivers with named parameters only); and the objects made persistent
exactly as a flush does (``writes.attach``), so they sit in the identity map, update and
delete with their version checks, and go back to transient if the transaction is rolled
back.

Models, sessions or batches it cannot handle faithfully (relationships, inheritance,
server-side defaults, flush or insert event listeners, objects that are not new, a SQLAlchemy
on which the attach step does not work) are left to the ordinary flush: :func:`insert_many`
returns ``False`` before doing anything. Generated columns (``Computed``) are left out of the
INSERT and expired on the objects, so they are loaded when first read, as after a flush.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state

from flowstore.models.mutable_json import tracked
from flowstore.read_only import READ_ONLY
from flowstore.repositories.changes import record_inserted
from flowstore.writes import attach
from flowstore.writes.guard import savepoint
from flowstore.writes.plan import plan_for
from flowstore.writes.rows import fill, take_back
from flowstore.writes.send import send

__all__ = ["insert_many"]


def _events_in_the_way(session: Session, mapper: Mapper[Any]) -> bool:
    """Whether listeners expect a flush, or the steps of one (they would not run here).
    flowstore's own change recording is not in the way: ``Repository.add_many`` records the
    batch itself (its listeners carry ``flowstore_bulk_aware``)."""
    events = session.dispatch
    mapper_events = mapper.dispatch
    return any(
        not getattr(listener, "flowstore_bulk_aware", False)
        for listeners in (
            events.before_flush,
            events.after_flush,
            events.after_flush_postexec,
            events.before_attach,
            events.after_attach,
            events.transient_to_pending,
            events.pending_to_persistent,
            mapper_events.before_insert,
            mapper_events.after_insert,
        )
        for listener in listeners
    )


def insert_many(
    session: Session, model: type[Any], entities: Sequence[Any], *, guard: str = "savepoint"
) -> bool:
    """Check ``entities`` (new ``model`` objects), write them in one driver call inside a
    SAVEPOINT, make them persistent in ``session`` and record their change events; ``False``
    (nothing done, nothing checked) when the ordinary flush must do it. A bad value
    (``InvalidInputError``) or a database error leaves the objects as they were given and
    writes nothing.

    ``guard="none"`` sends no SAVEPOINT, for a backend that rolls back a failed statement
    alone (``flowstore.repositories.savepoints``)."""
    plan = plan_for(model)  # type: ignore[arg-type]
    if plan is None or session.info.get(READ_ONLY) or not attach.private_route():
        return False  # (read-only: the flush refuses the objects, flowstore.read_only)
    mapper: Mapper[Any] = sa_inspect(model)
    if _events_in_the_way(session, mapper):
        return False
    states = list({id(entity): instance_state(entity) for entity in entities}.values())
    if not all(state.transient for state in states):
        return False  # not new: the flush knows what to do with it
    for key in plan.given_keys:  # an autoincrement key: only the database knows it
        if any(state.dict.get(key) is None for state in states):
            return False
    for key in plan.computed:  # a value given for a generated column: the flush says no
        if any(key in state.dict for state in states):
            return False
    dicts = [state.dict for state in states]  # the objects' own: also the INSERT parameters
    filled = fill(plan, dicts, plan.first_version())
    try:
        session.flush()  # earlier pending work goes first, as before any SAVEPOINT
        connection = session.connection(bind_arguments={"mapper": mapper})  # the model's bind
        if guard == "none":
            send(connection, plan, model, dicts)
        else:
            with savepoint(connection):  # a bare SAVEPOINT: the ORM keeps no snapshot
                send(connection, plan, model, dicts)
    except BaseException:
        take_back(plan, dicts, filled)
        raise
    attach.register_inserted(session, plan.identity_class, plan.primary_key, states, dicts)
    if plan.computed:
        for entity in entities:
            session.expire(entity, plan.computed)
    for key in plan.json_attributes:  # a default filled in above is a plain container
        for state, values in zip(states, dicts, strict=True):
            value = values[key]
            if type(value) is dict or type(value) is list:
                values[key] = tracked(value, state, key)
    record_inserted(session, model, entities)  # their change events: no flush saw them
    return True
