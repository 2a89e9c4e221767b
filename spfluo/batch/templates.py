"""Workflow templates: found, filled and loaded into a project with the engine's own API.

A template is the engine's workflow JSON (``Project.exportProtocols``: a list of
protocol definitions whose pointers are ``"ID.outputName"``), saved as
``NAME.json.template`` after a free-text description, with fields
``~Title|default|type|alias~`` where values are to be given (type: 0 string,
1 boolean, 2 existing path, 3 integer, 4 decimal).  spfluo's templates live in
``spfluo/templates/``, the folder the engine's plugin template loader reads
(``Plugin.getTemplates``), so they also appear in the Scipion GUI's template list.

Two additions, both ignored by the engine:

- a protocol definition may carry ``"spfluo.requires": ["alias", ...]``: it is
  left out (with every protocol that points to it) when one of these fields is
  empty, e.g. the comparison with a reference a dataset does not have;
- protocols are launched in the order of the list, so a pointer must refer to a
  protocol listed before (checked here).

Adding a step to a workflow is therefore only an edit of its template file.
Call :func:`spfluo.environment.bootstrap` before importing this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import pyworkflow as pw
import pyworkflow.protocol.params as params
from pyworkflow.template import LocalTemplate, TemplateList, Validations

from ..errors import ProjectError
from ..workflow import check_workflow

__all__ = [
    "TEMPLATE_SUFFIX",
    "REQUIRES_KEY",
    "TemplateError",
    "list_templates",
    "find_template",
    "template_fields",
    "fill_template",
    "load_workflow",
]

#: Suffix of template files (the engine's ``SCIPION_JSON_TEMPLATES``).
TEMPLATE_SUFFIX = pw.SCIPION_JSON_TEMPLATES
#: Key of a protocol definition listing the aliases it needs (left out when one is empty).
REQUIRES_KEY = "spfluo.requires"
_PLUGIN = "spfluo"
_CLASS, _ID, _LABEL = "object.className", "object.id", "object.label"


class TemplateError(ValueError):
    """A template that cannot be used as asked (the message names it and the fix)."""


def list_templates() -> list:
    """spfluo's templates, found by the engine's plugin template loader.

    Returns
    -------
    list of pyworkflow.template.LocalTemplate
        Sorted by name; ``t.name`` is the file name without ``.json.template``,
        ``t.getObjId()`` is ``"spfluo-NAME"``, ``t.description`` the text before the JSON.
    """
    templates = TemplateList()
    with contextlib.redirect_stdout(io.StringIO()):
        templates.addPluginTemplates()
    found = [t for t in templates.templates if t.source == _PLUGIN]
    return sorted(found, key=lambda t: t.name)


def find_template(name: str):
    """A template by name (``spr_particles``), engine id (``spfluo-spr_particles``) or file path.

    Raises
    ------
    TemplateError
        When no template matches.
    """
    if not name:
        raise TemplateError("No template given: name one of `spfluo batch --list-templates` "
                            "or give the path of a .json.template file.")
    path = os.path.expanduser(str(name))
    if os.path.isfile(path):
        return LocalTemplate("local", path)
    templates = list_templates()
    for t in templates:
        if name in (t.name, t.getObjId(), t.name + TEMPLATE_SUFFIX):
            return t
    known = ", ".join(t.name for t in templates) or "none"
    raise TemplateError(f"No template {name!r}: known templates are {known} (or give the "
                        f"path of a {TEMPLATE_SUFFIX} file).")


def _fresh(template):
    """A new LocalTemplate of the same file (the engine's templates are filled in place)."""
    path = getattr(template, "templatePath", None)
    if path is None:
        raise TemplateError(f"Template {template.getObjId()} is not a local file; only local "
                            "templates can be filled.")
    return LocalTemplate(template.source, path)


def _parsed(template):
    t = _fresh(template)
    try:
        t.replaceEnvVariables()
    except (KeyError, ValueError, TypeError) as exc:
        raise TemplateError(f"Template {t.templatePath}: cannot substitute %(VAR)s environment "
                            f"variables ({exc!r}); write a literal % as %%.") from exc
    n_fields = (len(t.content) - 1) // 2
    if len(t.content) % 2 == 0:
        raise TemplateError(f"Template {t.templatePath} has an odd number of '~': every field "
                            "is written ~Title|default|type|alias~.")
    try:
        t.parseContent()
    except (ValueError, TypeError) as exc:
        raise TemplateError(f"Template {t.templatePath}: a field is malformed ({exc}); write "
                            "~Title|default|type|alias~ with an integer type.") from exc
    if len(t.params) != n_fields:
        raise TemplateError(f"Template {t.templatePath}: two fields share a title; every field "
                            "needs its own title (fields may share an alias).")
    return t


def template_fields(template) -> list:
    """The fields of a template, in order.

    Returns
    -------
    list of pyworkflow.template.TemplateParam
        With ``getTitle()``, ``getValue()`` (the default), ``getType()``, ``getAlias()``.
    """
    return list(_parsed(template).getParams().values())


def _json_escape(text) -> str:
    return json.dumps("" if text is None else str(text))[1:-1]


def _pointer_params(cls) -> set:
    prot = cls()
    return {name for name, param in prot.getDefinition().iterParams()
            if isinstance(param, (params.PointerParam, params.MultiPointerParam))}


def _pointer_targets(value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).split(".")[0] for v in values if v]


def fill_template(template, values: dict) -> tuple[list[dict], list[str]]:
    """Fill a template's fields from values by alias; return the protocol definitions to run.

    Empty values leave the field's default.  Protocols that require an empty field
    (``"spfluo.requires"``) are left out, with every protocol pointing to them.

    Parameters
    ----------
    template : pyworkflow.template.LocalTemplate
        From :func:`find_template`.
    values : dict of str to str
        Field values by alias (e.g. from :func:`spfluo.batch.dataset.read_dataset`);
        aliases the template has no field for are ignored.

    Returns
    -------
    protocols : list of dict
        The engine's protocol definitions in launch order.
    left_out : list of str
        Labels of the protocols left out.

    Raises
    ------
    TemplateError
        A value that does not fit its field (e.g. a path that does not exist for a
        path field), an unknown protocol class, or a pointer to a later protocol.
    """
    t = _parsed(template)
    fields = list(t.getParams().values())
    aliases = {f.getAlias() for f in fields}
    sink = io.StringIO()
    for alias, value in values.items():
        if alias not in aliases or value is None or str(value) == "":
            continue
        try:
            with contextlib.redirect_stdout(sink):
                t.setParamValue(alias, str(value))
        except Exception as exc:  # the engine raises a bare Exception for a bad value
            reasons = [Validations.check(str(value), f.getType()) for f in fields
                       if f.getAlias() == alias]
            reason = next((r for r in reasons if r), str(exc))
            titles = ", ".join(repr(f.getTitle()) for f in fields if f.getAlias() == alias)
            raise TemplateError(f"Template {t.name}: value {value!r} of {alias!r} does not fit "
                                f"field {titles}: {reason}") from None
    filled = {}
    for f in fields:
        if f.getAlias() and f.getValue():
            filled[f.getAlias()] = f.getValue()
        f.setValue(_json_escape(f.getValue()))
    with contextlib.redirect_stdout(sink):
        path = t.createTemplateFile()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    finally:
        os.remove(path)
    try:
        protocols = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"Template {t.templatePath} is not valid JSON once filled: {exc}") \
            from None
    if not isinstance(protocols, list) or not all(isinstance(d, dict) and _CLASS in d and _ID in d
                                                  for d in protocols):
        raise TemplateError(f"Template {t.templatePath} must hold a JSON list of protocol "
                            f"definitions, each with {_CLASS!r} and {_ID!r}.")
    return _select(t, protocols, filled)


def _select(t, protocols: list[dict], filled: dict) -> tuple[list[dict], list[str]]:
    classes = pw.Config.getDomain().getProtocols()
    kept, left_out, seen, dropped = [], [], set(), set()
    for d in protocols:
        cls = classes.get(d[_CLASS])
        pid = str(d[_ID])
        label = d.get(_LABEL) or d[_CLASS]
        if cls is None:
            raise TemplateError(f"Template {t.name}: protocol {d[_CLASS]!r} ({label}) is not "
                                "installed; install its plugin or edit the template.")
        if pid in seen or pid in dropped:
            raise TemplateError(f"Template {t.name}: two protocols have the id {pid}.")
        targets = {name: _pointer_targets(d[name]) for name in _pointer_params(cls) if d.get(name)}
        requires = d.get(REQUIRES_KEY, [])
        requires = [requires] if isinstance(requires, str) else list(requires)
        missing = [a for a in requires if not filled.get(a)]
        depends_on_dropped = any(x in dropped for ts in targets.values() for x in ts)
        if missing or depends_on_dropped:
            dropped.add(pid)
            left_out.append(label)
            continue
        for name, ts in targets.items():
            for target in ts:
                if target not in seen:
                    raise TemplateError(f"Template {t.name}: {label} ({name}) points to protocol "
                                        f"{target}, which is not listed before it; list the "
                                        "protocols in the order they run.")
        seen.add(pid)
        kept.append(d)
    return kept, left_out


def load_workflow(project, protocols: list[dict]) -> list:
    """Add protocol definitions to a project (saved, not run) with the engine's loader.

    Returns
    -------
    list of pyworkflow.protocol.Protocol
        The new protocols, in the order of ``protocols``, with their labels.
    """
    if not protocols:
        raise TemplateError("The workflow has no protocol to load.")
    clean = [{k: v for k, v in d.items() if k != REQUIRES_KEY} for d in protocols]
    try:
        check_workflow(clean)
    except ProjectError as exc:
        raise TemplateError(str(exc)) from exc
    created = project.loadProtocols(jsonStr=json.dumps(clean))
    runs = []
    for d in clean:
        prot = created[str(d[_ID])] if str(d[_ID]) in created else created[d[_ID]]
        if d.get(_LABEL):
            prot.setObjLabel(d[_LABEL])
            project.mapper.store(prot)
        runs.append(prot)
    project.mapper.commit()
    return runs
