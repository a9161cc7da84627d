"""The fine-tuning loop the ``bert`` and ``causal_llm`` recipes share.

AdamW with linear warm-up and decay, mini-batches in a seeded order, the held-out
loss measured every ``eval_every`` steps and at each epoch's end, the best weights
kept, and early stopping after ``patience`` measurements without improvement. A
progress bar shows the training and the held-out loss. torch's thread count is
scoped to the call.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from shared_core.errors import ConfigError, DataError


@dataclass(frozen=True)
class FineTuneSettings:
    epochs: int = 2
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    eval_every: int = 50
    patience: int = 3
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "patience"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")


def split_held_out(items: Sequence[Any], keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and held-out indices, by a seeded hash of each item's key (a prompt stays on one side)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"held-out fraction must be in (0, 1), got {fraction!r}")
    train, held = [], []
    for i, key in enumerate(keys):
        h = int(hashlib.sha256(f"{seed}:{key}".encode("utf-8", "surrogatepass")).hexdigest()[:8], 16)
        (held if h / 0xFFFFFFFF < fraction else train).append(i)
    if not train or not held:
        raise DataError(
            f"{len(items)} examples are too few to hold out {fraction:.0%} for early stopping and still train"
        )
    return train, held


def cap(indices: list[int], limit: int | None, seed: int, what: str) -> list[int]:
    """At most ``limit`` of ``indices``, a seeded sample in the original order (all when ``None``)."""
    if limit is None or len(indices) <= limit:
        return indices
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{what} must be a positive integer or None, got {limit!r}")
    keep = np.random.default_rng(seed).choice(len(indices), size=limit, replace=False)
    return [indices[i] for i in sorted(keep)]


def init_head_bias(model: Any, labels: Sequence[int], num_labels: int) -> None:
    """Set the new classification head's bias to the training labels' log frequencies, so that
    training starts near the loss of predicting the label prior and the few steps a CPU
    affords go to what the prompt adds (the head's weights start small and random)."""
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(getattr(head, "bias", None), torch.Tensor):
        raise ConfigError(f"{type(model).__name__} has no 'classifier' layer with a bias to initialise")
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_labels).astype(float) + 1.0
    with torch.no_grad():
        head.bias.copy_(torch.tensor(np.log(counts / counts.sum()), dtype=head.bias.dtype))


def freeze_below(model: Any, train_layers: int) -> int:
    """Freeze every parameter except the top ``train_layers`` transformer layers and what
    follows them (final norm, pooler, head). Returns the number of layers found."""
    if isinstance(train_layers, bool) or not isinstance(train_layers, int) or train_layers < 0:
        raise ConfigError(f"train_layers must be an integer >= 0 or None, got {train_layers!r}")
    import re

    names = [n for n, _ in model.named_parameters()]
    layer_ids = sorted({int(m.group(1)) for n in names for m in [re.search(r"\.layers?\.(\d+)\.", n)] if m})
    if not layer_ids:
        raise ConfigError(f"cannot find numbered transformer layers in {type(model).__name__} to freeze")
    first_trained = layer_ids[-1] + 1 - train_layers
    last_layer_param = max(i for i, n in enumerate(names) if re.search(r"\.layers?\.(\d+)\.", n))
    for i, (name, param) in enumerate(model.named_parameters()):
        m = re.search(r"\.layers?\.(\d+)\.", name)
        if m:
            param.requires_grad = int(m.group(1)) >= first_trained
        else:  # before the layers (embeddings): frozen; after them (norm, pooler, head): trained
            param.requires_grad = i > last_layer_param
    return len(layer_ids)


def fine_tune(
    model: Any,
    loss_fn: Callable[[Any, list[Any]], Any],
    train: Sequence[Any],
    held_out: Sequence[Any],
    settings: FineTuneSettings,
    *,
    progress: bool = True,
    desc: str = "fine-tuning",
) -> dict[str, Any]:
    """Train ``model`` in place on ``train`` (``loss_fn(model, batch) -> mean loss tensor``),
    keep the weights with the lowest held-out loss, and return what happened."""
    import torch
    from tqdm.auto import tqdm

    from shared_core.routers._finetuned import torch_threads

    s = settings
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    total = steps_per_epoch * s.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=s.lr
    )
    warm = max(1, int(total * s.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))
    )

    def held_out_loss() -> float:
        model.eval()
        losses, n = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(held_out), s.batch_size * 2):
                batch = list(held_out[start : start + s.batch_size * 2])
                losses += float(loss_fn(model, batch)) * len(batch)
                n += len(batch)
        model.train()
        return losses / n

    started = time.perf_counter()
    history: list[dict[str, float]] = []
    with torch_threads(s.threads):
        best = held_out_loss()
        history.append({"step": 0, "held_out_loss": best})
        best_state = copy.deepcopy(model.state_dict())
        best_step, bad, step, stopped = 0, 0, 0, False
        bar = tqdm(total=total, desc=desc, unit="step", disable=not progress)
        model.train()
        running = None
        for epoch in range(s.epochs):
            order = rng.permutation(len(train))
            for start in range(0, len(order), s.batch_size):
                batch = [train[i] for i in order[start : start + s.batch_size]]
                loss = loss_fn(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = float(loss.detach())
                running = value if running is None else 0.9 * running + 0.1 * value
                bar.update(1)
                at_end = start + s.batch_size >= len(order)
                if step % s.eval_every == 0 or at_end:
                    current = held_out_loss()
                    history.append({"step": step, "held_out_loss": current, "train_loss": running})
                    if current < best - 1e-4:
                        best, best_step, bad = current, step, 0
                        best_state = copy.deepcopy(model.state_dict())
                    else:
                        bad += 1
                    bar.set_postfix(loss=f"{running:.4f}", held_out=f"{current:.4f}", best=f"{best:.4f}")
                    if bad >= s.patience:
                        stopped = True
                        break
            if stopped:
                break
        bar.close()
        model.load_state_dict(best_state)
        model.eval()
    return {
        "steps": step,
        "best_step": best_step,
        "held_out_loss": round(best, 6),
        "held_out_loss_before": round(history[0]["held_out_loss"], 6),
        "early_stopped": stopped,
        "epochs_run": round(step / steps_per_epoch, 3),
        "seconds": round(time.perf_counter() - started, 1),
        "history": [{k: round(v, 5) for k, v in h.items()} for h in history],
    }


def pair_outcomes(battles: Any, strong: str, weak: str) -> tuple[list[str], list[int]]:
    """Prompts and outcome labels (0 strong wins, 1 tie, 2 weak wins) of the battles between
    ``strong`` and ``weak`` (in either seat; model names compared by :func:`model_key`)."""
    from shared_core.routers._models import model_key
    from shared_core.training.data import validate_battles

    df = validate_battles(battles)
    s, w = model_key(strong), model_key(weak)
    a = df["model_a"].map(model_key)
    b = df["model_b"].map(model_key)
    prompts, labels = [], []
    for prompt, ka, kb, winner in zip(df["prompt"], a, b, df["winner"]):
        if {ka, kb} != {s, w}:
            continue
        if winner == "tie":
            labels.append(1)
        else:
            won = ka if winner == "model_a" else kb
            labels.append(0 if won == s else 2)
        prompts.append(prompt)
    if not prompts:
        raise DataError(
            f"no battle between strong model {strong!r} and weak model {weak!r} in the data "
            f"(models seen: {sorted(set(df['model_a']) | set(df['model_b']))[:10]})"
        )
    return prompts, labels
