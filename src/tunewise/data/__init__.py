"""Reading, validation, quarantine and splits of labeled data: used by every stage."""

from tunewise.data.prepare import (
    available_splits,
    data_files,
    derive_labels,
    load_examples,
    load_labels,
    load_split,
    make_ids_unique,
    prepare_data,
)
from tunewise.data.readers import Example, ExampleChecker, Quarantined, Row, read_labeled_file, read_records
from tunewise.data.splits import stratified_split

__all__ = [
    "Example",
    "ExampleChecker",
    "load_examples",
    "read_records",
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
