"""How much of the held-out wording the text encoder alone carries: a ceiling for any model.

A video model can only follow an unseen word ("a cyan pyramid sinking") if the text encoder puts
it where the training wording of the same class lies. This measures that directly: one linear
probe per attribute (colour, shape, motion) on the prompt's mean-pooled, layer-normed embedding,
fitted on Shapes World's training captions, then scored on the held-out evaluation prompts,
whose words those captions never use. It needs no checkpoint and no video.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import COLOURS, MOTIONS, SHAPES
from ..data.captions import evaluation_prompts
from ..data.typed import training_caption
from .shapes_judge import confusion_table

ATTRIBUTES = (("colour", COLOURS), ("shape", SHAPES), ("motion", MOTIONS))


@torch.no_grad()
def _features(encoder, prompts: list[str], batch: int = 256) -> torch.Tensor:
    """prompts -> (n, dim) mean-pooled per-token states, layer-normed as the model's context norm does."""
    out = []
    for start in range(0, len(prompts), batch):
        cond = encoder.encode(prompts[start:start + batch], device="cpu")
        embeds, mask = cond.embeds.float(), cond.mask
        weights = mask[..., None].float()
        pooled = (embeds * weights).sum(1) / weights.sum(1)
        out.append(F.layer_norm(pooled, pooled.shape[-1:]))
    return torch.cat(out)


def _fit(features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L2 penalty, fitted to convergence by L-BFGS."""
    weight = torch.zeros(features.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


@torch.no_grad()
def _predict(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> list[int]:
    return (features @ weight + bias).argmax(1).tolist()


def text_probe(encoder, *, captions: int = 6000, seed: int = 0, l2: float = 1e-3) -> dict[str, Any]:
    """Fit the probes on ``captions`` Shapes World training captions; score them on the held-out prompts.

    Returns the share of held-out prompts whose colour, shape, motion and all three the probes
    read right, what each held-out shape and motion was read as, and the training-caption
    accuracy (how separable the training wording itself is)."""
    if captions < len(COLOURS) * len(SHAPES) * len(MOTIONS):
        raise ValueError(f"captions must be at least {len(COLOURS) * len(SHAPES) * len(MOTIONS)} "
                         f"(one per attribute combination on average), got {captions}")
    rng = np.random.default_rng(seed)
    truth = [(COLOURS[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))],
              MOTIONS[rng.integers(len(MOTIONS))]) for _ in range(captions)]
    train_text = [training_caption(c, s, m, rng) for c, s, m in truth]
    heldout = evaluation_prompts("heldout")
    train_x = _features(encoder, train_text)
    held_x = _features(encoder, [p.prompt for p in heldout])
    correct = np.ones(len(heldout), dtype=bool)
    report: dict[str, Any] = {"encoder": encoder.spec.describe(), "train_captions": captions, "seed": seed,
                              "heldout_prompts": len(heldout)}
    for index, (name, classes) in enumerate(ATTRIBUTES):
        labels = torch.tensor([classes.index(t[index]) for t in truth])
        weight, bias = _fit(train_x, labels, len(classes), l2)
        report[f"{name}_train_accuracy"] = float(np.mean(np.array(_predict(train_x, weight, bias)) == labels.numpy()))
        read = [classes[i] for i in _predict(held_x, weight, bias)]
        wanted = [getattr(p, name) for p in heldout]
        hits = np.array([r == w for r, w in zip(read, wanted)])
        correct &= hits
        report[name] = float(hits.mean())
        if name != "colour":
            report[f"{name}_read_as"] = confusion_table(wanted, read)
    report["all_three"] = float(correct.mean())
    return report
