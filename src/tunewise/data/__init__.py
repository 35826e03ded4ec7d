"""The data stage: read, validate, quarantine and split the recipe's data files; write data/.

The rows it writes, and their readers, live in `tunewise.artifacts.rows`: later stages read data/ through those.
"""

from tunewise.data.prepare import data_files, derive_labels, make_ids_unique, prepare_data
from tunewise.data.readers import ExampleChecker, Quarantined, read_labeled_file, read_records
from tunewise.data.splits import stratified_split

__all__ = [
    "ExampleChecker",
    "Quarantined",
    "data_files",
    "derive_labels",
    "make_ids_unique",
    "prepare_data",
    "read_labeled_file",
    "read_records",
    "stratified_split",
]
