"""Batch processing: a workflow template run on many dataset folders, in parallel on Dask.

- :mod:`spfluo.batch.dataset`: the layout of a dataset folder and the template values it gives;
- :mod:`spfluo.batch.templates`: templates found, filled and loaded with the engine's API
  (imports pyworkflow: bootstrap the environment first);
- :mod:`spfluo.batch.runner`: one project per dataset, the summary CSV, re-runs.

Importing this package does not import pyworkflow (Dask workers bootstrap the
engine's environment before they import it).
"""

from .dataset import DATASET_FILE, Dataset, project_name, read_dataset
from .runner import (
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    BatchResult,
    process_dataset,
    read_summary,
    run_batch,
)

__all__ = [
    "DATASET_FILE",
    "Dataset",
    "read_dataset",
    "project_name",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "BatchResult",
    "run_batch",
    "process_dataset",
    "read_summary",
]
