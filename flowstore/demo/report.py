"""The printed report: numbered steps, indented lines, and how values are shown in them."""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

SHOWN_KEY_CHARS = 7


class Report:
    """Numbered steps with indented lines, written as the story goes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        print(f"\n{self.number}. {title}", file=self.out)

    def line(self, text: str) -> None:
        print(f"   {text}", file=self.out)


def mask_key(raw_key: str) -> str:
    """The first few characters of an API key, enough to recognise it, never enough to use it."""
    return raw_key[:SHOWN_KEY_CHARS] + "…"


def short(value: Any) -> str:
    """The last eight characters of an id: enough to tell rows apart in the report."""
    return str(value)[-8:]


def counts(counts: dict[str, int] | Counter[str]) -> str:
    """``name n, name n`` sorted by name, or ``none``."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
