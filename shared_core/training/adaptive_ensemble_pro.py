"""The ``adaptive_ensemble_pro`` recipe lives with ``adaptive_ensemble``'s; importing this module registers both."""

from shared_core.training.adaptive_ensemble import train_adaptive_ensemble, train_adaptive_ensemble_pro

__all__ = ["train_adaptive_ensemble", "train_adaptive_ensemble_pro"]
