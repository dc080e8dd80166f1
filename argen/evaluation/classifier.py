"""Class accuracy of class-conditional samples, judged by a classifier fitted on real images.

For the 8x8 digits an RBF support-vector machine on raw pixels (scikit-learn) is
enough: it labels the held-out real digits with ~99% accuracy, so the fraction
of generated digits it labels with the class they were asked for measures
whether samples are recognisable. It is refitted on the fixed train split each
time (under a second), so nothing is downloaded or shipped.
"""

from __future__ import annotations

import functools

import numpy as np

from argen.data import load_dataset
from argen.errors import ArgenError

SUPPORTED = ("digits",)


def _features(images_u8: np.ndarray) -> np.ndarray:
    """(N, H, W, C) or (N, C, H, W) uint8 -> (N, H*W*C) floats in [0, 1]."""
    return images_u8.reshape(len(images_u8), -1).astype(np.float64) / 255.0


@functools.cache
def fitted_classifier(dataset: str = "digits"):
    """(classifier, its accuracy on the real test split)."""
    if dataset not in SUPPORTED:
        raise ArgenError(f"no reference classifier for dataset {dataset!r}; available: {', '.join(SUPPORTED)}")
    from sklearn.svm import SVC

    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    clf = SVC(C=10.0, gamma="scale").fit(_features(train.images.numpy()), train.labels.numpy())
    acc = float((clf.predict(_features(test.images.numpy())) == test.labels.numpy()).mean())
    return clf, acc


def class_accuracy(images_u8: np.ndarray, labels: np.ndarray, dataset: str = "digits") -> dict[str, float]:
    """Overall and per-class share of samples the reference classifier labels with their requested class."""
    clf, real_acc = fitted_classifier(dataset)
    if images_u8.ndim == 4 and images_u8.shape[-1] in (1, 3):
        images_u8 = images_u8.transpose(0, 3, 1, 2)  # NHWC -> NCHW, the layout the classifier was fitted on
    pred = clf.predict(_features(images_u8))
    labels = np.asarray(labels)
    out = {"class_accuracy": float((pred == labels).mean()), "classifier_test_accuracy": real_acc}
    for c in np.unique(labels):
        out[f"class_accuracy_{int(c)}"] = float((pred[labels == c] == c).mean())
    return out
