"""The ``adaptive_ensemble_chat`` recipe lives with ``adaptive_ensemble``'s; importing this module registers it."""

from shared_core.training.adaptive_ensemble import train_adaptive_ensemble_chat

__all__ = ["train_adaptive_ensemble_chat"]
