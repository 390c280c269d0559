"""Classification report: confusion matrix, per-class precision/recall/F1, accuracy.

    confusion[i, j]  = number of samples of true class i predicted as class j
    precision_j      = confusion[j, j] / sum_i confusion[i, j]   (column)
    recall_i         = confusion[i, i] / sum_j confusion[i, j]   (row)
    F1               = 2 * precision * recall / (precision + recall)

Host-side NumPy and pandas only: give it labels already moved off the device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes), rows are true classes, columns predictions."""
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: {y_true.shape[0]} true labels but "
                         f"{y_pred.shape[0]} predictions")
    for name, labels in (("true", y_true), ("predicted", y_pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} labels must lie in [0, {num_classes - 1}], "
                             f"got values from {labels.min()} to {labels.max()}")
    # Each (true, predicted) pair becomes one flat bin index; bincount counts them.
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def confusion_table(confusion: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """The confusion matrix as a labelled pandas table."""
    return pd.DataFrame(confusion, index=pd.Index(class_names, name="true"),
                        columns=pd.Index(class_names, name="predicted"))


def per_class_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (0 where a ratio has no samples)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1-score": f1,
                         "support": support.astype(np.int64)}, index=list(class_names))


def accuracy(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0
