"""The pyworkflow ``Domain`` and ``Plugin`` of spfluo (re-exported lazily by ``spfluo``).

pyworkflow discovers the plugin through the ``pyworkflow.plugin`` entry point,
imports ``spfluo``, instantiates ``spfluo.Plugin`` and collects protocols from
``spfluo.protocols``, objects from ``spfluo.objects`` and viewers from
``spfluo.viewers``.
"""

import os

import pyworkflow.plugin as pwplugin
from pyworkflow.protocol import Protocol
from pyworkflow.viewer import Viewer
from pyworkflow.wizard import Wizard

from .constants import DOMAIN_NAME
from .objects import FluoObject

__all__ = ["Domain", "Plugin"]


class Domain(pwplugin.Domain):
    """The fluorescence single particle domain."""

    _name = DOMAIN_NAME
    _objectClass = FluoObject
    _protocolClass = Protocol
    _viewerClass = Viewer
    _wizardClass = Wizard
    _baseClasses = {}


class Plugin(pwplugin.Plugin):
    """spfluo needs no external binary: every step runs ``python -m spfluo.jobs``."""

    _url = "https://github.com/spfluo/scipion-fluo-spfluo"

    @classmethod
    def _defineVariables(cls):
        pass

    # pyworkflow derives the name and folder from the module defining this class;
    # it lives in spfluo.plugin (so that ``import spfluo`` stays free of pyworkflow),
    # hence both are given explicitly.
    def getName(self):
        return DOMAIN_NAME

    def getPath(self):
        return os.path.dirname(os.path.abspath(__file__))

    @classmethod
    def getEnviron(cls):
        """Jobs inherit the protocol's environment (None = ``os.environ``)."""
        return None
