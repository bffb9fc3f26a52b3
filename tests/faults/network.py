"""Cutting a server off with iptables: every packet to or from its port is dropped (DROP, not
REJECT: the peer hears nothing, as in a real partition), so nothing else is touched.

Rules go into the INPUT chain, which loopback traffic crosses in both directions; dropping in
OUTPUT would fail the sender's ``send()`` at once (EPERM), which is not what a partition does.
Each rule carries a comment naming the suite, so a rule left by a killed run can be found.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

COMMENT = "flowstore-fault-suite"


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", "5", *args], check=True, capture_output=True, timeout=30)


def _rule(port: int, direction: str) -> list[str]:
    return ["INPUT", "-p", "tcp", direction, str(port), "-m", "comment", "--comment", COMMENT,
            "-j", "DROP"]  # fmt: skip


#: The rules this process put in place and has not removed yet.
ACTIVE: list[list[str]] = []


def drop(port: int, *, replies_only: bool = False) -> list[list[str]]:
    """Drop the packets of ``port`` (only the server's replies, with ``replies_only``); the
    rules, for ``restore``."""
    directions = ("--sport",) if replies_only else ("--dport", "--sport")
    rules = [_rule(port, direction) for direction in directions]
    for rule in rules:
        _iptables("-I", *rule)
        ACTIVE.append(rule)
    return rules


def restore(rules: list[list[str]]) -> None:
    for rule in rules:
        _iptables("-D", *rule)
        ACTIVE.remove(rule)


@contextmanager
def cut_off(port: int) -> Iterator[None]:
    """The server on ``port`` is unreachable inside the block; reachable again after it."""
    rules = drop(port)
    try:
        yield
    finally:
        restore(rules)


def remove_leftovers() -> list[list[str]]:
    """Remove the rules this process left in place (none, after a clean run); which they were."""
    left = list(ACTIVE)
    restore(left)
    return left
