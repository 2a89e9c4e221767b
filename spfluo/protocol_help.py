"""``spfluo protocols NAME``: a protocol's form as text, as the GUI shows it.

Every parameter with its label (units included), type, default, choices with their
labels, maximum, the condition under which it applies, and its help; expert
parameters are marked, and the GPU parameters (hidden from the form's sections) are
listed last.  Call :func:`spfluo.environment.bootstrap` before using it (it reads
pyworkflow parameter classes).
"""

from __future__ import annotations

import textwrap

__all__ = ["describe_protocol", "ENGINE_PARAMS"]

#: The engine's own parameters (run name, mode, host, threads, queue), left out.
ENGINE_PARAMS = {"runName", "runMode", "hostName", "numberOfMpi", "numberOfThreads",
                 "_useQueue", "_queueParams", "_prerequisites", "comment"}

_WIDTH = 100


def _kind(param) -> str:
    import pyworkflow.protocol.params as params

    if isinstance(param, params.PointerParam):
        classes = param.pointerClass.get() or "object"
        text = f"input: {' or '.join(c.strip() for c in classes.split(','))}"
        return text + (" (optional)" if param.allowsNull.get() else "")
    for cls, name in ((params.EnumParam, "choice"), (params.BooleanParam, "yes/no"),
                      (params.IntParam, "integer"), (params.FloatParam, "number"),
                      (params.PathParam, "file path"), (params.StringParam, "text")):
        if isinstance(param, cls):
            return name
    return type(param).__name__


def _default(param) -> str | None:
    import pyworkflow.protocol.params as params

    if not param.default.hasValue():
        return None
    value = param.default.get()
    if isinstance(param, params.EnumParam):
        choices = list(param.choices)
        index = int(value)
        return f"{index} ({choices[index]})" if 0 <= index < len(choices) else str(value)
    if isinstance(param, params.BooleanParam):
        return "yes" if str(value).lower() in ("true", "1") else "no"
    if isinstance(param, params.StringParam) and value == "":
        return '"" (empty)'
    return str(value)


def _maximum(param) -> int | None:
    from .protocols.base import IntRange

    return next((v.maximum for v in param.validators if isinstance(v, IntRange)), None)


def _entry(name: str, param, *, label: str | None = None, hidden: bool = False,
           condition: str | None = None) -> list[str]:
    import pyworkflow.protocol.params as params

    label = label or param.label.get() or name
    facts = [_kind(param)]
    default = _default(param)
    if default is not None:
        facts.append(f"default {default}")
    maximum = _maximum(param)
    if maximum is not None:
        facts.append(f"at most {maximum:,}")
    if param.expertLevel.get():
        facts.append("expert")
    # hidden parameters (GPU) carry the condition 'False' that hides them in the form
    if condition is None and param.hasCondition() and not hidden:
        condition = param.condition.get()
    if condition:
        facts.append(f"applies when {condition}")
    lines = [f"  {name:<24} {label}", f"  {'':<24} [{'; '.join(facts)}]"]
    if isinstance(param, params.EnumParam):
        for k, choice in enumerate(param.choices):
            lines.append(f"  {'':<24}   {k} = {choice}")
    help_text = " ".join((param.help.get() or "").split())
    if help_text:
        lines += textwrap.wrap(help_text, _WIDTH, initial_indent=" " * 27,
                               subsequent_indent=" " * 27)
    return lines


def describe_protocol(cls) -> str:
    """The text of ``spfluo protocols NAME`` for the protocol class ``cls``."""
    import pyworkflow.protocol.params as params

    prot = cls()
    doc = " ".join((cls.__doc__ or "").split())
    lines = [f"{cls.__name__}: {cls._label}"]
    if doc:
        lines += textwrap.wrap(doc, _WIDTH, initial_indent="  ", subsequent_indent="  ")
    lines += textwrap.wrap("Give parameters as name=value; a choice by its number or label; an "
                           "input as RUN.outputName (RUN: a run id or label).", _WIDTH,
                           initial_indent="  ", subsequent_indent="  ")
    definition = prot.getDefinition()
    gpu = []
    for section in definition.iterSections():
        entries = []
        for name, param in section.iterParams():
            if name in ENGINE_PARAMS:
                continue
            if name in (params.USE_GPU, params.GPU_LIST):
                gpu.append((name, param))
                continue
            if isinstance(param, params.Line):  # a line of the form: its fields
                line_condition = param.condition.get() if param.hasCondition() else None
                for sub_name, sub in param.iterParams():
                    entries += _entry(sub_name, sub, condition=line_condition,
                                      label=f"{param.label.get()}: {sub.label.get() or sub_name}")
                continue
            entries += _entry(name, param)
        if entries:
            lines += ["", f"{section.label.get()}"] + entries
    if gpu:
        lines += ["", "GPU (optional; needs `pip install scipion-fluo-spfluo[gpu]`)"]
        labels = {params.USE_GPU: "Use GPU", params.GPU_LIST: "GPU ids ('0', '0 1', '0-3')"}
        for name, param in gpu:
            lines += _entry(name, param, label=labels[name], hidden=True)
    return "\n".join(lines)
