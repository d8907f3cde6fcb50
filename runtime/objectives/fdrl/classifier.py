"""A small image classifier of our own: guidance for class-conditional FDRL, and the feature
space of the Fréchet distance (``flowdsl fdrl-classifier --out clf.safetensors``).

Architecture (input (C, H, W) on the FDRL model scale [−1, 1]; SiLU everywhere, so ∇ₓ log p(y|x)
is smooth — guidance follows it):

    3×3 conv C→16 · 3×3 conv 16→32 stride 2 · 3×3 conv 32→32 · flatten
    · dense → ``features`` (64) · dense → classes

``features(x)`` is the 64-d penultimate activation (after SiLU) used by the Fréchet distance.

Training (:func:`train_classifier`): AdamW (lr 2e-3, cosine decay) with batch 128 on the training
split, each batch dequantised with N(0, 0.03²) noise like FDRL's data, shifted by up to one pixel
and, with ``noise`` > 0, perturbed by N(0, noise²) Gaussian noise on half the batch; with
``adversarial`` = ε > 0 the other half is replaced by L2 PGD adversarial examples of radius ε
(3 steps), as in the paper's robust guidance classifier (there an L2-robust ResNet-50). Two
classifiers are used in ``benchmarks/fdrl.md``: a robust one for guidance and a plain one, with
another seed, for evaluation, so a guided sample is only counted as its class when a classifier
that did not steer it agrees.

Files are safetensors with the architecture, data, test accuracy and settings in the metadata.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.errors import CheckpointError, DataError

__all__ = ["Classifier", "train_classifier", "save_classifier", "load_classifier", "CLASSIFIER_FORMAT"]

CLASSIFIER_FORMAT = "flowdsl-fdrl-classifier"


class Classifier(nn.Module):
    """Small CNN classifier with a ``features`` method (see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], classes: int = 10, width: int = 16, features: int = 64) -> None:
        super().__init__()
        c, h, w = (int(d) for d in shape)
        self.input_shape = (c, h, w)
        self.classes = int(classes)
        self.width = int(width)
        self.n_features = int(features)
        self.convs = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.SiLU(),
        )
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        self.fc = nn.Linear(2 * width * h2 * w2, features)
        self.head = nn.Linear(features, classes)

    def features(self, x: Tensor) -> Tensor:
        return F.silu(self.fc(self.convs(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, Any]:
        return {
            "shape": list(self.input_shape),
            "classes": self.classes,
            "width": self.width,
            "features": self.n_features,
        }


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Shift every image by up to one pixel (edge padding of −1, the background)."""
    b = x.shape[0]
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy = torch.randint(0, 3, (b,), generator=g)
    dx = torch.randint(0, 3, (b,), generator=g)
    h, w = x.shape[-2:]
    rows = dy.view(b, 1) + torch.arange(h).view(1, h)  # (b, h)
    cols = dx.view(b, 1) + torch.arange(w).view(1, w)  # (b, w)
    idx_r = rows.view(b, 1, h, 1).expand(b, x.shape[1], h, pad.shape[-1])
    out = pad.gather(2, idx_r)
    idx_c = cols.view(b, 1, 1, w).expand(b, x.shape[1], h, w)
    return out.gather(3, idx_c)


def _pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 3) -> Tensor:
    """L2 projected gradient ascent on the cross-entropy within radius ``eps`` (per example)."""
    delta = torch.zeros_like(x)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        delta = delta.detach() + alpha * g / gn
        dn = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * torch.clamp(eps / dn.clamp_min(1e-12), max=1.0)
    return (x + delta).detach()


def _dataset(data: str, shape: tuple[int, ...], levels: Optional[int], split: str):
    from flowdsl.runtime.data import load_dataset

    ds = load_dataset(data, shape, levels, split)
    if ds.labels is None:
        raise DataError(
            f"data {data!r} has no labels; the classifier needs a labelled image data set (e.g. digits)", filename=data
        )
    if ds.levels is None:
        raise DataError(f"data {data!r} is not image data", filename=data)
    return ds


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 512) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def train_classifier(
    data: str = "digits",
    shape: tuple[int, ...] = (1, 8, 8),
    levels: Optional[int] = 17,
    steps: int = 1500,
    batch: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    noise: float = 0.1,
    adversarial: float = 0.0,
    quiet: bool = False,
) -> tuple[Classifier, dict[str, Any]]:
    """Train a :class:`Classifier` on the train split of ``data``; returns it and its report."""
    from flowdsl.runtime.objectives.fdrl.sources import DataScale, gen

    tr = _dataset(data, shape, levels, "train")
    te = _dataset(data, shape, levels, "test")
    scale = DataScale(tuple(shape), tr.levels)
    classes = int(max(int(tr.labels.max()), int(te.labels.max())) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(tuple(shape), classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x_all = scale.from_raw(tr.x)
    y_all = tr.labels
    for step in range(steps):
        g = gen("classifier", seed, step)
        for gr in opt.param_groups:
            gr["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x = x_all[idx] + 0.03 * torch.randn((batch, *shape), generator=g)
        x = _shift(x, g)
        y = y_all[idx]
        half = batch // 2
        if noise > 0:
            x = torch.cat([x[:half] + noise * torch.randn(x[:half].shape, generator=g), x[half:]])
        model.train()
        if adversarial > 0:
            x = torch.cat([x[:half], _pgd_l2(model, x[half:], y[half:], adversarial)])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not quiet and (step + 1) % max(1, steps // 5) == 0:
            print(f"classifier step {step + 1}/{steps}  loss {float(loss.detach()):.4f}", flush=True)
    model.eval()
    x_te = scale.from_raw(te.x)
    report = {
        "data": data,
        "levels": tr.levels,
        "test_accuracy": accuracy(model, x_te, te.labels),
        "train_accuracy": accuracy(model, x_all, y_all),
        "steps": steps,
        "seed": seed,
        "noise": noise,
        "adversarial": adversarial,
        "n_test": len(te),
    }
    if adversarial > 0:
        xa = _pgd_l2(model, x_te, te.labels, adversarial, steps=10)
        report["robust_test_accuracy"] = accuracy(model, xa, te.labels)
    return model, report


def save_classifier(model: Classifier, path: str | os.PathLike, report: dict[str, Any]) -> None:
    from safetensors.torch import save as st_save

    from flowdsl.runtime.training.checkpoint import atomic_write

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": CLASSIFIER_FORMAT, "config": json.dumps(model.config()), "report": json.dumps(report)}
    blob = st_save(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(blob))


def load_classifier(path: str | os.PathLike) -> tuple[Classifier, dict[str, Any]]:
    """A classifier saved by :func:`save_classifier` (eval mode) and its report."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"cannot read classifier weights: {e}", filename=str(path)) from None
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(
            "not a flowdsl FDRL classifier file (make one with `flowdsl fdrl-classifier`)", filename=str(path)
        )
    cfg = json.loads(meta["config"])
    model = Classifier(tuple(cfg["shape"]), cfg["classes"], cfg["width"], cfg["features"])
    try:
        model.load_state_dict(tensors, strict=True)
    except Exception as e:
        raise CheckpointError(f"classifier weights do not fit: {e}", filename=str(path)) from None
    model.eval()
    return model, json.loads(meta.get("report", "{}"))
