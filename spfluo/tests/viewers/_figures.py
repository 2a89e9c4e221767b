"""Checks shared by the figure tests: a figure renders to PNG, its artists found by gid.

The figure functions tag the artists that carry numbers with a gid (``set_gid``); the tests
find them by that gid and read their data.
"""

import io

__all__ = ["PNG_SIGNATURE", "render_png", "gid_artists"]

#: The first 8 bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render_png(fig) -> bytes:
    """Render ``fig`` headless to PNG bytes (40 dpi), asserting that a PNG came out."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    data = buf.getvalue()
    assert data[:8] == PNG_SIGNATURE
    return data


def gid_artists(fig, gid, kind="lines") -> list:
    """The artists of ``kind`` whose gid is ``gid``, over the axes of ``fig`` in order.

    ``kind`` names an Axes artist list: ``"lines"``, ``"patches"``, ``"images"`` or
    ``"collections"``.
    """
    return [a for ax in fig.axes for a in getattr(ax, kind) if a.get_gid() == gid]
