"""``calcnode batch``: many studies on a Dask cluster, resumable, one results table.

* :mod:`.inputs` -- which files, grouped by study (folder or manifest);
* :mod:`.store`  -- the output folder: per-study objects and done markers, the run's tables;
* :mod:`.run`    -- the per-study Dask task and the run.
"""
from .inputs import InputFile, Inventory, ManifestError, Study, inventory
from .run import BatchOptions, run_batch, study_task
from .store import FAILURE_COLUMNS, MARKER, RESULT_COLUMNS, read_marker, study_dir

__all__ = ["BatchOptions", "run_batch", "study_task", "inventory", "Inventory", "InputFile", "Study",
           "ManifestError", "MARKER", "RESULT_COLUMNS", "FAILURE_COLUMNS", "read_marker", "study_dir"]
