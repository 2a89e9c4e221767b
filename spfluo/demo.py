"""``spfluo demo``: simulated fields of view through the pipeline, in a new project.

Stage of the pipeline covered so far: simulate two fields of view of C9
barrels (two channels) and their PSF, write them as OME-TIFF files, import
images, PSF and a few example coordinates, print the project and write the
figures of every output.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo", "DemoSettings"]


class DemoSettings:
    """Sizes of the demo (default) and of its ``--quick`` smoke test."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.n_fields = 2
        self.particle_size = 20 if quick else 32          # box of the particle, voxels
        self.field_shape = (24, 96, 96) if quick else (32, 160, 160)
        self.particles_per_field = 6 if quick else 15
        self.voxel_size = (0.12, 0.04, 0.04)                # µm (z, y, x): anisotropic
        self.psf_sigma_um = (0.24, 0.06)                    # µm (z, xy)
        self.n_examples = 4 if quick else 8
        self.seed = 0


def _new_project_name() -> str:
    from .workflow import list_projects

    taken = {p.getName() for p in list_projects()}
    for k in itertools.count(1):
        name = f"spfluo-demo-{k}"
        if name not in taken:
            return name
    raise RuntimeError("unreachable")


def simulate_demo_data(folder: Path, settings: DemoSettings) -> dict:
    """Write the demo's fields of view, PSF and example picks; return their paths and truth."""
    from .algorithms.phantoms import c9_barrel
    from .algorithms.psf import gaussian_psf
    from .algorithms.simulate import simulate_field
    from .io import CoordinateTable, write_coordinates_csv, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    s = settings
    barrel = c9_barrel((s.particle_size,) * 3, second_channel=True)
    vz, vy, vx = s.voxel_size
    sz, sxy = s.psf_sigma_um
    psf = gaussian_psf((15, 15, 15), (sz / vz, sxy / vy, sxy / vx))
    fields, truth = [], []
    rng = np.random.default_rng(s.seed)
    ids, positions = [], []
    for k in range(s.n_fields):
        field = simulate_field(barrel, psf, shape=s.field_shape, n_particles=s.particles_per_field,
                               n_debris=2, touching_pairs=1, voxel_size=s.voxel_size,
                               seed=s.seed + k)
        path = folder / f"field_{k}.ome.tif"
        write_volume(path, field.image, s.voxel_size, channel_names=["barrel", "torus"])
        fields.append(path)
        truth.append(field)
        # the user's examples: a few isolated particles (the touching pairs are rows 0-1)
        for i in rng.permutation(np.arange(2, len(field.positions)))[: s.n_examples // s.n_fields]:
            ids.append(f"field_{k}")
            positions.append(field.positions[i] * np.asarray(s.voxel_size))
    psf_path = folder / "psf.ome.tif"
    write_volume(psf_path, psf, s.voxel_size)
    examples = folder / "examples.csv"
    write_coordinates_csv(examples, CoordinateTable(image_ids=np.array(ids),
                                                    positions_zyx_um=np.array(positions)))
    return {"fields": fields, "psf": psf_path, "examples": examples, "truth": truth}


def run_demo(*, name: str | None = None, quick: bool = False, out: str | None = None) -> int:
    """Run the demo; returns the process exit status."""
    from .cli import print_project
    from .viewers import figures_for
    from .workflow import create_project, launch, new_protocol

    start = time.perf_counter()
    settings = DemoSettings(quick)
    name = name or _new_project_name()
    project = create_project(name)
    data = simulate_demo_data(Path(project.getPath()) / "demo-data", settings)
    print(f"simulated {settings.n_fields} fields of view {settings.field_shape} (z, y, x) with "
          f"{settings.particles_per_field} C9 barrels each, 2 channels, in {data['fields'][0].parent}")

    steps = []

    def run(cls, label, **params):
        prot = new_protocol(project, cls, {k: str(v) for k, v in params.items()}, label=label)
        status = launch(project, prot)
        steps.append(prot)
        if status != "finished":
            raise RuntimeError(f"{label} failed: {prot.getErrorMessage()}")
        return prot

    images = run("ProtImportFluoImages", "import fields",
                 filesPattern=str(data["fields"][0].parent / "field_*.ome.tif"))
    run("ProtImportPSF", "import PSF", psfFile=data["psf"])
    run("ProtImportCoordinates", "example picks",
        inputImages=f"{images.getObjId()}.outputImages", coordinatesFile=data["examples"],
        boxSize=settings.particle_size * settings.voxel_size[2])

    print()
    print_project(project)
    out_dir = Path(out or "spfluo-demo-figures")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for prot in steps:
        for out_name, obj in prot.iterOutputAttributes():
            try:
                figures = figures_for(obj)
            except ValueError:
                continue
            for fig_name, fig in figures:
                path = out_dir / f"{prot.getObjId():03d}_{out_name}_{fig_name}.png"
                fig.savefig(path, dpi=80)
                written += 1
    print(f"\nwrote {written} figure(s) to {os.path.abspath(out_dir)}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; project {name} "
          f"(spfluo project show {name})")
    return 0
