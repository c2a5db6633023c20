"""Datasets.  Reading a dataset to run it: ``sample.py`` (the ``Sample`` type), ``readers.py``
(``load_dataset(name)``: the one resolver of dataset names), ``files.py``, ``fetched.py``,
``question_sets.py`` and the embedded ``starter.jsonl``.  Building datasets: :mod:`speedbench.data.builders`."""

from speedbench.data.sample import DatasetError, Sample

__all__ = ["DatasetError", "Sample"]
