"""``spfluo report``: a static HTML page of a project (no server, opens from the file system).

The page lists the runs in provenance order (a run after the runs whose outputs
it uses; ties by run id), each with its status, start time, duration, error,
inputs (linked to their runs), parameters (the form values that apply, with
their labels) and outputs with the figures of the viewers
(:func:`spfluo.viewers.figures_for`, written as PNG files beside the page, drawn
once per output and reused by later reports while the output is unchanged:
:mod:`spfluo.figcache`).  A table at the top gathers the metrics: every comparison
with a reference (SSIM, PSNR, FSC resolutions, pose errors), the half-map resolution
of every reconstructed volume, and the numbers that runs output, each with its label,
unit and a one-line explanation (:mod:`spfluo.viewers.labels`).

The page needs no JavaScript; a few inline lines only mark, on the ``<body>``,
how many images loaded (``data-images-loaded``) and which did not
(``data-images-broken``), so a headless browser can check the page.

Call :func:`spfluo.environment.bootstrap` before using it (it imports pyworkflow
when called, not when imported, so that the ``spfluo`` command can register it).
"""

from __future__ import annotations

import datetime
import html
import os
import re
from pathlib import Path

from . import __version__
from .params import bounded_int
from .algorithms.limits import MAX_DPI
from .figcache import FigureCache, output_key
from .outfolder import OutputFolder

__all__ = ["write_report", "provenance_order", "run_parameters", "figure_stem", "add_parser"]

#: The writer's name in the manifest of the output folder (:mod:`spfluo.outfolder`).
_WRITER = "report"

#: The engine's own parameters, left out of the parameter tables.
_ENGINE_PARAMS = {"runName", "runMode", "hostName", "numberOfMpi", "numberOfThreads",
                  "_useQueue", "_queueParams", "_prerequisites", "comment"}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.5em; }
.meta { color: #666; } table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section.run { border: 1px solid #ddd; border-radius: 6px; padding: 0.2em 1em 1em; margin: 1em 0; }
section.failed { border-color: #c33; } .status { font-weight: bold; }
.status-finished { color: #27632a; } .status-failed, .error { color: #b00020; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 32em; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } code { font-size: 0.9em; }
td.why { font-size: 0.85em; color: #444; max-width: 32em; }
"""

# Marks how many images loaded; the page does not need it to be read.
_IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = document.images, loaded = 0, broken = [];
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
    else { broken.push(images[i].getAttribute("src")); }
  }
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images-broken", broken.join(" "));
});
</script>"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def provenance_order(runs) -> list:
    """Runs (``RunInfo``) ordered so that every run comes after the runs it uses.

    Parameters
    ----------
    runs : list of spfluo.workflow.RunInfo
        From :func:`spfluo.workflow.describe_runs`.

    Returns
    -------
    list of RunInfo
        A topological order of the provenance graph; among runs that are ready
        together, the smallest run id first.
    """
    by_id = {r.run_id: r for r in runs}
    parents = {r.run_id: {src for _, src, _ in r.inputs if src in by_id and src != r.run_id}
               for r in runs}
    done, order = set(), []
    while len(order) < len(runs):
        ready = [i for i in sorted(by_id) if i not in done and parents[i] <= done]
        if not ready:  # a cycle cannot come from the engine; keep id order for the rest
            ready = [i for i in sorted(by_id) if i not in done]
        order.append(by_id[ready[0]])
        done.add(ready[0])
    return order


def _param_value(prot, name, param) -> str:
    import pyworkflow.object as pwobj
    import pyworkflow.protocol.params as params

    attr = getattr(prot, name, None)
    if attr is None:
        return ""
    if isinstance(attr, pwobj.Pointer):
        target = attr.getObjValue()
        if target is None:
            return "-"
        ext = attr.getExtended()
        return f"run #{target.getObjId()}" + (f".{ext}" if ext else "")
    if isinstance(attr, pwobj.PointerList):
        return ", ".join(f"run #{p.getObjValue().getObjId()}.{p.getExtended()}"
                         for p in attr if p.getObjValue() is not None) or "-"
    value = attr.get()
    if value is None or value == "":
        return "-"
    if isinstance(param, params.EnumParam):
        choices = list(param.choices)
        return str(choices[value]) if isinstance(value, int) and 0 <= value < len(choices) \
            else str(value)
    if isinstance(param, params.BooleanParam):
        return "yes" if value else "no"
    return str(value)


def run_parameters(prot) -> list[tuple[str, str, str]]:
    """The form values of a run that apply: ``(label, name, value)`` in form order.

    Parameters whose condition is false (e.g. the voxel size fields when it is read
    from the files) and the engine's own parameters are left out.
    """
    import pyworkflow.protocol.params as params

    definition = prot.getDefinition()
    rows = []

    def walk(group, prefix=""):
        for name, param in group.iterParams():
            if name in _ENGINE_PARAMS:
                continue
            if param.hasCondition() and not prot.evalParamCondition(name):
                continue
            label = param.label.get() or name
            if isinstance(param, params.ElementGroup):  # a line: "PSF sigma (voxels): z"
                walk(param, f"{label}: ")
                continue
            rows.append((prefix + label, name, _param_value(prot, name, param)))

    for section in definition.iterSections():
        walk(section)
    return rows


def figure_stem(run_id: int, out_name: str) -> str:
    """The start of the file names of an output's figures: ``run0012_outputVolume``."""
    return f"run{run_id:04d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', out_name)}"


def _metrics_rows(prot) -> list[tuple[str, str, list[tuple[str, object]]]]:
    """(output name, class, [(metric key, value)]) for each output that carries numbers.

    Keys are those of :data:`spfluo.viewers.labels.METRICS` (or an output's own name).
    """
    import pyworkflow.object as pwobj

    from .objects import Volume, VolumeComparison

    rows = []
    for name, out in prot.iterOutputAttributes():
        if isinstance(out, VolumeComparison):
            numbers = [(k, v) for k, v in out.getMetrics().items() if v is not None]
            if out.getMetrics()["fsc_resolution_0143_um"] is None and out.getResolutionText():
                numbers.append(("fsc_resolution_text", out.getResolutionText()))
            rows.append((name, out.getClassName(), numbers))
        elif isinstance(out, Volume) and (out.getResolution() or out.getResolutionText()):
            numbers = []
            if out.getResolution():
                numbers.append(("half_map_resolution_um", out.getResolution()))
            if out.getResolutionText():
                numbers.append(("half_map_resolution_text", out.getResolutionText()))
            if out.getOpticalCutoff():
                numbers.append(("optical_cutoff_um", out.getOpticalCutoff()))
            rows.append((name, out.getClassName(), numbers))
        elif isinstance(out, pwobj.Scalar) and isinstance(out.get(), (int, float)):
            rows.append((name, out.getClassName(), [(name, out.get())]))
    return rows


def _metric_line(info, out_name: str, cls: str, key: str, value) -> str:
    """One row of the metrics table: run, output, label with unit, value, explanation."""
    from .viewers.labels import format_metric, metric_label

    label = metric_label(key)
    return (f'<tr><td><a href="#run-{info.run_id}">#{info.run_id} {_e(info.label)}</a></td>'
            f"<td>{_e(out_name)} ({_e(cls)})</td><td>{_e(label.label)}</td>"
            f'<td class="num">{_e(format_metric(key, value))}</td>'
            f'<td class="why">{_e(label.explanation)}</td></tr>')


def write_report(project, out_dir: str | os.PathLike | None = None, *, dpi: int = 80,
                 figures: bool = True) -> Path:
    """Write the project's report: ``index.html`` and the figures (PNG) in ``out_dir``.

    The report writes only files it owns (:class:`spfluo.outfolder.OutputFolder`): a
    folder holding files that spfluo did not write is refused, and only the figures of
    an earlier report are removed.

    Parameters
    ----------
    project : pyworkflow.project.Project
        An open project (the current directory is its folder).
    out_dir : path, optional
        Folder of the page (created; new, empty, or written by spfluo); default
        ``<project>/report``.
    dpi : int, default 80
        Resolution of the figures.
    figures : bool, default True
        Draw the outputs' figures (False: text only).

    Returns
    -------
    Path
        The ``index.html`` written.
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= MAX_DPI:
        raise ValueError(f"dpi must be an integer >= 10 and <= {MAX_DPI}, got {dpi!r}.")
    import matplotlib

    from .workflow import describe_runs

    matplotlib.use("Agg")
    name = os.path.basename(project.getPath())
    folder = OutputFolder(out_dir if out_dir is not None
                          else os.path.join(project.getPath(), "report"))

    infos = provenance_order(describe_runs(project))
    labels = {r.run_id: r.label for r in infos}
    cache = FigureCache(folder, by=_WRITER)
    metric_lines, sections = [], []
    for info in infos:
        prot = project.getProtocol(info.run_id)
        for out_name, cls, numbers in _metrics_rows(prot):
            metric_lines += [_metric_line(info, out_name, cls, key, value)
                             for key, value in numbers]
        sections.append(_run_section(prot, info, labels, cache, dpi, figures))

    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    n_failed = sum(r.status == "failed" for r in infos)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>spfluo report: {_e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Project {_e(name)}</h1>",
        f'<p class="meta">{_e(project.getPath())} &middot; {len(infos)} run(s), '
        f"{n_failed} failed &middot; report written {now} by spfluo {__version__}</p>",
        "<h2>Metrics</h2>",
    ]
    if metric_lines:
        parts += ["<table><tr><th>run</th><th>output</th><th>metric</th><th>value</th>"
                  "<th>what it means</th></tr>", *metric_lines, "</table>"]
    else:
        parts.append("<p>No run has measured anything yet.</p>")
    parts += ["<h2>Runs (in provenance order)</h2>", *sections, _IMAGE_CHECK, "</body></html>"]
    index = folder.write_text("index.html", "\n".join(parts), by=_WRITER)
    kept = cache.written | {index.name, cache.save()}
    folder.remove_stale(by=_WRITER, keep=kept)  # an earlier report's figures
    return index


def _run_section(prot, info, labels, cache: FigureCache, dpi: int, figures: bool) -> str:
    """The HTML of one run, its figures drawn or reused through ``cache``."""
    from .viewers.labels import figure_label

    lines = [f'<section class="run {_e(info.status)}" id="run-{info.run_id}">',
             f"<h3>#{info.run_id} {_e(info.label)} <small><code>{_e(info.class_name)}</code>"
             "</small></h3>"]
    started = prot.initTime.datetime().strftime("%Y-%m-%d %H:%M:%S") \
        if prot.initTime.hasValue() else "-"
    lines.append(f'<p>status <span class="status status-{_e(info.status)}">{_e(info.status)}'
                 f"</span> &middot; started {_e(started)} &middot; duration "
                 f"{_e(_duration(info.duration_s))}</p>")
    if info.error:
        lines.append(f'<pre class="error">{_e(info.error.strip())}</pre>')
    if info.inputs:
        items = "".join(
            f'<li>{_e(key)} &larr; <a href="#run-{src}">#{src} {_e(labels.get(src, ""))}</a>'
            f"{_e('.' + ext if ext else '')}</li>" for key, src, ext in info.inputs)
        lines.append(f"<h4>Inputs</h4><ul>{items}</ul>")
    rows = run_parameters(prot)
    if rows:
        lines.append("<h4>Parameters</h4><table><tr><th>parameter</th><th>name</th>"
                     "<th>value</th></tr>")
        lines += [f"<tr><td>{_e(label)}</td><td><code>{_e(name)}</code></td><td>{_e(value)}"
                  "</td></tr>" for label, name, value in rows]
        lines.append("</table>")
    if info.outputs:
        lines.append("<h4>Outputs</h4>")
        for out_name, cls, desc, _ in info.outputs:
            lines.append(f"<p><b>{_e(out_name)}</b> ({_e(cls)}): {_e(desc)}</p>")
            if figures:
                obj = getattr(prot, out_name)
                for fname, fig_name in cache.figures(obj, figure_stem(info.run_id, out_name),
                                                     output_key(prot, out_name, obj, dpi), dpi):
                    caption = figure_label(fig_name)
                    lines.append(f'<figure><img src="{_e(fname)}" alt="{_e(out_name)} '
                                 f'{_e(caption)}"><figcaption>{_e(caption)}</figcaption>'
                                 "</figure>")
    summary = [s for s in (prot.summary() or []) if s and s.strip()]
    if summary and info.status == "finished":
        lines.append("<h4>Summary</h4>" + "".join(f"<p>{_e(s)}</p>" for s in summary))
    lines.append("</section>")
    return "\n".join(lines)


# ------------------------------------------------------------------------ CLI
def _cmd_report(args) -> int:
    from .workflow import open_project

    project = open_project(args.name)
    index = write_report(project, args.out_abs, dpi=args.dpi, figures=not args.no_figures)
    n_png = sum(n.endswith(".png") for n in OutputFolder(index.parent).files(by=_WRITER))
    print(f"wrote {index} ({n_png} figure(s)); open it in a browser: file://{index}")
    return 0


def add_parser(sub) -> None:
    """Register ``spfluo report`` on the ``spfluo`` command's sub-parsers."""
    p = sub.add_parser("report", help="write a static HTML report of a project",
                       description="Write DIR/index.html (default <project>/report) with the "
                                   "runs in provenance order, their parameters, durations and "
                                   "errors, the figures of every output and the metrics. DIR "
                                   "must be new, empty or an earlier report's: files that "
                                   "spfluo did not write are never overwritten or deleted.")
    p.add_argument("name", help="project name (or folder)")
    p.add_argument("--out", default=None, help="folder of the page (default <project>/report)")
    p.add_argument("--dpi", type=bounded_int(10, MAX_DPI), default=80,
                   help=f"resolution of the figures (10 to {MAX_DPI})")
    p.add_argument("--no-figures", action="store_true", help="text only")
    p.set_defaults(func=_cmd_report, paths=["out"])
