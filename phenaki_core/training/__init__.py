"""Training: stage 1 (C-ViViT) and stage 2 (MaskGit + critic) on Shapes World, resumable."""

from .config import TrainConfig, lr_factor
from .state import TrainState, load_train_state, save_train_state
from .trainer import BUNDLE_FILE, STATE_FILE, Trainer, TrainResult

__all__ = ["BUNDLE_FILE", "STATE_FILE", "TrainConfig", "TrainResult", "TrainState", "Trainer",
           "load_train_state", "lr_factor", "save_train_state"]
