"""In-memory image data sets."""

from argen.data.datasets import DATASETS, SPLITS, ImageDataset, load_dataset

__all__ = ["DATASETS", "SPLITS", "ImageDataset", "load_dataset"]
