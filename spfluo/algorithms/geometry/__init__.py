"""Rotations, poses and their conventions: the one place where they are defined.

Every other module of spfluo calls this package to build, convert, compare or
sample rotations; nothing else converts.

Conventions
-----------
Axes
    Arrays are indexed ``(z, y, x)``; z (array axis 0) is the optical axis.
    Rotations act about the box centre ``(Z//2, Y//2, X//2)``.
Rotation matrices (the *zyx frame*)
    Algorithms use float arrays of shape ``(..., 3, 3)`` that act on column
    vectors of ``(z, y, x)`` coordinates.  They are *active* rotations: the
    rotated volume is ``(R f)(x) = f(R^T x)``.
The xyz frame
    Named representations (Euler angles, quaternions, rotation vectors,
    axis-angle, directions) are defined in the physical, right-handed
    ``(x, y, z)`` frame exactly as :class:`scipy.spatial.transform.Rotation`
    defines them.  A matrix changes frame by ``R_zyx = P R_xyz P`` where ``P``
    reverses the three axes (:func:`swap_xyz_zyx`).  Because the ``(z, y, x)``
    ordering is left-handed, a rotation vector written in ``(z, y, x)`` order
    would have the opposite sign: always write vectors of named
    representations in ``(x, y, z)``.
Pose of a particle
    Rotation ``R`` (zyx frame) and translation ``t`` (voxels, ``(z, y, x)``):
    ``particle(x) = f(R^T (x - c - t) + c)``, i.e. ``y = T_t(R f)``.  The 4x4
    matrix ``[[R, t], [0, 1]]`` maps reference coordinates (relative to the
    centre) to particle coordinates.  A set of poses is a :class:`Poses`.
Stored poses
    The same 4x4 matrix in ``(x, y, z)`` order with the translation in
    micrometres: ``M_xyz = P M_zyx P`` and
    ``t_xyz_um = reverse(t_zyx_vox * voxel_size_zyx)``.
Euler angles
    RELION's ZYZ ``(rot, tilt, psi)``: the pose rotation in the xyz frame is
    ``A = Rotation.from_euler("ZYZ", [rot, tilt, psi]).as_matrix().T``
    (RELION's ``Euler_angles2matrix``, mapping reference coordinates to
    particle coordinates).  Degrees by default (file edges, user parameters).
Quaternions
    Scalar-first ``(w, x, y, z)`` in the xyz frame, canonical sign ``w >= 0``.
Rotation vectors and axis-angle
    xyz frame, radians, right-handed; axis-angle angles are in ``[0, pi]``.
Directions
    ``d = (sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)`` in xyz, azimuth
    ``phi1`` and inclination ``phi2`` from +z (Eloy et al. 2023, sec. 2.1).
Symmetry Cn
    About the physical z axis (array axis 0): rotations by ``2 pi k / n``.  A
    particle is ``R f`` and ``f = C_k f`` for a Cn-symmetric ``f``, so the
    poses ``R`` and ``R C_k`` are equivalent.
Units
    Angles in radians inside algorithms (degrees only where a name or keyword
    says so); translations in voxels; voxel sizes are ``(z, y, x)`` tuples in
    micrometres.  Objects, files and job files carry physical lengths in
    micrometres only (``voxel_size`` and names ending in ``_um``); a job
    converts them to voxels with :mod:`~spfluo.algorithms.geometry.units`.

Matrix outputs keep the floating dtype of their input (float32 in, float32
out; integers give float64); computations run in float64.  :class:`Poses`
always stores float64.

Modules
-------
:mod:`~spfluo.algorithms.geometry.rotations`
    Frame swap, Euler angles, quaternions, rotation vectors, axis-angle, rotations about
    z, the group Cn, random and perturbed rotations.
:mod:`~spfluo.algorithms.geometry.distances`
    Geodesic distances modulo Cn, global alignment of pose sets, pose errors.
:mod:`~spfluo.algorithms.geometry.grids`
    Directions and SO(3) sampling (Fibonacci product grid, local grids).
:mod:`~spfluo.algorithms.geometry.poses`
    :class:`Poses` and the stored <-> algorithm conversion.
:mod:`~spfluo.algorithms.geometry.units`
    Voxel sizes, micrometres <-> voxels.
"""

from __future__ import annotations

from spfluo.algorithms.geometry.distances import (
    align_rotations,
    axis_and_in_plane_errors,
    geodesic_distance,
    geodesic_distance_sym,
    in_plane_resultant,
    pose_errors,
)
from spfluo.algorithms.geometry.grids import (
    SO3Grid,
    direction_angles,
    direction_from_angles,
    fibonacci_directions,
    local_rotation_grid,
    so3_grid,
    so3_grid_for_step,
    uniform_rotation_grid,
)
from spfluo.algorithms.geometry.poses import Poses, check_poses
from spfluo.algorithms.geometry.rotations import (
    axis_angle_from_matrix,
    cyclic_group,
    euler_from_matrix,
    matrix_from_axis_angle,
    matrix_from_euler,
    matrix_from_quaternion,
    matrix_from_rotvec,
    perturb_rotations,
    quaternion_from_matrix,
    random_rotations,
    rotation_about_z,
    rotvec_from_matrix,
    swap_xyz_zyx,
)
from spfluo.algorithms.geometry.units import (
    as_voxel_size,
    um_to_voxels,
    vectors_um_to_voxels,
    vectors_voxels_to_um,
    voxels_to_um,
)

__all__ = [
    # rotations: frames and named representations
    "swap_xyz_zyx", "matrix_from_euler", "euler_from_matrix", "matrix_from_quaternion",
    "quaternion_from_matrix", "matrix_from_rotvec", "rotvec_from_matrix",
    "matrix_from_axis_angle", "axis_angle_from_matrix", "rotation_about_z", "cyclic_group",
    "random_rotations", "perturb_rotations",
    # grids: directions and SO(3) sampling
    "fibonacci_directions", "direction_angles", "direction_from_angles", "SO3Grid", "so3_grid",
    "so3_grid_for_step", "uniform_rotation_grid", "local_rotation_grid",
    # distances: comparing rotations
    "geodesic_distance", "geodesic_distance_sym", "align_rotations", "pose_errors",
    "axis_and_in_plane_errors", "in_plane_resultant",
    # poses and units
    "Poses", "check_poses", "as_voxel_size", "um_to_voxels", "voxels_to_um",
    "vectors_um_to_voxels", "vectors_voxels_to_um",
]
