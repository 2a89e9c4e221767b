"""Job ``simulate``: a simulated dataset with its ground truth, written to files.

Job file::

    "params":  {"kind": "particles" | "fields", "phantom": "asymmetric", "size": 50,
                "voxel_size": 0.05, "n_channels": 1, "noise_std": 0.2, "n_spots": 120,
                "max_shift_um": 0.1, "poisson_photons": 0,
                # "psf_model": "gaussian"
                "sigma_xy_um": 0.075, "sigma_z_um": 0.25,
                # "psf_model": "widefield-scalar" | "widefield-vectorial" (psfmodels)
                "numerical_aperture": 1.4, "wavelength_um": 0.6, "immersion_index": 1.518,
                "sample_index": 1.518, "depth_um": 0.0,
                # kind "particles"
                "n_particles": 20,
                # kind "fields"
                "field_shape": [Z, Y, X], "field_voxel_size_z": 0.05, "n_fields": 1,
                "particles_per_field": 30, "n_debris": 5, "touching_pairs": 2},
    "outputs": {"volume": ".../ground_truth.ome.tif", "psf": ".../psf.ome.tif",
                "summary": ".../simulation.json",
                # kind "particles"
                "particles_dir": ".../particles", "particles": ".../particles.csv",
                # kind "fields"
                "fields_dir": ".../fields", "coordinates": ".../coordinates.csv",
                "poses": ".../true_poses.csv", "debris": ".../debris.csv"},
    "seed": 0

The PSF is Gaussian (``psf_model`` "gaussian", the setting of Eloy et al. 2023) or a
widefield PSF of Gibson & Lanni's model, scalar or vectorial (Aguet et al. 2009), computed
by psfmodels from the numerical aperture, the emission wavelength, the refractive indices
and the depth of the particles below the coverslip, on the particle box (which truncates it,
as it truncates a measured PSF).  ``poisson_photons`` > 0 draws Poisson noise with that
many photons expected at the brightest voxel before the Gaussian noise ``noise_std``
(fraction of the maximum: a read-noise floor of ``noise_std * poisson_photons`` photons).

Lengths are in micrometres: the voxel size, the PSF standard deviations ``sigma_xy_um`` and
``sigma_z_um`` and the largest particle shift ``max_shift_um`` (defaults: 1.5, 5 and 2
particle voxels); the job converts them to voxels
(:func:`spfluo.algorithms.geometry.um_to_voxels`).  ``size`` and ``field_shape`` are grid
sizes in voxels.

Outputs:

- the ground-truth volume ``(C, D, D, D)`` and the PSF (OME-TIFF, voxel size in the
  metadata): for particles the PSF of the particle grid ``(C, d, d, d)``; for fields the
  same physical PSF sampled on the field's grid (its voxel size, possibly coarser in z);
- kind ``particles``: one OME-TIFF per particle (``particle_000001.ome.tif``...) and a
  particle table (:func:`spfluo.io.write_particle_table`) with ids 1..N, the paths and
  the true poses (stored convention: ``(x, y, z)``, micrometres);
- kind ``fields``: one OME-TIFF per field (``field_001.ome.tif``...), the true particle
  centres as a coordinates CSV (``image_id, x, y, z`` in µm from the centre of voxel 0,
  ``particle_id``), their true orientations as a poses CSV (id = ``particle_id``, zero
  translation, column ``image_id``) and the debris centres (coordinates CSV, written
  when there is debris);
- a summary JSON: the parameters, the voxel sizes of the volume and of the PSF
  (``voxel_size``, ``psf_voxel_size``, ``(z, y, x)`` µm), and for fields the list of
  fields (id, path, shape, voxel size, touching pairs, particle size).
"""

from __future__ import annotations

import numpy as np

from ..algorithms.geometry import (
    um_to_voxels,
    vectors_um_to_voxels,
    vectors_voxels_to_um,
    voxels_to_um,
)
from ..algorithms.psf import gaussian_psf, gibson_lanni_psf
from ..algorithms.simulate import simulate_dataset, simulate_field
from ..io import (
    CoordinateTable,
    write_coordinates_csv,
    write_json_atomic,
    write_particle_table,
    write_poses_csv,
    write_volume,
)
from ..algorithms.limits import (
    MAX_BOX_SIZE,
    MAX_CHANNELS,
    MAX_FIELD_SIZE,
    MAX_FIELDS,
    MAX_OBJECTS_PER_FIELD,
    MAX_PARTICLES,
    MAX_SPOTS,
    simulated_voxels_error,
)
from ._inputs import choice_param, fail, float_param, int_param, reject_renamed_params
from .jobfile import Job, JobError, Progress

__all__ = ["run", "KINDS", "PHANTOMS", "PSF_MODELS"]

KINDS = ("particles", "fields")
PHANTOMS = ("asymmetric", "c9", "npc", "shell", "tube")
PSF_MODELS = ("gaussian", "widefield-scalar", "widefield-vectorial")
# bounds of the optics (psfmodels' domain; beyond them a typo, not a microscope)
_MAX_INDEX, _WAVELENGTH_UM, _MAX_DEPTH_UM = 2.5, (0.2, 2.0), 1000.0
MAX_PHOTONS = 1e9
# lengths of the job file (micrometres) and their defaults in particle voxels
_LENGTH_DEFAULTS_VOXELS = {"sigma_xy_um": 1.5, "sigma_z_um": 5.0, "max_shift_um": 2.0}


def _int(job: Job, name: str, default=..., *, minimum: int = 0, maximum: int) -> int:
    """Integer parameter in ``[minimum, maximum]`` (required when there is no ``default``)."""
    return int_param(job, name, default, minimum=minimum, maximum=maximum)


def _field_shape(job: Job) -> list[int]:
    shape = job.param("field_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or \
            not all(isinstance(s, int) and 0 < s <= MAX_FIELD_SIZE for s in shape):
        raise JobError(f"job simulate: parameter 'field_shape' must be [Z, Y, X] in voxels, "
                       f"each at most {MAX_FIELD_SIZE}, got {shape!r}")
    return list(shape)


def _check_amount(job: Job, kind: str) -> None:
    """Refuse, before any work, a simulation of more voxels than spfluo.algorithms.limits allows."""
    size = _int(job, "size", minimum=8, maximum=MAX_BOX_SIZE)
    n_channels = _int(job, "n_channels", 1, minimum=1, maximum=MAX_CHANNELS)
    _int(job, "n_spots", 120, maximum=MAX_SPOTS)
    if kind == "particles":
        n_voxels = _int(job, "n_particles", 20, minimum=1, maximum=MAX_PARTICLES) * size**3
    else:
        for name, default in (("particles_per_field", 30), ("n_debris", 5),
                              ("touching_pairs", 2)):
            _int(job, name, default, maximum=MAX_OBJECTS_PER_FIELD)
        z, y, x = _field_shape(job)
        n_voxels = _int(job, "n_fields", 1, minimum=1, maximum=MAX_FIELDS) * z * y * x
    error = simulated_voxels_error(n_voxels * n_channels)
    if error:
        raise JobError(f"job simulate: {error}")


def _float(job: Job, name: str, default=..., *, positive: bool = False) -> float:
    """Finite number parameter >= 0 (> 0 when ``positive``; required without ``default``)."""
    return float_param(job, name, default, low=0.0, strict=positive)


def _length_um(job: Job, name: str) -> float:
    """Length parameter ``name`` >= 0 in micrometres (its default is given in particle voxels)."""
    voxel = _float(job, "voxel_size", positive=True)
    return _float(job, name, voxels_to_um(_LENGTH_DEFAULTS_VOXELS[name], voxel))


def _optics(job: Job) -> dict | None:
    """The keyword arguments of :func:`~spfluo.algorithms.psf.gibson_lanni_psf` (None for
    the Gaussian PSF)."""
    model = choice_param(job, "psf_model", "gaussian", PSF_MODELS)
    if model == "gaussian":
        return None
    immersion = float_param(job, "immersion_index", 1.518, low=1.0, high=_MAX_INDEX)
    na = float_param(job, "numerical_aperture", 1.4, low=0.0, strict=True, high=_MAX_INDEX)
    if na >= immersion:
        fail(job, f"the numerical aperture {na:g} must be below the immersion index "
                  f"{immersion:g}")
    wavelength = float_param(job, "wavelength_um", 0.6, low=_WAVELENGTH_UM[0],
                             high=_WAVELENGTH_UM[1])
    return dict(numerical_aperture=na, wavelength=wavelength, immersion_index=immersion,
                sample_index=float_param(job, "sample_index", immersion, low=1.0,
                                         high=_MAX_INDEX),
                depth=float_param(job, "depth_um", 0.0, low=0.0, high=_MAX_DEPTH_UM),
                method=model.split("-")[1])


def _photons(job: Job) -> float | None:
    """Photons expected at the brightest voxel (None: no Poisson noise)."""
    photons = float_param(job, "poisson_photons", 0.0, low=0.0, high=MAX_PHOTONS)
    return photons or None


def _dataset(job: Job, *, n_particles: int, noise_std: float, n_spots: int,
             photons: float | None = None):
    reject_renamed_params(job, {"sigma_xy": "sigma_xy_um", "sigma_z": "sigma_z_um",
                                "max_shift": "max_shift_um"})
    voxel = _float(job, "voxel_size", positive=True)
    phantom = choice_param(job, "phantom", "asymmetric", PHANTOMS)
    return simulate_dataset(
        phantom=phantom,
        size=_int(job, "size", minimum=8, maximum=MAX_BOX_SIZE),
        n_particles=n_particles,
        sigma_xy=um_to_voxels(_length_um(job, "sigma_xy_um"), voxel),
        sigma_z=um_to_voxels(_length_um(job, "sigma_z_um"), voxel),
        optics=_optics(job),
        n_channels=_int(job, "n_channels", 1, minimum=1, maximum=MAX_CHANNELS),
        voxel_size=(voxel, voxel, voxel),
        noise_std=noise_std,
        poisson_photons=photons,
        n_spots=n_spots,
        max_shift=um_to_voxels(_length_um(job, "max_shift_um"), voxel),
        seed=job.seed if job.seed is not None else 0,
    )


def _write_ground_truth(job: Job, data, progress: Progress) -> None:
    write_volume(job.output("volume"), data.volume, data.voxel_size)
    write_volume(job.output("psf"), data.psf, data.voxel_size)
    progress.log(f"ground truth {data.volume.shape} (C, D, D, D) and PSF {data.psf.shape}, "
                 f"voxel {data.voxel_size[0]:g} µm")


def _run_particles(job: Job, progress: Progress) -> dict:
    n = _int(job, "n_particles", 20, minimum=1, maximum=MAX_PARTICLES)
    noise_std = _float(job, "noise_std", 0.2)
    data = _dataset(job, n_particles=n, noise_std=noise_std,
                    n_spots=_int(job, "n_spots", 120, maximum=MAX_SPOTS), photons=_photons(job))
    _write_ground_truth(job, data, progress)
    folder = job.output("particles_dir")
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n + 1)
    paths = []
    for k, (pid, particle) in enumerate(zip(ids, data.particles)):
        path = folder / f"particle_{pid:06d}.ome.tif"
        write_volume(path, particle, data.voxel_size)
        paths.append(str(path))
        if (k + 1) % 50 == 0 or k + 1 == n:
            progress.step(k + 1, n, written=path.name)
    write_particle_table(job.output("particles"), ids, paths,
                         data.poses.to_stored(data.voxel_size))
    return {"n_particles": n, "box_shape": list(data.particles.shape[1:]),
            "voxel_size": list(data.voxel_size), "psf_voxel_size": list(data.voxel_size),
            "noise_std": data.noise_std}


def _field_psf(job: Job, field_vs, field_shape, n_channels: int, particle_size: int,
               particle_vs: float) -> np.ndarray:
    """The PSF sampled on the field's grid, ``(C, Zp, Yp, Xp)``: the same physical PSF as the
    particles'.

    Gaussian (``sigma_xy_um``, ``sigma_z_um``): a box of ``2 ceil(3 sigma) + 1`` field voxels
    per axis; widefield (psfmodels): at most the extent of the particles' PSF (the largest
    odd cube in the particle box, of ``particle_vs`` µm voxels); both capped to the field
    (odd sides).
    """
    optics = _optics(job)
    if optics is None:
        sigma_um = np.array([_length_um(job, "sigma_z_um"), _length_um(job, "sigma_xy_um"),
                             _length_um(job, "sigma_xy_um")])
        sigma_vox = vectors_um_to_voxels(sigma_um, field_vs)
        side = [2 * int(np.ceil(3.0 * s)) + 1 for s in sigma_vox]
    else:
        odd = particle_size if particle_size % 2 else particle_size - 1
        extent = vectors_um_to_voxels(np.full(3, odd * particle_vs), field_vs)
        side = [2 * int(np.floor((e - 1.0) / 2.0 + 1e-9)) + 1 for e in extent]
    side = [max(1, min(n, f if f % 2 else f - 1)) for n, f in zip(side, field_shape)]
    if optics is None:
        psf = gaussian_psf(tuple(side), tuple(sigma_vox))
    else:
        psf = np.asarray(gibson_lanni_psf(tuple(side), voxel_size=tuple(field_vs), **optics),
                         dtype=np.float32)
    return np.repeat(psf[None], n_channels, axis=0)


def _run_fields(job: Job, progress: Progress) -> dict:
    shape = _field_shape(job)
    n_fields = _int(job, "n_fields", 1, minimum=1, maximum=MAX_FIELDS)
    per_field = _int(job, "particles_per_field", 30, minimum=1, maximum=MAX_OBJECTS_PER_FIELD)
    noise_std = _float(job, "noise_std", 0.2)
    # the ground truth of the particle grid (one noiseless particle is drawn with it)
    truth = _dataset(job, n_particles=1, noise_std=0.0, n_spots=0)
    vz = _float(job, "field_voxel_size_z", truth.voxel_size[0], positive=True)
    field_vs = (vz, truth.voxel_size[1], truth.voxel_size[2])
    psf = _field_psf(job, field_vs, shape, truth.n_channels, truth.volume.shape[-1],
                     truth.voxel_size[2])
    photons = _photons(job)
    write_volume(job.output("volume"), truth.volume, truth.voxel_size)
    write_volume(job.output("psf"), psf, field_vs)
    progress.log(f"ground truth {truth.volume.shape} (C, D, D, D), voxel "
                 f"{truth.voxel_size[0]:g} µm; PSF {psf.shape} on the field grid, voxel "
                 f"{field_vs} µm (z, y, x)")
    folder = job.output("fields_dir")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(job.seed if job.seed is not None else 0)
    seeds = rng.integers(0, 2**31 - 1, size=n_fields)
    rows, poses, debris, fields = [], [], [], []
    next_id = 1
    for f in range(n_fields):
        image_id = f"field_{f + 1:03d}"
        fov = simulate_field(truth.volume, psf, shape=tuple(shape), n_particles=per_field,
                             n_debris=_int(job, "n_debris", 5, maximum=MAX_OBJECTS_PER_FIELD),
                             touching_pairs=_int(job, "touching_pairs", 2,
                                                 maximum=MAX_OBJECTS_PER_FIELD),
                             noise_std=noise_std, poisson_photons=photons,
                             voxel_size=field_vs, seed=int(seeds[f]))
        path = folder / f"{image_id}.ome.tif"
        write_volume(path, fov.image, fov.voxel_size)
        n = len(fov.positions)
        pids = np.arange(next_id, next_id + n)
        next_id += n
        rows.append((image_id, vectors_voxels_to_um(fov.positions, fov.voxel_size), pids))
        poses.append((image_id, pids, fov.poses.to_stored(fov.voxel_size)))
        debris.append((image_id, vectors_voxels_to_um(
            np.asarray(fov.debris_positions, float).reshape(-1, 3), fov.voxel_size)))
        fields.append({"image_id": image_id, "path": str(path), "shape": list(fov.image.shape),
                       "voxel_size": list(fov.voxel_size), "n_particles": n,
                       "n_debris": len(fov.debris_positions),
                       "touching_pairs": np.asarray(fov.touching_pairs).tolist(),
                       "particle_size_voxels": float(fov.particle_size)})
        progress.step(f + 1, n_fields, field=image_id, particles=n)
    ids = np.concatenate([r[2] for r in rows])
    table = CoordinateTable(
        image_ids=np.concatenate([[r[0]] * len(r[2]) for r in rows]).astype(str),
        positions_zyx_um=np.concatenate([r[1] for r in rows]).reshape(-1, 3),
        particle_id=ids)
    write_coordinates_csv(job.output("coordinates"), table)
    write_poses_csv(job.output("poses"), ids, np.concatenate([p[2] for p in poses]),
                    extra={"image_id": [p[0] for p in poses for _ in p[1]]})
    n_debris = sum(len(d[1]) for d in debris)
    if n_debris:
        write_coordinates_csv(job.output("debris"), CoordinateTable(
            image_ids=np.array([d[0] for d in debris for _ in d[1]], dtype=str),
            positions_zyx_um=np.concatenate([d[1] for d in debris]).reshape(-1, 3)))
    return {"n_particles": int(len(ids)), "n_debris": n_debris, "fields": fields,
            "voxel_size": list(truth.voxel_size), "psf_voxel_size": list(field_vs),
            "field_voxel_size": list(field_vs), "noise_std": noise_std}


def run(job: Job) -> None:
    """Simulate and write the dataset described by ``job`` (see the module docstring)."""
    kind = choice_param(job, "kind", "particles", KINDS)
    _check_amount(job, kind)
    progress = Progress("simulate")
    summary = _run_particles(job, progress) if kind == "particles" else _run_fields(job, progress)
    summary = {"kind": kind, "params": job.params, "seed": job.seed, **summary}
    write_json_atomic(job.output("summary"), summary)
    progress.log(f"done: {summary['n_particles']} particle(s)")
