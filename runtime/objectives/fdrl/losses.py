"""Bregman losses for density-ratio estimation and the f′ table of the gradient flow.

Notation (FDRL, arXiv 2303.03714): p = data, q = the particles (source or flowed), target ratio
r*(x) = q(x)/p(x). With ``out_p`` / ``out_q`` the estimator's outputs on a data batch and a
particle batch:

``lr`` (logistic regression; the estimator outputs s = log r)
    L = −Ê_p[log 1/(1+r)] − Ê_q[log r/(1+r)] = −Ê_p[log σ(−s)] − Ê_q[log σ(s)]
    computed with log-sigmoid (finite for any s); minimised by σ(s) = q/(p+q), i.e. s = log q/p.
``lsif`` (least-squares importance fitting; the estimator outputs r > 0)
    L = ½Ê_p[r²] − Ê_q[r]; minimised by r = q/p.

f′ of the f-divergences (paper Table 1), as functions of the estimator output:

============  ===========================  ===================================
divergence    f(r)                         f′(r)
============  ===========================  ===================================
``pearson``   (r−1)²                       2(r−1)
``kl``        r log r                      log r + 1
``js``        r log r − (r+1) log((r+1)/2) log(2r/(r+1)) = log 2 + log σ(log r)
``logd``      (r+1) log(r+1) − 2 log 2     log(r+1) + 1 = softplus(log r) + 1
============  ===========================  ===================================

With the ``lr`` head every entry is written in s = log r without exp (stable); with the
``lsif`` head r itself is used (log r of a softplus output is finite for r > 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lr_loss", "lsif_loss", "bregman_loss", "f_prime", "f_prime_of_ratio", "DIVERGENCES", "LOSSES"]

LOSSES = ("lr", "lsif")
DIVERGENCES = ("kl", "js", "logd", "pearson")
_LOG2 = math.log(2.0)


def lr_loss(s_p: Tensor, s_q: Tensor) -> Tensor:
    """Logistic (``lr``) Bregman loss from log-ratios on data ``s_p`` and particles ``s_q``."""
    return -(F.logsigmoid(-s_p).mean() + F.logsigmoid(s_q).mean())


def lsif_loss(r_p: Tensor, r_q: Tensor) -> Tensor:
    """Least-squares (``lsif``) Bregman loss from ratios on data ``r_p`` and particles ``r_q``."""
    return 0.5 * (r_p * r_p).mean() - r_q.mean()


def bregman_loss(loss: str, out_p: Tensor, out_q: Tensor) -> Tensor:
    """The objective's loss from the estimator outputs (log r for ``lr``, r for ``lsif``)."""
    if loss == "lr":
        return lr_loss(out_p, out_q)
    if loss == "lsif":
        return lsif_loss(out_p, out_q)
    raise ValueError(f"unknown loss {loss!r} (expected one of {', '.join(LOSSES)})")


def f_prime_of_ratio(divergence: str, r: Tensor) -> Tensor:
    """f′(r) of Table 1 from the ratio r > 0 itself."""
    if divergence == "pearson":
        return 2.0 * (r - 1.0)
    if divergence == "kl":
        return torch.log(r) + 1.0
    if divergence == "js":
        return torch.log(2.0 * r / (r + 1.0))
    if divergence == "logd":
        return torch.log(r + 1.0) + 1.0
    raise ValueError(f"unknown divergence {divergence!r} (expected one of {', '.join(DIVERGENCES)})")


def f_prime(divergence: str, out: Tensor, loss: str) -> Tensor:
    """f′(r(x)) from the estimator output ``out`` of the head that ``loss`` implies."""
    if loss == "lsif":
        return f_prime_of_ratio(divergence, out)
    if loss != "lr":
        raise ValueError(f"unknown loss {loss!r} (expected one of {', '.join(LOSSES)})")
    s = out  # log r
    if divergence == "kl":
        return s + 1.0
    if divergence == "js":
        return _LOG2 + F.logsigmoid(s)
    if divergence == "logd":
        return F.softplus(s) + 1.0
    if divergence == "pearson":
        return 2.0 * (torch.exp(s) - 1.0)
    raise ValueError(f"unknown divergence {divergence!r} (expected one of {', '.join(DIVERGENCES)})")
