"""The coarse-to-fine schedule of the exhaustive pose search (Fortun et al. 2018 sec. V-A-4):
the whole of SO(3)/Cn at 20 degrees, then +-10 degrees at 5 around the current rotation,
then +-5 at 1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SearchStage:
    """One stage of the coarse-to-fine exhaustive rotation search.

    Attributes
    ----------
    step_deg : float
        Angular step of the rotation grid, degrees (> 0).
    range_deg : float or None
        Largest rotation tried around the current one, degrees (the local lattice of
        :func:`~spfluo.algorithms.geometry.local_rotation_grid`); None searches the whole
        of SO(3)/Cn (:func:`~spfluo.algorithms.geometry.uniform_rotation_grid`).
    """

    step_deg: float
    range_deg: float | None = None

    def __post_init__(self):
        s = self.step_deg
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) \
                or not math.isfinite(s) or not 0 < s <= 90:
            raise ValueError(f"step_deg must be a number of degrees in (0, 90], got {s!r}")
        r = self.range_deg
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(r) or not 0 < r <= 180:
                raise ValueError(
                    f"range_deg must be None (whole rotation space) or a number of degrees in "
                    f"(0, 180], got {r!r}"
                )
        object.__setattr__(self, "step_deg", float(s))
        object.__setattr__(self, "range_deg", None if r is None else float(r))

    @property
    def is_global(self) -> bool:
        return self.range_deg is None


#: Fortun et al. 2018 sec. V-A-4: whole space at 20 degrees, then +-10 at 5, then +-5 at 1.
DEFAULT_SCHEDULE = (SearchStage(20.0, None), SearchStage(5.0, 10.0), SearchStage(1.0, 5.0))


def as_schedule(schedule) -> tuple[SearchStage, ...]:
    try:
        items = list(schedule)
    except TypeError:
        raise ValueError(
            f"schedule must be a sequence of (step_deg, range_deg) pairs, got {schedule!r}"
        ) from None
    stages = []
    for item in items:
        if isinstance(item, SearchStage):
            stages.append(item)
            continue
        try:
            step, rng = item
        except (TypeError, ValueError):
            raise ValueError(
                f"each schedule stage must be (step_deg, range_deg) with range_deg None for the "
                f"whole rotation space, got {item!r}"
            ) from None
        stages.append(SearchStage(step, rng))
    return tuple(stages)
