"""Command-line values: ``key=value`` parameters (``spfluo run``, ``spfluo queue run``) and
bounded integers (the maxima of :mod:`spfluo.algorithms.limits`)."""

from __future__ import annotations

import argparse

__all__ = ["parse_key_values", "bounded_int"]


def parse_key_values(pairs: list[str]) -> dict:
    """``{"key": "value"}`` from ``["key=value", ...]``.

    The key is stripped of spaces; the value is kept as written (it may hold ``=``) and
    stays a string (the protocol's parameter converts it).  A pair without ``=`` or
    without a key ends the command with a one-line message (``SystemExit``).
    """
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"spfluo: expected key=value, got {pair!r}")
        values[key.strip()] = value
    return values


def bounded_int(minimum: int, maximum: int):
    """An argparse type: an integer from ``minimum`` to ``maximum`` (:mod:`spfluo.algorithms.limits`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, got {value}")
        return value

    return parse
