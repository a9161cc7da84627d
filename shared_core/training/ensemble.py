"""The ``ensemble`` recipe lives with ``knn``'s (same labels); importing this module registers both."""

from shared_core.training.knn import train_ensemble, train_knn

__all__ = ["train_ensemble", "train_knn"]
