"""The known small bugs that ``scripts/mutants.py`` applies, one :class:`Mutant` each: exact text
replacements (:class:`Edit`) and the default tests that must catch them."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Edit", "Mutant", "MUTANTS"]


@dataclass(frozen=True)
class Edit:
    path: str  # where the text is expected (relative to the repository root)
    old: str  # must occur exactly once in the file
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest arguments: files or node ids
    extra: tuple[str, ...] = field(default=())  # extra pytest options


MUTANTS: list[Mutant] = [
    Mutant(
        "gaussian-log-sigma-sign",
        "gaussian prior: + log σ instead of − log σ in the log-density",
        (
            Edit(
                "runtime/priors/gaussian.py",
                "lp = -0.5 * u * u - self.log_scale - 0.5 * math.log(2 * math.pi)",
                "lp = -0.5 * u * u + self.log_scale - 0.5 * math.log(2 * math.pi)",
            ),
        ),
        ("tests/runtime/priors/test_priors_reference.py",),
    ),
    Mutant(
        "squeeze-subpixel-swap",
        "squeeze: sub-pixel order (a, b) swapped to (b, a), consistently in forward and inverse",
        (
            Edit("runtime/layers/squeeze.py", ".permute(0, 1, 3, 5, 2, 4)", ".permute(0, 1, 5, 3, 2, 4)"),
            Edit("runtime/layers/squeeze.py", ".permute(0, 1, 4, 2, 5, 3)", ".permute(0, 1, 4, 3, 5, 2)"),
        ),
        ("tests/runtime/layers/test_squeeze_layout.py",),
    ),
    Mutant(
        "ddp-grad-scale-2x",
        "training: the loss is scaled by the world size, so DDP's averaged gradient is N× too large",
        (Edit("runtime/training/loop.py", "loss = -lp.mean() / dims\n", "loss = -lp.mean() / dims * info.world\n"),),
        ("tests/runtime/training/test_training.py::test_two_processes_match_one_with_the_same_global_batch",),
    ),
    Mutant(
        "coupling-logdet-sign",
        "affine coupling (channel mask): log-det with the wrong sign",
        (
            Edit(
                "runtime/layers/coupling.py",
                "return torch.cat([x1, y2], dim=1), self._sum(logs, acc)",
                "return torch.cat([x1, y2], dim=1), -self._sum(logs, acc)",
            ),
        ),
        ("tests/runtime/layers/test_every_kind.py",),
    ),
    Mutant(
        "actnorm-logdet-no-hw",
        "actnorm: log-det Σ s without the H·W factor",
        (
            Edit(
                "runtime/layers/actnorm.py",
                "logdet = (self.log_scale.sum() * spatial).to(x.dtype)",
                "logdet = (self.log_scale.sum()).to(x.dtype)",
            ),
        ),
        ("tests/runtime/layers/test_every_kind.py",),
    ),
    Mutant(
        "conv1x1-lu-logdet-drops-a-term",
        "conv1x1 (lu/qr): log|det W| misses the first diagonal entry",
        (
            Edit(
                "runtime/layers/conv1x1.py",
                "        return self.log_s.sum()\n",
                "        return self.log_s[1:].sum()\n",
            ),
        ),
        ("tests/runtime/layers/test_every_kind.py",),
    ),
    Mutant(
        "laplace-normaliser-drops-scale",
        "laplace prior: normaliser log 2 instead of log 2b",
        (
            Edit(
                "runtime/priors/laplace.py",
                "* torch.exp(-self.log_b) - self.log_b - math.log(2.0)",
                "* torch.exp(-self.log_b) - math.log(2.0)",
            ),
        ),
        ("tests/runtime/priors/test_priors_reference.py",),
    ),
    Mutant(
        "laplace-sample-scale",
        "laplace prior: samples drawn with the standard deviation b·√2 read as the scale b",
        (
            Edit(
                "runtime/priors/laplace.py",
                "b = temperature * torch.exp(self.log_b.to(v.dtype))",
                "b = temperature * torch.exp(self.log_b.to(v.dtype)) * math.sqrt(2.0)",
            ),
        ),
        ("tests/runtime/priors/test_priors_reference.py",),
    ),
    Mutant(
        "spike-slab-linear-annealing",
        "spike_slab: the spike width interpolated linearly instead of geometrically",
        (
            Edit(
                "runtime/priors/spike_slab.py",
                "return self._log_slab + r * (self._log_spike - self._log_slab)",
                "return torch.log(self.slab + r * (self.spike - self.slab))",
            ),
        ),
        ("tests/runtime/priors/test_priors_reference.py",),
    ),
    Mutant(
        "lr-loss-ratio-inverted",
        "fdrl lr_loss: data and particle terms swapped (estimates p/q instead of q/p)",
        (
            Edit(
                "runtime/objectives/fdrl/losses.py",
                "return -(F.logsigmoid(-s_p).mean() + F.logsigmoid(s_q).mean())",
                "return -(F.logsigmoid(s_p).mean() + F.logsigmoid(-s_q).mean())",
            ),
        ),
        ("tests/runtime/objectives/test_fdrl.py",),
    ),
    Mutant(
        "split-latent-order",
        "split: the first channels leave as latents instead of the last ones (consistently in merge)",
        (
            Edit(
                "runtime/layers/split.py",
                "return x[:, : self.keep], x[:, self.keep :]",
                "return x[:, x.shape[1] - self.keep :], x[:, : x.shape[1] - self.keep]",
            ),
            Edit(
                "runtime/layers/split.py",
                "return torch.cat([kept, latent], dim=1)",
                "return torch.cat([latent, kept], dim=1)",
            ),
        ),
        ("tests/runtime/layers/test_split_layout.py",),
    ),
    Mutant(
        "model-log-prob-logdet-sign",
        "model.log_prob: prior log-density minus the log-det",
        (
            Edit(
                "runtime/model.py",
                "z, logdet = self(x, cv)  # through __call__: forward hooks on the model see every evaluation\n"
                "        return self._prior_log_prob(z, cv) + logdet",
                "z, logdet = self(x, cv)  # through __call__: forward hooks on the model see every evaluation\n"
                "        return self._prior_log_prob(z, cv) - logdet",
            ),
        ),
        ("tests/runtime/test_model_api.py",),
    ),
    Mutant(
        "logit-inverse-logdet-at-y",
        "logit: the one-pass inverse reads its log-det off y instead of the returned x",
        (
            Edit(
                "runtime/layers/logit.py",
                "return x, self._logdet(*self._logs(x))",
                "return x, self._logdet(*self._logs(y))",
            ),
        ),
        ("tests/runtime/layers/test_inverse_log_det.py",),
    ),
    Mutant(
        "frozen-inverse-logdet-zero",
        "frozen layers with a constant log-det: the one-pass inverse returns log-det 0",
        (
            Edit(
                "runtime/fusion/rules/freeze.py",
                "return self.inner.inverse(y), const_logdet(self.logdet, y)",
                "return self.inner.inverse(y), const_logdet(self.logdet * 0, y)",
            ),
        ),
        ("tests/runtime/layers/test_inverse_log_det.py",),
    ),
]
