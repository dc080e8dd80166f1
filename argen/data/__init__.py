"""Image data sets (in memory, or image folders decoded on demand), their training flips, and
pre-tokenized codes (``argen.data.codes``)."""

from argen.data.datasets import DATASETS, SPLITS, FolderDataset, ImageDataset, flips, load_dataset

__all__ = ["DATASETS", "SPLITS", "FolderDataset", "ImageDataset", "flips", "load_dataset"]
