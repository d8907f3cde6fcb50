"""The expected-KL estimate of the conditional-toy benchmark against closed forms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from flowdsl.runtime.bench.conditional import model_kl
from flowdsl.runtime.data import load_for_spec


class Shifted:
    """q(x | c): the toy's exact Gaussian, its mean moved by ``d`` along the long axis."""

    def __init__(self, d: float) -> None:
        self.d = d

    def log_prob(self, x, context=None):
        c = context[:, 0].double()
        t = math.pi * c / 2
        u = torch.stack([torch.cos(t), torch.sin(t)], 1)
        m = torch.stack([2 * c, c**2], 1) + self.d * u
        r = x.double() - m
        u1 = (r * u).sum(1)
        u2 = -torch.sin(t) * r[:, 0] + torch.cos(t) * r[:, 1]
        return -0.5 * (u1**2 + (u2 / 0.25) ** 2) - math.log(2 * math.pi * 0.25)


def test_expected_kl_is_zero_for_the_truth_and_the_closed_form_for_a_shift():
    spec = SimpleNamespace(
        input=SimpleNamespace(kind="vector", shape=(2,), levels=None),
        context=SimpleNamespace(kind="vector", dim=1, shape=(1,)),
        train=SimpleNamespace(data=None, seed=0, arg_spans={}),
        filename="<test>",
    )
    ds = load_for_spec(spec, "rotated_gaussian", "test", seed=0, n=20000)
    r0 = model_kl(Shifted(0.0), ds)
    assert abs(r0["kl"]) < 1e-5 and abs(r0["entropy"] - np.log(2 * np.pi * np.e * 0.25)) < 1e-12
    assert abs(r0["true_nll"] - r0["entropy"]) < 4 * 1.0 / np.sqrt(20000)  # MC of H(x | c)
    r = model_kl(Shifted(0.3), ds)  # KL of a mean shift d along an axis of std 1: d^2 / 2
    assert abs(r["kl"] - 0.045) < 4 * r["kl_se"] + 1e-3 and r["kl_se"] > 0
