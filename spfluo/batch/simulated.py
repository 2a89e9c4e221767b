"""Simulated dataset folders in the layout ``spfluo batch`` reads (for tests, benchmarks, demos).

:func:`write_particles_dataset` writes extracted particles of the C9 barrel,
their PSF and the ground truth as ``reference.tif``; :func:`write_fields_dataset`
writes fields of view, the PSF and a few example coordinates.  Both write a
``dataset.json`` with the values the folder's files cannot give (symmetry,
particle diameter) and any extra values asked for.  No pyworkflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..algorithms.phantoms import c9_barrel
from ..algorithms.psf import gaussian_psf
from ..algorithms.simulate import simulate_field, simulate_particles
from ..io import CoordinateTable, write_coordinates_csv, write_volume
from .dataset import DATASET_FILE

__all__ = ["write_particles_dataset", "write_fields_dataset"]


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _write_values(folder: Path, values: dict) -> None:
    with open(folder / DATASET_FILE, "w", encoding="utf-8") as fh:
        json.dump(values, fh, indent=2)


def write_particles_dataset(folder: str | os.PathLike, *, n_particles: int = 20, box: int = 24,
                            voxel_size: float = 0.05, psf_sigma: tuple = (3.0, 1.2),
                            noise_std: float = 0.1, reference: bool = True,
                            values: dict | None = None, seed: int = 0) -> Path:
    """Write simulated C9-barrel particles: ``particles/``, ``psf.tif``, ``reference.tif``.

    Parameters
    ----------
    folder : path
        The dataset folder (created; must not hold a dataset already).
    n_particles : int, default 20
        Number of particles.
    box : int, default 24
        Particle box side, voxels (also the reference's and the PSF's box, at most 15).
    voxel_size : float, default 0.05
        Isotropic voxel size, micrometres.
    psf_sigma : tuple of 2 float, default (3.0, 1.2)
        Gaussian PSF standard deviations ``(z, xy)`` in voxels.
    noise_std : float, default 0.1
        Gaussian noise standard deviation (signal maximum 1).
    reference : bool, default True
        Write the ground truth as ``reference.tif``.
    values : dict, optional
        More ``dataset.json`` values by template alias (e.g. ``{"max_epochs": 3}``).
    seed : int, default 0
        Seed of the simulation.

    Returns
    -------
    Path
        The folder.
    """
    n_particles = _check_positive_int("n_particles", n_particles)
    box = _check_positive_int("box", box, 8)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 µm, got {voxel_size!r}.")
    folder = Path(folder)
    if (folder / DATASET_FILE).exists():
        raise ValueError(f"{folder} already holds a dataset ({DATASET_FILE}): choose a new folder.")
    (folder / "particles").mkdir(parents=True, exist_ok=True)
    vs = (voxel_size,) * 3
    volume = c9_barrel((box,) * 3)
    psf_box = min(box - (box + 1) % 2, 15)
    psf = gaussian_psf((psf_box,) * 3, psf_sigma)
    data = simulate_particles(volume, psf, n_particles=n_particles, noise_std=noise_std,
                              n_spots=0, max_shift=1.0, voxel_size=vs, seed=seed)
    for k, particle in enumerate(data.particles):
        write_volume(folder / "particles" / f"particle_{k:03d}.tif", particle, vs)
    write_volume(folder / "psf.tif", data.psf, vs)
    if reference:
        write_volume(folder / "reference.tif", data.volume, vs)
    _write_values(folder, {"symmetry": 9, **(values or {})})
    return folder


def write_fields_dataset(folder: str | os.PathLike, *, n_fields: int = 1,
                         shape: tuple = (16, 48, 48), particle_box: int = 12,
                         particles_per_field: int = 3, voxel_size: tuple = (0.1, 0.05, 0.05),
                         n_examples: int = 2, values: dict | None = None,
                         seed: int = 0) -> Path:
    """Write a folder of simulated fields of view: ``fields/``, ``psf.tif``, ``examples.csv``.

    Parameters
    ----------
    folder : path
        The dataset folder (created; must not hold a dataset already).
    n_fields : int, default 1
        Number of fields of view.
    shape : tuple of 3 int, default (16, 48, 48)
        Field shape ``(z, y, x)`` in voxels.
    particle_box : int, default 12
        Box of the simulated particle, in lateral voxels.
    particles_per_field : int, default 3
        Particles per field (no debris, no touching pairs).
    voxel_size : tuple of 3 float, default (0.1, 0.05, 0.05)
        Field voxel size ``(z, y, x)``, micrometres.
    n_examples : int, default 2
        Example coordinates written to ``examples.csv`` (from the first field).
    values : dict, optional
        More ``dataset.json`` values by template alias.
    seed : int, default 0
        Seed of the simulation.

    Returns
    -------
    Path
        The folder.
    """
    n_fields = _check_positive_int("n_fields", n_fields)
    particles_per_field = _check_positive_int("particles_per_field", particles_per_field)
    n_examples = _check_positive_int("n_examples", n_examples)
    if n_examples > particles_per_field:
        raise ValueError(f"n_examples ({n_examples}) must be <= particles_per_field "
                         f"({particles_per_field}).")
    folder = Path(folder)
    if (folder / DATASET_FILE).exists():
        raise ValueError(f"{folder} already holds a dataset ({DATASET_FILE}): choose a new folder.")
    (folder / "fields").mkdir(parents=True, exist_ok=True)
    vz, vy, vx = (float(v) for v in voxel_size)
    barrel = c9_barrel((particle_box,) * 3)
    psf = gaussian_psf((9, 9, 9), (1.5 * vx / vz, 1.2))
    ids, positions = [], []
    for k in range(n_fields):
        fov = simulate_field(barrel, psf, shape=tuple(shape), n_particles=particles_per_field,
                             n_debris=0, touching_pairs=0, voxel_size=(vz, vy, vx),
                             seed=seed + k)
        write_volume(folder / "fields" / f"field_{k}.ome.tif", fov.image, (vz, vy, vx))
        if k == 0:
            for pos in fov.positions[:n_examples]:
                ids.append(f"field_{k}")
                positions.append(pos * np.array([vz, vy, vx]))
    write_volume(folder / "psf.tif", psf, (vz, vy, vx))
    write_coordinates_csv(folder / "examples.csv",
                          CoordinateTable(image_ids=np.array(ids),
                                          positions_zyx_um=np.array(positions)))
    _write_values(folder, {"diameter": round(particle_box * vx, 6), "symmetry": 9,
                           **(values or {})})
    return folder
