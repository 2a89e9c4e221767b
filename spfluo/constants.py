"""Names, defaults and units shared by the plugin layer (protocols, objects, CLI).

Algorithms take their defaults from their own signatures; this module holds
what the plugin, the jobs and the command line must agree on.
"""

__all__ = [
    "SPFLUO_HOME_VAR", "PLUGIN_NAME", "DOMAIN_NAME",
    "UNIT_LENGTH", "UNIT_ANGLE",
    "JOB_FILE", "JOB_MODULE", "EXIT_JOB_ERROR", "EXIT_JOB_CRASH", "WORKER_LOCK",
    "JOB_ERROR_FILE",
    "VOLUME_EXT", "POSES_EXT",
    "DEVICE_CPU", "DEVICE_GPU", "DASK_ADDRESS",
]

#: Environment variable that moves the spfluo home folder (projects, engine config).
SPFLUO_HOME_VAR = "SPFLUO_HOME"

PLUGIN_NAME = "spfluo"
DOMAIN_NAME = "spfluo"

#: Every physical length is in micrometres; every label says so.
UNIT_LENGTH = "µm"
UNIT_ANGLE = "deg"

#: The external-process contract: ``python -m spfluo.jobs STEP extra/<step>_job.json``.
JOB_FILE = "job.json"
JOB_MODULE = "spfluo.jobs"
#: Exit status of a job that rejected its input (one-line reason on stderr).
EXIT_JOB_ERROR = 2
#: Lock file a running job holds beside its job file (``extra/`` of its run): one worker
#: per run folder (:mod:`spfluo.io.runlock`).
WORKER_LOCK = ".spfluo-worker.lock"
#: Exit status of a job that failed otherwise (out of memory, a full disk, a bug).
EXIT_JOB_CRASH = 1
#: The reason of a failed job, written beside its job file (``extra/`` of its run):
#: :func:`spfluo.io.results.write_job_error`; the protocol makes it the run's error.
JOB_ERROR_FILE = "job_error.json"

#: File formats written by spfluo: volumes as OME-TIFF, poses as CSV.
VOLUME_EXT = ".ome.tif"
POSES_EXT = ".csv"

DEVICE_CPU = "cpu"
DEVICE_GPU = "gpu"

#: The address of a Dask scheduler (``spfluo batch --scheduler``, the ``scheduler`` of the
#: picking and extraction jobs), a regular expression.
DASK_ADDRESS = r"(tcp|tls|ucx)://[A-Za-z0-9.\-]+:[0-9]{1,5}"
