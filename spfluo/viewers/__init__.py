"""Viewers: plain matplotlib figure functions and the pyworkflow Viewer that shows them.

Importing this package registers every figure maker (modules ``*_figures``)
before the Viewer class reads the registry.
"""

from . import object_figures  # noqa: F401  (registers figure makers)
from . import abinitio_figures  # noqa: F401
from . import metrics_figures  # noqa: F401
from . import picking_figures  # noqa: F401
from . import reconstruction_figures  # noqa: F401
from . import refine_figures  # noqa: F401
from .registry import figures_for
from .viewer import SpfluoViewer

__all__ = ["SpfluoViewer", "figures_for"]
