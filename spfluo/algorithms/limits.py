"""The largest work a run may ask for: a maximum for every count parameter, cost estimates.

A count parameter (iterations, epochs, orientations, orders, boxes, particles...) that
has no bound can ask for work that runs until it is killed.  Every one has its
maximum here; the protocol forms refuse a larger value before anything is saved
(:func:`spfluo.protocols.base.add_count_param`), and the jobs refuse it again before
reading their data (``maximum=`` of :func:`spfluo.jobs._inputs.int_param`), both
reading the constants below.  Where the cost is a product of parameters (orientations
drawn per particle, rotations of a search grid, voxels of a simulation), the estimate
below is refused above its own maximum.

The maxima are far above the published settings (in brackets) and the defaults.
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_SEED", "MAX_SYMMETRY_ORDER", "MAX_SOLVER_ITERATIONS", "MAX_EPOCHS", "MAX_STARTS",
    "MAX_DIRECTIONS",
    "MAX_IN_PLANE_ANGLES", "MAX_ORIENTATIONS", "MAX_GRID_DIRECTIONS", "MAX_GRID_IN_PLANE_ANGLES",
    "MAX_PROBES", "MAX_CLASSES", "MAX_BOX_SIZE",
    "MAX_OUTER_ITERATIONS", "MAX_GRADIENT_STEPS", "MAX_BATCH_SIZE", "MAX_CHANNELS",
    "MAX_PARTICLES", "MAX_FIELD_SIZE", "MAX_FIELDS", "MAX_OBJECTS_PER_FIELD", "MAX_SPOTS",
    "MAX_SEARCH_ROTATIONS", "MAX_SIMULATED_VOXELS", "MAX_GPU_ID", "MAX_WORKERS", "MAX_DPI",
    "global_search_rotations", "local_search_rotations", "search_stage_rotations",
    "search_size_error", "orientations_error", "simulated_voxels_error",
    "gigabytes", "memory_error", "particles_bytes", "MAX_PSF_VOXELS", "psf_size_error",
]

#: Random seed (NumPy accepts any non-negative integer; 32 bits are plenty).
MAX_SEED = 2**32 - 1
#: Order n of a cyclic symmetry Cn, and the largest order tried by the estimate [9, 12].
MAX_SYMMETRY_ORDER = 100
#: Iterations of one iterative reconstruction (ADMM, deconvolution) [100].
MAX_SOLVER_ITERATIONS = 10_000
#: Epochs of the SGD ab initio [40].
MAX_EPOCHS = 1_000
#: Random starts of the SGD ab initio, one epoch each [3].
MAX_STARTS = 50
#: Directions N_d and in-plane angles N_psi drawn per particle and epoch [64, 8].
MAX_DIRECTIONS = 4_096
MAX_IN_PLANE_ANGLES = 360
#: Orientations N_d x N_psi evaluated per particle and epoch [512].
MAX_ORIENTATIONS = 32_768
#: Grid of the sampling distributions: directions M_d and in-plane angles M_psi [1500, 72].
MAX_GRID_DIRECTIONS = 100_000
MAX_GRID_IN_PLANE_ANGLES = 3_600
#: Random proposals that set the starting temperature of an annealing chain [8].
MAX_PROBES = 1_000
#: k-means classes of the annealing ab initio [5 to 10].
MAX_CLASSES = 1_000
#: Side of a cubic box in voxels: particles, simulated boxes, working boxes [20 to 64].
MAX_BOX_SIZE = 512
#: Outer iterations of a refinement (exhaustive, continuous) [5, 2].
MAX_OUTER_ITERATIONS = 1_000
#: Gradient steps per continuous refinement iteration [3].
MAX_GRADIENT_STEPS = 100
#: Particles read and processed together [16].
MAX_BATCH_SIZE = 4_096
#: Channels of an image; a channel number is below it.
MAX_CHANNELS = 64
#: Particles of a simulated dataset [20 to 1000].
MAX_PARTICLES = 100_000
#: Side of a simulated field of view, voxels per axis [256].
MAX_FIELD_SIZE = 4_096
#: Simulated fields of view [1 to 10].
MAX_FIELDS = 1_000
#: Particles, debris or touching pairs per simulated field [20].
MAX_OBJECTS_PER_FIELD = 10_000
#: Labelling defects (spots) per simulated particle [120].
MAX_SPOTS = 10_000
#: Rotations tried per particle in one exhaustive search stage or registration grid
#: [1,854 for 20 degrees over the whole space; 1,331 for 1 degree over +-5].
MAX_SEARCH_ROTATIONS = 200_000
#: Voxels of a simulated dataset, all particles or fields and channels (4 GB of float32).
MAX_SIMULATED_VOXELS = 1_000_000_000
#: Largest GPU id of a GPU list (the engine expands a range such as 0-3 into every id).
MAX_GPU_ID = 1_023
#: Worker processes of a batch (Dask) or of a catalog sync [2].
MAX_WORKERS = 256
#: Resolution of a figure written by `spfluo show` or `spfluo report`, dots per inch [80].
MAX_DPI = 600


def global_search_rotations(step_deg: float, symmetry: int = 1) -> int:
    """Rotations of a grid covering SO(3)/Cn with a spacing of ``step_deg`` degrees.

    One direction per ``step^2`` of solid angle times the in-plane angles of one
    asymmetric unit: the size of :func:`spfluo.algorithms.geometry.uniform_rotation_grid`.
    """
    from spfluo.algorithms.geometry.grids import grid_size_for_step

    n_directions, n_psi = grid_size_for_step(math.radians(step_deg), max(1, symmetry))
    return n_directions * n_psi


def local_search_rotations(step_deg: float, range_deg: float) -> int:
    """Rotations of a local search of ``+-range_deg`` at ``step_deg`` (a cubic lattice bound)."""
    m = math.floor(range_deg / step_deg * (1 + 1e-9))
    return (2 * m + 1) ** 3


def search_stage_rotations(step_deg: float, range_deg: float | None, symmetry: int = 1) -> int:
    """Rotations of one exhaustive search stage (``range_deg`` None: the whole space)."""
    if range_deg is None:
        return global_search_rotations(step_deg, symmetry)
    return local_search_rotations(step_deg, range_deg)


def search_size_error(step_deg: float, range_deg: float | None = None, symmetry: int = 1, *,
                      what: str) -> str | None:
    """Why a search of ``step_deg`` over ``range_deg`` (None: all) is refused, or None.

    ``what`` names the search in the message ("Search schedule stage '1:all'").
    """
    n = search_stage_rotations(step_deg, range_deg, symmetry)
    if n <= MAX_SEARCH_ROTATIONS:
        return None
    extent = "the whole rotation space" if range_deg is None else f"+-{range_deg:g} deg"
    return (f"{what}: a step of {step_deg:g} deg over {extent} tries {n:,} rotations per "
            f"particle, more than {MAX_SEARCH_ROTATIONS:,}: use a coarser step.")


def orientations_error(n_directions: int, n_psi: int) -> str | None:
    """Why ``n_directions x n_psi`` orientations per particle and epoch are refused, or None."""
    n = n_directions * n_psi
    if n <= MAX_ORIENTATIONS:
        return None
    return (f"N_d x N_psi = {n:,} orientations per particle and epoch is more than "
            f"{MAX_ORIENTATIONS:,}: draw fewer directions or in-plane angles.")


def simulated_voxels_error(n_voxels: int) -> str | None:
    """Why a simulation of ``n_voxels`` voxels (all images, all channels) is refused, or None."""
    if n_voxels <= MAX_SIMULATED_VOXELS:
        return None
    return (f"The simulation holds {n_voxels:,} voxels (all particles or fields, all channels), "
            f"more than {MAX_SIMULATED_VOXELS:,}: simulate fewer or smaller images.")


# ----------------------------------------------------------------------------- memory
#: Bytes of a float32 voxel.
_FLOAT32 = 4


def gigabytes(n_bytes: float) -> str:
    """``n_bytes`` as text: GB (10^9 bytes) with one decimal, MB below 1 GB, kB below 1 MB."""
    if n_bytes < 1e6:
        return f"{n_bytes / 1e3:.0f} kB"
    if n_bytes < 1e9:
        return f"{n_bytes / 1e6:.0f} MB"
    return f"{n_bytes / 1e9:.1f} GB"


def particles_bytes(n_particles: int, n_channels: int, box: int) -> int:
    """Bytes of ``n_particles`` float32 particles of ``n_channels`` x ``box^3`` voxels."""
    return int(n_particles) * int(n_channels) * int(box) ** 3 * _FLOAT32


def memory_error(estimate_bytes: float, available_bytes: float | None, *, what: str,
                 fix: str) -> str | None:
    """Why a run whose peak memory is ``estimate_bytes`` is refused on a machine of
    ``available_bytes``, or None (also when the machine's memory is unknown).

    ``what`` says what needs the memory and ``fix`` names the parameters to change.
    """
    if available_bytes is None or estimate_bytes <= available_bytes:
        return None
    return (f"{what} needs about {gigabytes(estimate_bytes)} of memory at its peak, more than "
            f"the {gigabytes(available_bytes)} of this machine: {fix}.")


#: Voxels per channel of a PSF file: the largest particle box (``MAX_BOX_SIZE^3``).  A PSF
#: is cropped to the particles' box; a larger file is a field of view given by mistake.
MAX_PSF_VOXELS = MAX_BOX_SIZE**3


def psf_size_error(shape_zyx, *, what: str) -> str | None:
    """Why a PSF of ``shape_zyx`` voxels (one channel, read from the file's header) is
    refused, or None.  ``what`` names the file in the message."""
    z, y, x = (int(s) for s in shape_zyx)
    n = z * y * x
    if n <= MAX_PSF_VOXELS:
        return None
    return (f"{what} holds {z} x {y} x {x} voxels (z, y, x; {gigabytes(n * _FLOAT32)} as "
            f"float32), much larger than any particle box (at most {MAX_BOX_SIZE}^3 voxels): "
            "it looks like a field of view, not a PSF. Crop the bead (a few times the "
            "particle's size) or import the field with 'import images'.")
