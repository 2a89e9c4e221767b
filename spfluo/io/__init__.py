"""File input and output for spfluo, usable without pyworkflow.

- :mod:`~spfluo.io.volumes`: TIFF (plain, ImageJ, OME-TIFF) and MRC volumes with voxel sizes;
- :mod:`~spfluo.io.poses`: stored poses in CSV (4x4 matrices or RELION Euler angles);
- :mod:`~spfluo.io.star`: RELION 3.1 STAR files and poses in them;
- :mod:`~spfluo.io.particles`: particle tables (files, ids, optional poses) for jobs;
- :mod:`~spfluo.io.coordinates`: particle coordinates in CSV;
- :mod:`~spfluo.io.jobfile`: the job file (``job.json``) a protocol writes and a job reads;
- :mod:`~spfluo.io.image_list`: the list of images a picking or extraction job reads;
- :mod:`~spfluo.io.results`: the result files of the jobs (FSC and conical FSC curves,
  pose errors, refinement logs, ab initio energies and marginals, JSON summaries);
- :mod:`~spfluo.io.atomic`: atomic writes (temporary name, then rename);
- :mod:`~spfluo.io.runlock`: the lock a worker holds on its run folder.

Units: micrometres for lengths, ``(z, y, x)`` for voxel sizes and in-memory arrays, ``(x, y, z)``
for stored poses (see ``docs/conventions.md``).
"""

from spfluo.io._files import regular_file
from spfluo.io.atomic import atomic_write_path, remove_temporaries, write_json_atomic
from spfluo.io.coordinates import CoordinateTable, read_coordinates_csv, write_coordinates_csv
from spfluo.io.image_list import ImageEntry, read_image_list, write_image_list
from spfluo.io.jobfile import Job, JobError, load_job, read_json_file, write_job
from spfluo.io.particles import (
    ParticleTable,
    iter_particle_batches,
    particle_stack_info,
    read_particle_stack,
    read_particle_table,
    write_particle_table,
)
from spfluo.io.poses import PoseTable, read_poses_csv, write_poses_csv
from spfluo.io.results import (
    REFINE_LOG_COLUMNS,
    read_conical_csv,
    read_energies_csv,
    read_fsc_csv,
    read_fsc_details,
    read_marginals_npz,
    read_pose_error_parts,
    read_pose_errors_csv,
    read_refine_log,
    read_job_error,
    read_summary,
    write_conical_csv,
    write_energies_csv,
    write_fsc_csv,
    write_job_error,
    write_marginals_npz,
    write_pose_errors_csv,
    write_refine_log,
)
from spfluo.io.runlock import LockHeld, hold_lock, lock_holder
from spfluo.io.star import read_poses_star, read_star, write_poses_star, write_star
from spfluo.io.volumes import VolumeData, read_shape, read_volume, read_voxel_size, write_volume

__all__ = [
    "atomic_write_path",
    "write_json_atomic",
    "remove_temporaries",
    "regular_file",
    "LockHeld",
    "hold_lock",
    "lock_holder",
    "VolumeData",
    "read_volume",
    "read_voxel_size",
    "read_shape",
    "write_volume",
    "PoseTable",
    "read_poses_csv",
    "write_poses_csv",
    "read_star",
    "write_star",
    "read_poses_star",
    "write_poses_star",
    "ParticleTable",
    "read_particle_table",
    "write_particle_table",
    "read_particle_stack",
    "iter_particle_batches",
    "particle_stack_info",
    "CoordinateTable",
    "read_coordinates_csv",
    "write_coordinates_csv",
    "Job",
    "JobError",
    "load_job",
    "write_job",
    "read_json_file",
    "ImageEntry",
    "read_image_list",
    "write_image_list",
    "write_fsc_csv",
    "read_fsc_csv",
    "read_fsc_details",
    "write_conical_csv",
    "read_conical_csv",
    "write_pose_errors_csv",
    "read_pose_error_parts",
    "read_pose_errors_csv",
    "REFINE_LOG_COLUMNS",
    "write_refine_log",
    "read_refine_log",
    "write_energies_csv",
    "read_energies_csv",
    "write_marginals_npz",
    "read_marginals_npz",
    "read_summary",
    "write_job_error",
    "read_job_error",
]
