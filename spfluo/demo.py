"""``spfluo demo``: simulated fields of view through the whole pipeline, in a new project.

The demo plays the microscope in Python (it simulates the data and writes them as
files, as an acquisition would), then drives the protocols exactly as a user does,
one run per step, each output pointed to as ``RUNID.outputName``:

1. simulate two fields of view of C9 barrels (two channels: the barrel and a torus
   around it), blurred by an anisotropic PSF (z 4 times worse than x, y) with noise;
   write them (OME-TIFF), the PSF at the particles' voxel size, a few example
   positions (the user's picks) and the ground truth;
2. import the fields, the PSF and the examples;
3. pick the particles like the examples (channel 0), extract them on isotropic voxels
   (both channels);
4. reconstruct ab initio (no symmetry), find the C9 axis and turn it to z, refine with
   C9 symmetry;
5. import the ground truth and compare the refined volume with it (registration
   modulo C9): SSIM, FSC resolution.

It prints a table of the runs and the final numbers, and writes the HTML report of the
project with the figures of every output into the project's ``report`` folder (or
``--out``).  The data folder
(``demo-data`` in the project) has the layout ``spfluo batch`` reads, so the same data
run with ``spfluo batch spr_fields_of_view``.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .algorithms.geometry import um_to_voxels, vectors_voxels_to_um, voxels_to_um

__all__ = ["DemoSettings", "DemoData", "demo_settings", "simulate_demo_data", "run_demo"]

#: Symmetry order of the simulated particle.
SYMMETRY = 9


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and parameters of the demo.

    Attributes
    ----------
    quick : bool
        The smoke-test sizes (``spfluo demo --quick``).
    n_fields : int
        Number of fields of view.
    field_shape : tuple of 3 int
        Field shape ``(z, y, x)``, voxels.
    field_voxel_size : tuple of 3 float
        Field voxel size ``(z, y, x)``, micrometres (z coarser, as on a microscope).
    phantom_box : int
        Side of the box of the simulated particle, in lateral field voxels.
    particles_per_field, n_debris, touching_pairs : int
        Content of each field.
    psf_sigma_um : tuple of 2 float
        Gaussian PSF standard deviations ``(z, xy)``, micrometres.
    noise_std : float
        Gaussian noise standard deviation (each field's noiseless part scaled to [0, 1]).
    n_examples : int
        Example particles given to the picker (true positions, the user's picks).
    particle_voxel_size : float
        Isotropic voxel size of the extracted particles, micrometres.
    pick, abinitio, refine, compare : dict
        Parameters of those protocols (form names), on top of the inputs the demo sets.
    report_figures : bool
        Draw the figures of every output in the report (False: the report has none; the
        final figures are written either way).
    seed : int
        Seed of the simulation.
    """

    quick: bool = False
    n_fields: int = 2
    field_shape: tuple = (32, 160, 160)
    field_voxel_size: tuple = (0.12, 0.04, 0.04)
    phantom_box: int = 32
    particles_per_field: int = 15
    n_debris: int = 2
    touching_pairs: int = 1
    psf_sigma_um: tuple = (0.2, 0.05)
    noise_std: float = 0.2
    n_examples: int = 6
    particle_voxel_size: float = 0.04
    pick: dict = field(default_factory=dict)
    abinitio: dict = field(default_factory=dict)
    refine: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)
    report_figures: bool = True
    seed: int = 0

    @property
    def box_um(self) -> float:
        """Side of the particle box, micrometres."""
        return voxels_to_um(self.phantom_box, self.field_voxel_size[2])

    @property
    def particle_box(self) -> int:
        """Side of the extracted particle box, voxels of :attr:`particle_voxel_size`."""
        return int(round(um_to_voxels(self.box_um, self.particle_voxel_size)))

    @property
    def diameter_um(self) -> float:
        """Diameter of the particle (the torus around the barrel), micrometres."""
        return 0.8 * self.box_um


def demo_settings(quick: bool = False, **changes) -> DemoSettings:
    """The demo's settings: the default run, or ``quick`` (a smoke test of the same chain).

    Parameters
    ----------
    quick : bool, default False
        Smaller fields, particles and iteration counts.
    **changes
        Fields of :class:`DemoSettings` to replace (protocol parameter dicts are merged).

    Returns
    -------
    DemoSettings
    """
    if quick:
        base = DemoSettings(
            quick=True, field_shape=(24, 96, 96), phantom_box=24, particles_per_field=8,
            n_debris=1, n_examples=4, particle_voxel_size=0.06, report_figures=False,
            abinitio={"maxEpochs": 6, "nDirections": 16, "nPsi": 6, "finalReconstruction": 2},
            refine={"schedule": "20:all, 5:10", "exhaustiveIterations": 2,
                    "continuousIterations": 0, "initialIterations": 40, "admmIterations": 15,
                    "finalIterations": 20, "weight": 0.0007},
            compare={"coarseStep": 30})
    else:
        base = DemoSettings(
            abinitio={"maxEpochs": 20, "nDirections": 32, "nPsi": 8, "finalReconstruction": 2},
            refine={"schedule": "15:all, 5:10, 2:4", "exhaustiveIterations": 4,
                    "continuousIterations": 1, "initialIterations": 60, "admmIterations": 20,
                    "finalIterations": 40, "weight": 0.0007},
            compare={"coarseStep": 20})
    merged = {}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(getattr(base, key, None), dict):
            merged[key] = {**getattr(base, key), **value}
        else:
            merged[key] = value
    return replace(base, **merged)


@dataclass(frozen=True)
class DemoData:
    """The files the demo's "microscope" wrote.

    Attributes
    ----------
    folder : Path
        The data folder (``spfluo batch`` layout).
    fields : list of Path
        Fields of view (OME-TIFF, 2 channels).
    psf : Path
        The PSF at the particles' isotropic voxel size (OME-TIFF).
    examples : Path
        Example coordinates (CSV: image_id, x, y, z in µm).
    reference : Path
        The ground truth at the particles' voxel size and box (OME-TIFF, 2 channels).
    n_particles : int
        Particles simulated in all fields.
    """

    folder: Path
    fields: list
    psf: Path
    examples: Path
    reference: Path
    n_particles: int


def _check_settings(s: DemoSettings) -> None:
    if abs(um_to_voxels(s.box_um, s.particle_voxel_size) - s.particle_box) > 1e-6:
        raise ValueError(f"particle_voxel_size={s.particle_voxel_size} µm must divide the "
                         f"particle box of {s.box_um:g} µm ({s.phantom_box} field voxels): "
                         "choose a divisor so that the ground truth has the particles' box.")
    per_field = -(-s.n_examples // s.n_fields)
    if per_field > s.particles_per_field - 2 * s.touching_pairs:
        raise ValueError(f"n_examples={s.n_examples} needs {per_field} isolated particle(s) per "
                         f"field, but a field has {s.particles_per_field} particle(s) of which "
                         f"{2 * s.touching_pairs} touch: lower n_examples or simulate more "
                         "particles.")


def simulate_demo_data(folder: str | os.PathLike, settings: DemoSettings) -> DemoData:
    """Write the demo's fields of view, PSF, example picks and ground truth.

    Parameters
    ----------
    folder : path
        Destination folder (created): ``fields/field_K.ome.tif``, ``psf.ome.tif``,
        ``examples.csv``, ``reference.ome.tif`` and ``dataset.json`` (the values a
        ``spfluo batch`` template needs besides the files).
    settings : DemoSettings

    Returns
    -------
    DemoData
    """
    import json

    from .algorithms.phantoms import c9_barrel
    from .algorithms.psf import gaussian_psf
    from .algorithms.simulate import simulate_field
    from .io import CoordinateTable, write_coordinates_csv, write_volume

    s = settings
    _check_settings(s)
    folder = Path(folder)
    (folder / "fields").mkdir(parents=True, exist_ok=True)
    names = ["barrel", "torus"]
    sz, sxy = s.psf_sigma_um
    # the PSF on the fields' grid blurs the fields; the same PSF on the particles' isotropic
    # grid is the one given to the reconstruction (a computed PSF, or a measured one resampled)
    fvz, fvy, fvx = s.field_voxel_size
    field_psf = gaussian_psf((2 * math.ceil(um_to_voxels(3 * sz, fvz)) + 1,
                              2 * math.ceil(um_to_voxels(3 * sxy, fvy)) + 1,
                              2 * math.ceil(um_to_voxels(3 * sxy, fvx)) + 1), (sz, sxy),
                             voxel_size=s.field_voxel_size)
    box = s.particle_box
    psf_box = min(box - 1 + box % 2,
                  2 * math.ceil(um_to_voxels(3 * sz, s.particle_voxel_size)) + 1)
    psf = gaussian_psf((psf_box,) * 3, (sz, sxy), voxel_size=(s.particle_voxel_size,) * 3)

    barrel = c9_barrel((s.phantom_box,) * 3, second_channel=True)
    rng = np.random.default_rng(s.seed)
    fields, ids, positions = [], [], []
    per_field = np.full(s.n_fields, s.n_examples // s.n_fields)
    per_field[: s.n_examples % s.n_fields] += 1
    for k in range(s.n_fields):
        fov = simulate_field(barrel, field_psf, shape=s.field_shape,
                             n_particles=s.particles_per_field, n_debris=s.n_debris,
                             touching_pairs=s.touching_pairs, noise_std=s.noise_std,
                             voxel_size=s.field_voxel_size, seed=s.seed + k)
        path = folder / "fields" / f"field_{k}.ome.tif"
        write_volume(path, fov.image, s.field_voxel_size, channel_names=names)
        fields.append(path)
        # the user's examples: a few isolated particles (touching pairs are the first rows)
        isolated = np.arange(2 * s.touching_pairs, len(fov.positions))
        for i in rng.permutation(isolated)[: per_field[k]]:
            ids.append(f"field_{k}")
            positions.append(vectors_voxels_to_um(fov.positions[i], s.field_voxel_size))
    psf_path = write_volume(folder / "psf.ome.tif", psf, (s.particle_voxel_size,) * 3)
    examples = folder / "examples.csv"
    write_coordinates_csv(examples, CoordinateTable(image_ids=np.array(ids),
                                                    positions_zyx_um=np.array(positions)))
    truth = c9_barrel((box,) * 3, second_channel=True)
    reference = write_volume(folder / "reference.ome.tif", truth, (s.particle_voxel_size,) * 3,
                             channel_names=names)
    with open(folder / "dataset.json", "w", encoding="utf-8") as fh:
        json.dump({"diameter": round(s.diameter_um, 6), "box_size": round(s.box_um, 6),
                   "particle_voxel_size": s.particle_voxel_size, "symmetry": SYMMETRY}, fh,
                  indent=2)
    return DemoData(folder=folder, fields=fields, psf=Path(psf_path), examples=examples,
                    reference=Path(reference), n_particles=s.n_fields * s.particles_per_field)


def _new_project_name() -> str:
    from .workflow import list_projects

    taken = {p.getName() for p in list_projects()}
    for k in itertools.count(1):
        name = f"spfluo-demo-{k}"
        if name not in taken:
            return name
    raise RuntimeError("unreachable")


def _cpu_seconds() -> float:
    """CPU time (user + sys) of this process and of the finished processes it waited for."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _noise_note(noise_std: float) -> str:
    if noise_std == 0.2:
        return " (Eloy et al. 2023's level)"
    return f" ({'less' if noise_std < 0.2 else 'more'} than Eloy et al. 2023's 0.2)"


def _fmt_duration(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _print_runs(project, *, stream=None) -> list:
    """Print the table of the project's runs (id, label, protocol, status, duration)."""
    from .workflow import describe_runs

    out = stream or sys.stdout
    runs = describe_runs(project)
    print(f"{'run':>5}  {'label':<28} {'protocol':<26} {'status':<9} {'duration':>9}", file=out)
    for r in runs:
        print(f"{'#' + str(r.run_id):>5}  {r.label:<28} {r.class_name:<26} {r.status:<9} "
              f"{_fmt_duration(r.duration_s):>9}", file=out)
    return runs


def _final_figures(project, refined_id: str, compare_id: str, reference: str,
                   folder) -> list[Path]:
    """The final volume and its comparison with the ground truth, under explicit names.

    ``final_fsc.png`` (FSC against the ground truth), ``final_volume_<figure>.png`` (the
    refined volume's figures: slices, isosurface, convergence) and
    ``final_volume_vs_ground_truth.png`` (the registered volume beside the ground truth),
    written in ``folder`` (a :class:`spfluo.outfolder.OutputFolder`).  A figure that the
    report already drew in the folder is copied, not drawn again.
    """
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    from .figcache import cached_figures
    from .io import read_volume
    from .report import figure_stem
    from .viewers import figures_for
    from .viewers.slices import orthoslices_figure

    written = []

    def save(fig, fname):
        written.append(folder.write(fname, lambda tmp: fig.savefig(tmp, format="png", dpi=80),
                                    by="demo"))

    def copy(src, fname):
        written.append(folder.write(fname, lambda tmp: shutil.copyfile(folder.path / src, tmp),
                                    by="demo"))

    def final(run_id, out_name, obj, rename):
        """The output's figures, copied from the report when it drew them, else drawn."""
        drawn = cached_figures(folder, figure_stem(int(run_id), out_name))
        if drawn:
            for fname, name in drawn:
                if rename(name):
                    copy(fname, rename(name))
            return
        for name, fig in figures_for(obj):
            if rename(name):
                save(fig, rename(name))

    refined = project.getProtocol(int(refined_id)).outputVolume
    comparison = project.getProtocol(int(compare_id)).outputComparison
    final(compare_id, "outputComparison", comparison,
          lambda name: "final_fsc.png" if name == "fsc" else None)
    final(refined_id, "outputVolume", refined, lambda name: f"final_volume_{name}.png")
    aligned = read_volume(comparison.getAlignedFile()).data
    truth = read_volume(reference).data
    rows, names = [], []
    for c, channel in enumerate(("barrel", "torus")[: aligned.shape[0]]):
        rows += [aligned[c], truth[c]]
        names += [f"{channel}, reconstruction", f"{channel}, ground truth"]
    m = comparison.getMetrics()
    res = m["fsc_resolution_0143_um"]
    fig = orthoslices_figure(np.stack(rows), comparison.getVoxelSize(), channel_names=names,
                             title=f"refined volume registered onto the ground truth (SSIM "
                                   f"{m['ssim']:.3f}"
                                   + (f", FSC 0.143 at {res:.3g} µm)" if res else ")"))
    save(fig, "final_volume_vs_ground_truth.png")
    return written


def _print_metrics(comparison, refined, say) -> dict:
    """The final numbers of every channel (from the comparison's metrics file) and the
    half-map resolution of the refined volume, as verdicts: a resolution is printed only
    where the FSC crosses its threshold below Nyquist and the optical cutoff."""
    from .io import read_summary

    data = read_summary(comparison.getMetricsFile())
    channels, texts = data["channels"], data["resolution_text"]
    m = channels[0]
    say(f"final volume against the ground truth (channel 0, the barrel; registered modulo "
        f"C{SYMMETRY}):")
    say(f"  SSIM {m['ssim']:.3f}")
    for threshold, key in (("0.143", "0143"), ("0.5", "05")):
        say(f"  FSC resolution ({threshold}): {texts[0][f'fsc_{key}']}")
    for c, other in enumerate(channels[1:], start=1):
        say(f"  channel {c} (the torus): SSIM {other['ssim']:.3f}, FSC resolution (0.143) "
            f"{texts[c]['fsc_0143']}")
    if refined.getResolutionText():
        say(f"  half-map FSC resolution (0.143, masked, corrected): "
            f"{refined.getResolutionText()}; optical cutoff of the PSF "
            + (f"{refined.getOpticalCutoff():.3g} µm" if refined.getOpticalCutoff() else "n/a"))
    return m


def run_demo(*, name: str | None = None, quick: bool = False, out: str | None = None,
             settings: DemoSettings | None = None, stream=None) -> int:
    """Run the demo in a new project; returns the process exit status (0, or 1 if a run failed).

    Parameters
    ----------
    name : str, optional
        Project name (default: the first free ``spfluo-demo-N``).
    quick : bool, default False
        Smoke-test sizes (ignored when ``settings`` is given).
    out : path, optional
        Folder of the figures and the HTML report (default ``report`` in the project, the
        folder of ``spfluo report``): new, empty, or written by spfluo before (files
        spfluo did not write are never overwritten or deleted).
    settings : DemoSettings, optional
        Sizes and parameters (default :func:`demo_settings` ``(quick)``).
    stream : file, optional
        Where to print (default stdout).
    """
    from .outfolder import OutputFolder
    from .report import write_report
    from .workflow import create_project, launch, new_protocol, run_duration

    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    printer = stream or sys.stdout

    def say(*args, **kwargs):
        print(*args, **kwargs, file=printer, flush=True)

    s = settings or demo_settings(quick)
    name = name or _new_project_name()
    if out is not None:
        out_dir = Path(os.path.abspath(out))
        folder = OutputFolder(out_dir)  # refused now, not after the runs, if not spfluo's
    project = create_project(name)
    if out is None:  # the project's own report folder
        out_dir = Path(project.getPath()) / "report"
        folder = OutputFolder(out_dir)
    data = simulate_demo_data(Path(project.getPath()) / "demo-data", s)
    vz, vy, vx = s.field_voxel_size
    say(f"spfluo demo{' --quick' if s.quick else ''}: project {name}")
    say(f"simulated {s.n_fields} fields of view of {s.field_shape[2]}x{s.field_shape[1]}x"
        f"{s.field_shape[0]} voxels of {vx:g} x {vy:g} x {vz:g} µm (x, y, z), "
        f"{s.particles_per_field} C{SYMMETRY} barrels each (2 channels: barrel, torus), "
        f"{s.n_debris} debris; PSF sigma {s.psf_sigma_um[1]:g} µm (x, y), "
        f"{s.psf_sigma_um[0]:g} µm (z); noise {s.noise_std:g}" + _noise_note(s.noise_std)
        + f"; in {data.folder}")
    say(f"particles: boxes of {s.box_um:g} µm = {s.particle_box}^3 voxels of "
        f"{s.particle_voxel_size:g} µm; {s.n_examples} example picks")
    say()

    steps = []
    n_steps = 10

    def run(cls, label, **params):
        prot = new_protocol(project, cls, {k: str(v) for k, v in params.items()}, label=label)
        say(f"[{len(steps) + 1:2d}/{n_steps}] {label} ...", end=" ")
        t0 = time.perf_counter()
        status = launch(project, prot)
        steps.append(prot)
        # the run's own duration (as in the table), then the wait with the engine's start-up
        say(f"{status} in {_fmt_duration(run_duration(prot))} "
            f"({time.perf_counter() - t0:.1f} s with the engine's start-up)")
        if status != "finished":
            raise _RunFailed(prot)
        return f"{prot.getObjId()}"

    p = s.particle_voxel_size
    try:
        fields = run("ProtImportFluoImages", "import fields of view",
                     filesPattern=data.folder / "fields" / "field_*.ome.tif")
        psf = run("ProtImportPSF", "import PSF", psfFile=data.psf)
        examples = run("ProtImportCoordinates", "example particles",
                       inputImages=f"{fields}.outputImages", coordinatesFile=data.examples,
                       boxSize=s.box_um)
        picked = run("ProtPickParticles", "pick particles", inputImages=f"{fields}.outputImages",
                     inputExamples=f"{examples}.outputCoordinates", channel=0,
                     diameter=s.diameter_um, boxSize=s.box_um, **s.pick)
        particles = run("ProtExtractParticles", "extract particles",
                        inputCoordinates=f"{picked}.outputCoordinates", boxSize=s.box_um,
                        voxelSize=p)
        abinitio = run("ProtAbInitio", "ab initio", inputParticles=f"{particles}.outputParticles",
                       inputPSF=f"{psf}.outputPSF", symmetry=1, **s.abinitio)
        axis = run("ProtAlignSymmetryAxis", "align C9 axis",
                   inputVolume=f"{abinitio}.outputVolume", symmetryOrder=SYMMETRY,
                   inputParticles=f"{abinitio}.outputParticles")
        refined = run("ProtRefine", "refine C9", inputParticles=f"{axis}.outputParticles",
                      inputPSF=f"{psf}.outputPSF", inputVolume=f"{axis}.outputVolume",
                      symmetry=SYMMETRY, searchChannels="0", **s.refine)
        truth = run("ProtImportFluoImages", "import ground truth", filesPattern=data.reference)
        compare = run("ProtCompareVolumes", "compare with ground truth",
                      inputVolume=f"{refined}.outputVolume",
                      referenceVolume=f"{truth}.outputImages.1", symmetry=SYMMETRY,
                      doRegister=True, **s.compare)
    except _RunFailed as failed:
        prot = failed.prot
        say()
        _print_runs(project, stream=printer)
        say(f"\n{prot.getRunName()} {prot.getStatus()}: {prot.getErrorMessage()}")
        say(f"log: {prot.getLogPaths()[1]}")
        return 1

    say()
    _print_runs(project, stream=printer)
    comparison = project.getProtocol(int(compare)).outputComparison
    n_picked = project.getProtocol(int(particles)).outputParticles.getSize()
    say(f"\n{n_picked} particles picked and extracted (of {data.n_particles} simulated)")
    _print_metrics(comparison, project.getProtocol(int(refined)).outputVolume, say)

    t_fig = time.perf_counter()
    report = write_report(project, out_dir, figures=s.report_figures)
    finals = _final_figures(project, refined, compare, str(data.reference), folder)
    n_run_figures = sum(n.endswith(".png") for n in OutputFolder(out_dir).files(by="report"))
    say(f"\nwrote to {out_dir} ({time.perf_counter() - t_fig:.0f} s):")
    say(f"  {', '.join(f.name for f in finals)}")
    say(f"  the report {report.name} with "
        + (f"the {n_run_figures} figures of every output" if s.report_figures
           else "no figure of the intermediate runs (--quick)"))
    say(f"demo finished in {time.perf_counter() - start_wall:.0f} s wall, "
        f"{_cpu_seconds() - start_cpu:.0f} s CPU (user + sys, with the runs' processes); "
        f"project {name} in {project.getPath()}: `spfluo project show {name}`, or open it "
        "in Scipion")
    return 0


class _RunFailed(Exception):
    def __init__(self, prot):
        super().__init__(prot.getRunName())
        self.prot = prot
