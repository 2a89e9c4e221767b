"""spfluo: single particle reconstruction in 3D fluorescence microscopy.

A Scipion plugin on the ``scipion-pyworkflow`` engine.  The numerical core
(``spfluo.algorithms``, ``spfluo.io``) is a plain library that never imports
pyworkflow; the plugin classes ``Domain`` and ``Plugin`` (in ``spfluo.plugin``)
are loaded lazily the first time pyworkflow asks this module for them, so
``import spfluo`` has no side effect.
"""

__version__ = "0.1.0"

__all__ = ["Domain", "Plugin", "__version__"]


def __getattr__(name):
    # pyworkflow's plugin discovery reads ``spfluo.Plugin`` and ``spfluo.Domain``.
    if name in ("Domain", "Plugin"):
        from . import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module 'spfluo' has no attribute {name!r}")
