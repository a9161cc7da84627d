"""The ``irt_nc`` recipe lives with ``irt``'s; importing this module registers both."""

from shared_core.training.irt import train_irt, train_irt_nc

__all__ = ["train_irt", "train_irt_nc"]
