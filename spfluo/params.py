"""``key=value`` parameters given on the command line (``spfluo run``, ``spfluo queue run``)."""

from __future__ import annotations

__all__ = ["parse_key_values"]


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
