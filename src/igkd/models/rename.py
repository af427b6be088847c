"""Ordered key-prefix rewrites (``OLD=NEW``) that map a foreign state dict's module names onto a model's.

Each rule is applied in turn to every key, so rules compose: ``module.=`` strips DataParallel's prefix, then
``stage1.0.=features.1.`` moves a block out of a differently named container.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from igkd.errors import IgkdError

T = TypeVar("T")


def parse_rename_rules(rules: Iterable[str]) -> list[tuple[str, str]]:
    """``["model.=", "stage1.=features.1."]`` as (old, new) prefix pairs; a rule without '=' or with an empty OLD is an error."""
    parsed = []
    for rule in rules:
        old, sep, new = str(rule).partition("=")
        if not sep or not old:
            raise IgkdError(f"rename rule '{rule}' is not OLD=NEW with a non-empty OLD prefix (e.g. 'module.=' or 'backbone.=features.')")
        parsed.append((old, new))
    return parsed


def rename_key(key: str, rules: list[tuple[str, str]]) -> str:
    """``key`` after every rule, in order (a rule rewrites the key when the key starts with its OLD)."""
    for old, new in rules:
        if key.startswith(old):
            key = new + key[len(old) :]
    return key


def rename_keys(state_dict: Mapping[str, T], rules: Iterable[str]) -> dict[str, T]:
    """The state dict with renamed keys; two keys renamed onto one is an error naming both."""
    parsed = parse_rename_rules(rules)
    renamed: dict[str, T] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        new = rename_key(key, parsed)
        if new in renamed:
            raise IgkdError(f"rename rules map both '{origin[new]}' and '{key}' to '{new}'; make the rules more specific")
        renamed[new], origin[new] = value, key
    return renamed
