"""The paper's eight named methods: which of KD, IG overlay and attention transfer each one uses."""

from __future__ import annotations

from igkd.errors import IgkdError

METHODS: dict[str, tuple[bool, bool, bool]] = {
    # name: (kd, ig, at)
    "Student": (False, False, False),
    "KD": (True, False, False),
    "IG": (False, True, False),
    "AT": (False, False, True),
    "KD_IG": (True, True, False),
    "KD_AT": (True, False, True),
    "IG_AT": (False, True, True),
    "KD_IG_AT": (True, True, True),
}


def method_flags(name: str) -> tuple[bool, bool, bool]:
    """(use_kd, use_ig, use_at) for a method name, case-insensitive."""
    for key, flags in METHODS.items():
        if key.lower() == name.lower():
            return flags
    raise IgkdError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")


def canonical_method(name: str) -> str:
    """The method's canonical spelling (e.g. 'kd_ig' -> 'KD_IG')."""
    method_flags(name)
    return next(key for key in METHODS if key.lower() == name.lower())
