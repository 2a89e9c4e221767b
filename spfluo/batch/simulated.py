"""Simulated dataset folders in the layout ``spfluo batch`` reads (for tests, benchmarks, demos).

:func:`write_particles_dataset` writes extracted particles of the C9 barrel,
their PSF and the ground truth as ``reference.tif``; :func:`write_fields_dataset`
writes fields of view, the PSF and a few example coordinates.  Both write a
``dataset.json`` with the values the folder's files cannot give (symmetry,
particle diameter) and any extra values asked for.  :func:`write_acquisition` writes
what a microscope and a user give: camera fields (uint16 ImageJ TIFF), a bead image at
the fields' sampling and a picks CSV.  No pyworkflow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..algorithms.phantoms import c9_barrel
from ..algorithms.fourier import shift_volume
from ..algorithms.psf import gaussian_psf, gibson_lanni_psf
from ..algorithms.simulate import simulate_field, simulate_particles
from ..io import CoordinateTable, write_coordinates_csv, write_volume
from .dataset import DATASET_FILE

__all__ = ["write_particles_dataset", "write_fields_dataset", "Acquisition", "write_acquisition"]


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_fields(n_fields, particles_per_field, n_examples) -> tuple[int, int, int]:
    """Positive counts of fields, particles per field and examples (at most the particles)."""
    n_fields = _check_positive_int("n_fields", n_fields)
    particles_per_field = _check_positive_int("particles_per_field", particles_per_field)
    n_examples = _check_positive_int("n_examples", n_examples)
    if n_examples > particles_per_field:
        raise ValueError(f"n_examples ({n_examples}) must be <= particles_per_field "
                         f"({particles_per_field}).")
    return n_fields, particles_per_field, n_examples


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
    n_fields, particles_per_field, n_examples = _check_fields(n_fields, particles_per_field,
                                                              n_examples)
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


@dataclass(frozen=True)
class Acquisition:
    """The files of :func:`write_acquisition` and the truth behind them.

    Attributes
    ----------
    fields : list of Path
        ``fov_K.tif``: ImageJ hyperstacks, uint16, voxel size in their metadata.
    bead : Path
        ``bead.tif``: the bead image (ImageJ, uint16) at the fields' sampling.
    picks : Path
        ``picks.csv``: ``image_id, x, y, z`` (µm from the centre of the first voxel).
    diameter_um : float
        Visible diameter of the particle, micrometres.
    positions_um : list of ndarray, shape (N_k, 3)
        True particle centres per field, ``(z, y, x)`` in micrometres.
    bead_offset : tuple of 3 float
        Bead centre minus the box centre of ``bead.tif``, voxels ``(z, y, x)``.
    """

    fields: list
    bead: Path
    picks: Path
    diameter_um: float
    positions_um: list
    bead_offset: tuple


def write_acquisition(folder: str | os.PathLike, *, n_fields: int = 2,
                      field_shape: tuple = (64, 128, 128),
                      voxel_size: tuple = (0.15, 0.05, 0.05), psf_shape: tuple = (21, 31, 31),
                      particle_box: int = 24, particles_per_field: int = 8, n_examples: int = 4,
                      numerical_aperture: float = 1.4, wavelength: float = 0.52,
                      bead_offset: tuple = (0.4, -0.3, 0.35), seed: int = 0) -> Acquisition:
    """Write an acquisition as a user brings it: fields, a measured bead, a few picks.

    The fields are simulated C9 barrels (:func:`spfluo.algorithms.simulate.simulate_field`,
    one debris blob per field) blurred by a widefield Gibson & Lanni PSF (oil objective,
    watery sample 2 µm deep) sampled at the fields' voxels, scaled to camera counts (offset
    100, peak about 4100) and stored as uint16 ImageJ TIFF with their voxel size.  The bead
    is the same PSF at the same sampling in a box of ``psf_shape`` (larger than the
    particles' box), moved off centre by ``bead_offset`` voxels, at 5000 counts over an
    offset of 100 with Gaussian read noise of 4 counts.  The picks are the first
    ``n_examples`` particles of the first field, jittered by up to half a voxel.

    Parameters
    ----------
    folder : path
        Created when missing; the files are written there.
    n_fields, particles_per_field, n_examples : int
    field_shape, psf_shape : tuple of 3 int
        ``(z, y, x)`` in voxels.
    voxel_size : tuple of 3 float
        ``(z, y, x)`` voxel size of the fields and the bead, micrometres.
    particle_box : int
        Box of the simulated particle, in lateral voxels.
    numerical_aperture, wavelength : float
        Objective NA and emission wavelength (µm) of the PSF.
    bead_offset : tuple of 3 float
        Sub-voxel offset of the bead, voxels ``(z, y, x)``.
    seed : int

    Returns
    -------
    Acquisition
    """
    n_fields, particles_per_field, n_examples = _check_fields(n_fields, particles_per_field,
                                                              n_examples)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vs = tuple(float(v) for v in voxel_size)
    rng = np.random.default_rng(seed)
    psf = gibson_lanni_psf(tuple(psf_shape), voxel_size=vs,
                           numerical_aperture=numerical_aperture, wavelength=wavelength,
                           immersion_index=1.518, sample_index=1.38, depth=2.0)
    barrel = c9_barrel((particle_box,) * 3)
    fields, positions = [], []
    for k in range(n_fields):
        fov = simulate_field(barrel, psf, shape=tuple(field_shape),
                             n_particles=particles_per_field, n_debris=1, touching_pairs=0,
                             noise_std=0.05, voxel_size=vs, seed=seed + k)
        counts = np.clip(np.rint(100 + 4000 * fov.image), 0, 65535).astype(np.uint16)
        fields.append(write_volume(folder / f"fov_{k}.tif", counts, vs))
        positions.append(fov.positions * np.array(vs))
    bead = shift_volume(psf.astype(np.float64), np.asarray(bead_offset, dtype=np.float64))
    bead = 100 + 5000 * np.clip(bead, 0, None) / bead.max() + rng.normal(0, 4, bead.shape)
    bead_path = write_volume(folder / "bead.tif",
                             np.clip(np.rint(bead), 0, 65535).astype(np.uint16), vs)
    picks = positions[0][:n_examples] + rng.uniform(-0.5, 0.5, (n_examples, 3)) * np.array(vs)
    write_coordinates_csv(folder / "picks.csv", CoordinateTable(
        image_ids=np.array(["fov_0"] * n_examples), positions_zyx_um=np.clip(picks, 0, None)))
    return Acquisition(fields=fields, bead=bead_path, picks=folder / "picks.csv",
                       diameter_um=0.8 * particle_box * vs[2], positions_um=positions,
                       bead_offset=tuple(float(o) for o in bead_offset))
