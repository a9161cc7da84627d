"""The ``adaptive_ensemble_l3`` recipe lives with ``adaptive_ensemble``'s; importing this module registers it."""

from shared_core.training.adaptive_ensemble import train_adaptive_ensemble_l3

__all__ = ["train_adaptive_ensemble_l3"]
