"""Reading, validation, quarantine and splits of labeled data: used by every stage."""

from tunewise.data.prepare import (
    available_splits,
    data_files,
    derive_labels,
    load_labels,
    load_split,
    make_ids_unique,
    prepare_data,
)
from tunewise.data.readers import Quarantined, Row, read_labeled_file
from tunewise.data.splits import stratified_split

__all__ = [
    "Quarantined",
    "Row",
    "available_splits",
    "data_files",
    "derive_labels",
    "load_labels",
    "load_split",
    "make_ids_unique",
    "prepare_data",
    "read_labeled_file",
    "stratified_split",
]
