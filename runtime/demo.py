"""``flowdsl demo``: check, compile, round-trip and export every bundled spec; write a sample grid.

For each spec: the static check, a float64 round trip and log-det check against the autograd
Jacobian with parameters randomised away from their initialisation (small specs only: the
Jacobian is dense), ONNX export of both directions and the onnxruntime parity. Then a sample
grid of the digits Glow (untrained: this shows the pipeline, not a trained model).
"""
from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path

import torch

__all__ = ["run_demo", "bundled_specs", "randomize_parameters", "jacobian_logdet_error"]


def bundled_specs(specs_dir: str | None = None) -> list[Path]:
    if specs_dir:
        return sorted(Path(specs_dir).glob("*.flow"))
    root = resources.files("flowdsl.specs")
    return sorted(Path(str(p)) for p in root.iterdir() if str(p).endswith(".flow"))


@torch.no_grad()
def randomize_parameters(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Move every parameter away from its initialisation (deterministically).

    Each tensor gets Gaussian noise of ``scale`` times its mean magnitude (0.1·scale for tensors
    that start at zero, such as the last layer of coupling nets and LU off-diagonals).
    """
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        mag = float(p.detach().abs().mean()) if p.numel() else 0.0
        sigma = scale * (mag if mag > 1e-8 else 0.1)
        p.add_(sigma * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def jacobian_logdet_error(model, x: torch.Tensor) -> float:
    """Relative error between the model's log-det and slogdet of the autograd Jacobian (sample 0)."""
    shape = tuple(model.input_shape)
    n = math.prod(shape)
    f = lambda v: model(v.reshape(1, *shape))[0].reshape(-1)  # noqa: E731
    jac = torch.autograd.functional.jacobian(f, x[0].reshape(-1))
    ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
    with torch.no_grad():
        got = model(x[:1])[1][0]
    return float((got - ref).abs() / ref.abs().clamp_min(1.0))


def run_demo(out: str, specs_dir: str | None = None) -> int:
    import flowdsl
    from flowdsl.runtime.grid import save_image_grid, save_scatter
    from flowdsl.runtime.onnx_export import check_parity

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = bundled_specs(specs_dir)
    print(f"{'spec':<34} {'params':>10} {'roundtrip':>10} {'logdet':>10} {'onnx rel':>10} {'time':>7}")
    worst = 0.0
    for path in paths:
        t0 = time.time()
        spec = flowdsl.load(path)
        model = flowdsl.compile(spec).double()
        n = math.prod(model.input_shape)
        x = torch.rand(3, *model.input_shape, dtype=torch.float64)
        model.train()
        model(x)  # data-dependent initialisation
        randomize_parameters(model)
        model.eval()
        with torch.no_grad():
            z, _ = model(x)
            rt = float((model.inverse(z) - x).abs().max())
        ld = jacobian_logdet_error(model, x) if n <= 1024 else float("nan")
        fwd, inv = flowdsl.export_onnx(model.float(), outdir / "onnx" / spec.name)
        res = check_parity(model.fuse(), fwd, inv)
        rel = max(v for k, v in res.items() if k.endswith("_rel"))
        worst = max(worst, rel)
        params = sum(p.numel() for p in model.parameters())
        print(f"{path.name:<34} {params:>10,} {rt:>10.1e} {ld:>10.1e} {rel:>10.1e} {time.time() - t0:>6.1f}s")
    digits = next((p for p in paths if p.name == "glow_digits.flow"), None)
    if digits is not None:
        model = flowdsl.compile(flowdsl.load(digits)).eval()
        with torch.no_grad():
            s = model.sample(64, temperature=0.7)
        png = save_image_grid((s + 0.5).clamp(0, 1), outdir / "samples_glow_digits.png")
        print(f"wrote {png} (an untrained model: the pipeline, not a result)")
    moons = next((p for p in paths if p.name == "realnvp_moons.flow"), None)
    if moons is not None:
        model = flowdsl.compile(flowdsl.load(moons)).eval()
        with torch.no_grad():
            s = model.sample(1000)
        print(f"wrote {save_scatter(s, outdir / 'samples_realnvp_moons.png', title='untrained realnvp_moons')}")
    print(f"worst onnxruntime relative error: {worst:.2e}")
    return 0 if worst <= 1e-4 else 1
