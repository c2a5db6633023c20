"""Datasets: the Sample type, readers for the official and related formats, the starter set."""

from speedbench.data.sample import DatasetError, Sample

__all__ = ["DatasetError", "Sample"]
