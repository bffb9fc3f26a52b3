"""JSON values that remember being changed in place, nested values included.

``deployment.config["replicas"] = 5`` changes a dict the ORM holds by reference: without help
the session never learns of it and the change is lost at commit. Every JSON attribute of a
model on ``flowstore.models.Base`` therefore holds :class:`TrackedDict` / :class:`TrackedList`
values (plain ``dict`` / ``list`` subclasses, so ``==``, ``json.dumps`` and ``isinstance``
behave as before). A change anywhere inside one, however deep, marks the attribute modified
on every object that holds it, so the next flush writes it (and bumps ``lock_version``).

Values are converted when they are set on an object, loaded, or refreshed, with SQLAlchemy's
public attribute and instance events; models on other declarative bases are left alone. The
conversion copies the containers once (``d.config = cfg`` stores a tracked copy: later changes
to ``cfg`` itself are not seen). Tuples are stored as they are and not tracked inside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, SupportsIndex

from sqlalchemy import event
from sqlalchemy.orm import InstanceState
from sqlalchemy.orm.attributes import QueryableAttribute, flag_modified

__all__ = ["TrackedDict", "TrackedList", "track", "tracked"]


class _Anchor:
    """The object attribute that holds one tracked value; shared by the value and every
    container nested in it. Each value has one owner: assigning a tracked value to another
    attribute stores a copy.

    The owner is held strongly: ``uow.deployments.get(i).config["x"] = 1`` changes a value
    whose object nothing else holds (the session's identity map holds unmodified objects
    weakly), and the change must still reach it. The reference cycle this makes (object,
    value, anchor) is collected with the object.
    """

    __slots__ = ("key", "target")

    def __init__(self, state: InstanceState[Any], key: str) -> None:
        self.target: object | None = state.obj()
        self.key = key

    def owned_by(self, state: InstanceState[Any], key: str) -> bool:
        return self.key == key and self.target is not None and self.target is state.obj()

    def release(self) -> None:
        """The value was replaced: its changes no longer concern the object."""
        self.target = None

    def changed(self) -> None:
        if self.target is not None:
            flag_modified(self.target, self.key)


_CONTAINERS = (dict, list)


def _wrap(value: Any, anchor: _Anchor) -> Any:
    """``value`` with its dicts and lists made tracked containers of ``anchor``'s value (a
    tracked container of another value is copied: two values never share one)."""
    kind = type(value)
    if kind is dict:
        return TrackedDict._make(value, anchor)
    if kind is list:
        return TrackedList._make(value, anchor)
    if kind is TrackedDict or kind is TrackedList:
        return value if value._anchor is anchor else kind._make(value, anchor)
    if isinstance(value, dict):
        return TrackedDict._make(value, anchor)
    if isinstance(value, list):
        return TrackedList._make(value, anchor)
    return value


class TrackedDict(dict[str, Any]):
    """A JSON object whose in-place changes mark its owners modified."""

    __slots__ = ("_anchor",)
    _anchor: _Anchor

    @classmethod
    def _make(cls, items: Any, anchor: _Anchor) -> TrackedDict:
        made = cls(items)  # one copy in C; then only the containers inside are replaced
        made._anchor = anchor
        for key, value in made.items():
            if isinstance(value, _CONTAINERS):
                dict.__setitem__(made, key, _wrap(value, anchor))  # same key: no resize
        return made

    def __reduce__(self) -> tuple[Any, ...]:  # a copy or a pickle is a plain dict
        return (dict, (dict(self),))

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, _wrap(value, self._anchor))
        self._anchor.changed()

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self._anchor.changed()

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        dict.clear(self)
        self._anchor.changed()

    def pop(self, key: str, *default: Any) -> Any:
        found = dict.pop(self, key, *default)
        self._anchor.changed()
        return found

    def popitem(self) -> tuple[str, Any]:
        item = dict.popitem(self)
        self._anchor.changed()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *others: Any, **more: Any) -> None:
        staged: dict[str, Any] = {}
        staged.update(*others, **more)
        anchor = self._anchor
        dict.update(self, ((key, _wrap(value, anchor)) for key, value in staged.items()))
        anchor.changed()


class TrackedList(list[Any]):
    """A JSON array whose in-place changes mark its owners modified."""

    __slots__ = ("_anchor",)
    _anchor: _Anchor

    @classmethod
    def _make(cls, items: Iterable[Any], anchor: _Anchor) -> TrackedList:
        made = cls(items)
        made._anchor = anchor
        for index, value in enumerate(made):
            if isinstance(value, _CONTAINERS):
                list.__setitem__(made, index, _wrap(value, anchor))
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def _changed(self) -> None:
        self._anchor.changed()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = [_wrap(item, self._anchor) for item in value]
        else:
            value = _wrap(value, self._anchor)
        list.__setitem__(self, index, value)
        self._changed()

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        list.__delitem__(self, index)
        self._changed()

    def __iadd__(self, other: Iterable[Any]) -> TrackedList:  # type: ignore[misc]
        self.extend(other)
        return self

    def __imul__(self, times: SupportsIndex) -> TrackedList:
        list.__imul__(self, times)
        self._changed()
        return self

    def append(self, value: Any) -> None:
        list.append(self, _wrap(value, self._anchor))
        self._changed()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, [_wrap(value, self._anchor) for value in values])
        self._changed()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        list.insert(self, index, _wrap(value, self._anchor))
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> Any:
        found = list.pop(self, index)
        self._changed()
        return found

    def remove(self, value: Any) -> None:
        list.remove(self, value)
        self._changed()

    def clear(self) -> None:
        list.clear(self)
        self._changed()

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        list.sort(self, key=key, reverse=reverse)
        self._changed()

    def reverse(self) -> None:
        list.reverse(self)
        self._changed()


def tracked(value: Any, state: InstanceState[Any], key: str) -> Any:
    """``value`` as the tracked value of ``state``'s attribute ``key``; a value that is not a
    container is returned as it is, a container tracked for another attribute is copied."""
    kind = type(value)
    if kind is TrackedDict or kind is TrackedList:
        if value._anchor.owned_by(state, key):
            return value
    elif not isinstance(value, _CONTAINERS):
        return value
    return _wrap(value, _Anchor(state, key))


def track(attribute: QueryableAttribute[Any]) -> None:
    """Make the mapped JSON ``attribute`` hold tracked values (on load, refresh and set)."""
    key = attribute.key
    parent = attribute.class_

    def on_load(state: InstanceState[Any], *_args: Any) -> None:
        value = state.dict.get(key)
        if value is not None:
            state.dict[key] = tracked(value, state, key)

    def on_refresh(state: InstanceState[Any], _context: Any, attrs: Iterable[str] | None) -> None:
        if attrs is None or key in attrs:
            on_load(state)

    def on_set(state: InstanceState[Any], value: Any, old: Any, _initiator: Any) -> Any:
        if value is old:
            return value
        old_anchor = getattr(old, "_anchor", None)
        if old_anchor is not None and old_anchor.owned_by(state, key):
            old_anchor.release()
        return tracked(value, state, key) if value is not None else value

    event.listen(parent, "load", on_load, raw=True, propagate=True)
    event.listen(parent, "refresh", on_refresh, raw=True, propagate=True)
    event.listen(parent, "refresh_flush", on_refresh, raw=True, propagate=True)
    event.listen(parent, "unpickle", on_load, raw=True, propagate=True)
    event.listen(attribute, "set", on_set, raw=True, retval=True, propagate=True)
