"""Conditional-flow benchmarks of ``flowdsl bench-training``: class-conditional digits and a 2-D
toy with a known conditional density.

* **Class-conditional digits** (:func:`digits_classifier`, :func:`class_fidelity`): a digits
  classifier trained separately — scikit-learn's multinomial logistic regression on the train split
  of ``digits`` (pixel values / 16, ``random_state=0``), never used in training — labels samples
  of ``cglow_digits`` drawn at temperature 0.7 for each requested class (quantised back to the
  17 levels as any sample grid is). The share classified as the requested class is reported per
  class and overall, next to the classifier's own accuracy on the test split.
* **Conditional toy** (:func:`toy_kl`): ``crealnvp_rotated`` on ``rotated_gaussian``, whose exact
  log p(x | c) is known (:mod:`flowdsl.runtime.data.ctoy2d`). On the test pairs (x_i, c_i) the
  model's NLL minus the true NLL, (1/n) Σ [log p(x_i | c_i) − log q(x_i | c_i)], estimates the
  expected KL divergence E_c KL(p(·|c) ‖ q(·|c)) ≥ 0; its standard error is that of the paired
  differences.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["digits_classifier", "class_fidelity", "toy_kl", "model_kl", "conditional_section"]

TEMPERATURE = 0.7
PER_CLASS = 100


def digits_classifier() -> tuple[Any, float]:
    """(classifier, its accuracy on the digits test split): logistic regression on the train split."""
    from sklearn.linear_model import LogisticRegression

    from flowdsl.runtime.data.digits import digits_arrays

    xtr, ytr = digits_arrays("train")
    xte, yte = digits_arrays("test")
    clf = LogisticRegression(max_iter=5000, random_state=0)
    clf.fit(xtr.reshape(len(xtr), -1) / 16.0, ytr)
    acc = float((clf.predict(xte.reshape(len(xte), -1) / 16.0) == yte).mean())
    return clf, acc


def class_fidelity(run: str | Path, clf: Any, per_class: int = PER_CLASS, temperature: float = TEMPERATURE, seed=0):
    """Per-class shares of samples of ``run`` (a class-conditional digits run) that ``clf`` labels
    as the requested class; returns ``(overall share, [share of class k])``."""
    from flowdsl.runtime.training.models import load_model
    from flowdsl.runtime.training.sampling import draw_samples

    spec, model, _ = load_model(run)
    classes = int(spec.context.classes)
    want = torch.arange(classes).repeat_interleave(per_class)
    x = draw_samples(model, len(want), temperature, seed, context=want)
    levels = int(spec.input.levels)
    k = torch.floor(x * levels).clamp(0, levels - 1).reshape(len(x), -1).numpy()
    pred = clf.predict(k / (levels - 1))
    hit = pred == want.numpy()
    per = [float(hit[want.numpy() == c].mean()) for c in range(classes)]
    return float(hit.mean()), per


def toy_kl(run: str | Path, data: str = "rotated_gaussian", seed: int = 0) -> dict[str, float]:
    """Expected KL of the conditional toy run's model on its test split (module docstring)."""
    from flowdsl.runtime.data import load_for_spec
    from flowdsl.runtime.training.models import load_model

    spec, model, _ = load_model(run)
    return model_kl(model, load_for_spec(spec, data, "test", seed=seed), data)


def model_kl(model: Any, ds: Any, data: str = "rotated_gaussian") -> dict[str, float]:
    """The expected-KL estimate of ``model`` on the pairs of ``ds`` (x, context) of the toy ``data``."""
    from flowdsl.runtime.data.ctoy2d import conditional_entropy, conditional_log_density

    with torch.no_grad():
        lq = model.log_prob(ds.x, context=ds.context).double().numpy()
    lp = conditional_log_density(data, ds.x.numpy(), ds.context.numpy())
    d = lp - lq
    return {
        "n": len(d),
        "test_nll": float(-lq.mean()),
        "true_nll": float(-lp.mean()),
        "entropy": conditional_entropy(data),
        "kl": float(d.mean()),
        "kl_se": float(d.std(ddof=1) / math.sqrt(len(d))),
    }


def conditional_section(
    out_dir: Path, rows: dict[str, dict[str, Any]], toy_steps: int = 0, quiet: bool = True, reuse: bool = False
) -> list[str]:
    """The markdown of the conditional benchmarks. ``rows``: the digits table's runs by spec file
    name (``{"summary", "out"}``); the toy is trained here (``toy_steps``: 0 = the spec's; with
    ``reuse`` a finished run of it in ``out_dir`` is reported instead)."""
    import time

    import flowdsl
    from flowdsl.runtime.bench.training import _finished
    from flowdsl.runtime.training import train
    from flowdsl.runtime.training.demo import bundled_specs

    lines = ["### Conditional flows", ""]
    glow, cglow = rows.get("glow_digits.flow"), rows.get("cglow_digits.flow")
    if glow and cglow:
        g, c = glow["summary"]["test_bpd"], cglow["summary"]["test_bpd"]
        verdict = "below" if c < g else "NOT below"
        lines += [
            f"* **Class-conditional digits, same step budget:** `cglow_digits` {c:.3f} conditional test bits/dim "
            f"(−log2 p(x | class), per dimension) vs `glow_digits` {g:.3f} bits/dim: {verdict} the unconditional "
            f"Glow's by {g - c:.3f}.",
        ]
    if cglow:
        clf, acc = digits_classifier()
        share, per = class_fidelity(cglow["out"], clf)
        lines += [
            f"* **Samples classified as the requested class:** {100 * share:.1f} % of {len(per) * PER_CLASS} samples "
            f"({PER_CLASS} per class, temperature {TEMPERATURE}) by a logistic-regression digits classifier trained "
            f"separately on the train split (its own test accuracy: {100 * acc:.1f} %); acceptance ≥ 90 %.",
            "",
            "| class | " + " | ".join(str(k) for k in range(len(per))) + " |",
            "|---|" + "---:|" * len(per),
            "| classified as requested | " + " | ".join(f"{100 * p:.0f} %" for p in per) + " |",
            "",
        ]
    cinn = rows.get("cinn_digits.flow")
    if cinn:
        lines += [
            f"* **cINN (`cinn_digits`, 8×8 given its 4×4 block means):** {cinn['summary']['test_bpd']:.3f} conditional "
            "test bits/dim.",
            "",
        ]
    available = {p.name: p for p in bundled_specs()}
    if "crealnvp_rotated.flow" in available:
        spec = flowdsl.load(available["crealnvp_rotated.flow"])
        steps = toy_steps or int(spec.train.steps)
        t0 = time.time()
        s = _finished(out_dir / spec.name, spec, steps) if reuse else None
        if s is None:
            s = train(spec, steps=steps, out=out_dir / spec.name, overwrite=True, quiet=quiet, sample_n=0)
        else:
            t0 -= float(s["seconds"])
        r = toy_kl(out_dir / spec.name, seed=int(spec.train.seed))
        ok = "within" if r["kl"] <= 0.05 else "NOT within"
        lines += [
            f"* **Conditional 2-D toy with a known density** (`crealnvp_rotated` on `rotated_gaussian`, {steps} steps, "
            f"{time.time() - t0:.0f} s): test NLL {r['test_nll']:.4f} nats, true conditional NLL of the same "
            f"{r['n']:,} test pairs {r['true_nll']:.4f} (closed-form H(x | c) = {r['entropy']:.4f}); expected KL "
            f"= **{r['kl']:.4f} ± {r['kl_se']:.4f} nats** (± one standard error), {ok} the 0.05-nat acceptance.",
        ]
        del s
    return lines
