"""The plugin registers every protocol, object and viewer; the library stays pyworkflow-free."""

import configparser
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys

import pytest


def _spfluo_protocol_classes():
    """Every Protocol subclass with a label defined anywhere in spfluo/protocols/."""
    import pyworkflow.protocol as pwprot

    import spfluo.protocols as pkg

    found = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"spfluo.protocols.{mod.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, pwprot.Protocol) and cls.__module__ == module.__name__
                    and cls.__dict__.get("_label")):
                found[name] = cls
    return found


def test_import_spfluo_library_has_no_pyworkflow():
    code = ("import sys, spfluo, spfluo.io, spfluo.jobs; "
            "import spfluo.algorithms.backend, spfluo.algorithms.geometry; "
            "print('pyworkflow' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_domain_lists_every_protocol():
    import pyworkflow as pw

    domain = pw.Config.getDomain()
    protocols = domain.getProtocols()
    expected = _spfluo_protocol_classes()
    assert expected, "no protocol found in spfluo/protocols"
    missing = sorted(set(expected) - set(protocols))
    assert not missing, f"protocols not exported by spfluo.protocols: {missing}"
    for name, cls in expected.items():
        assert protocols[name] is cls
        assert cls._plugin is not None and cls._plugin.getName() == "spfluo"


def test_domain_lists_every_object_and_viewer():
    import pyworkflow as pw
    import pyworkflow.object as pwobj

    import spfluo.objects as objects

    domain = pw.Config.getDomain()
    registered = domain.getObjects()
    for name in objects.__all__:
        cls = getattr(objects, name)
        if issubclass(cls, pwobj.Object):
            assert registered.get(name) is cls, name
    viewers = domain.getViewers()
    assert "SpfluoViewer" in viewers
    # the mapper rebuilds our classes by name (sets in another process depend on it)
    mapper = domain.getMapperDict()
    for name in ("Particle", "SetOfParticles", "Transform", "Coordinate3D"):
        assert mapper[name] is getattr(objects, name)


def test_protocols_conf_matches_the_domain():
    import spfluo

    conf = configparser.ConfigParser()
    conf.optionxform = str
    conf.read(os.path.join(os.path.dirname(spfluo.__file__), "protocols.conf"))
    assert conf.has_section("PROTOCOLS")

    listed, sections = set(), []

    def walk(items):
        for item in items:
            if item.get("tag") == "protocol":
                listed.add(item["value"])
            if item.get("tag") == "section":
                sections.append(item["text"])
            walk(item.get("children", []))

    for menu in conf.options("PROTOCOLS"):
        walk(json.loads(conf.get("PROTOCOLS", menu)))
    expected = set(_spfluo_protocol_classes())
    assert listed == expected
    for section in ("Imports",):
        assert section in sections


def test_every_reference_is_in_the_bibtex():
    import pyworkflow as pw

    pw.Config.getDomain().getPlugins()
    import spfluo

    keys = set(spfluo._bibtex.keys())
    assert {"Fortun2018", "Eloy2023", "Fortun2017", "Donati2020", "Zehni2020"} <= keys
    for name, cls in _spfluo_protocol_classes().items():
        for ref in getattr(cls, "_references", []):
            assert ref in keys, f"{name} cites unknown reference {ref}"


@pytest.mark.parametrize("name", ["Domain", "Plugin"])
def test_lazy_plugin_attributes(name):
    import spfluo

    assert getattr(spfluo, name) is not None
    with pytest.raises(AttributeError):
        spfluo.NotAThing  # noqa: B018
