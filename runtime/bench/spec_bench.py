"""One spec timed in every variant (the fusion table's rows of ``flowdsl bench``; see
:mod:`flowdsl.runtime.bench.suite` for the protocol): :func:`bench_spec` in this process,
:func:`run_spec_probe` in a fresh one (``python -m flowdsl.runtime.bench.spec_bench --spec-probe CFG``,
which prints the :class:`SpecResult` as JSON), so that every spec starts alike: allocator state,
caches, a cold inductor compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import torch

from flowdsl.runtime.bench.normflows import glow_structure, normflows_glow
from flowdsl.runtime.bench.timing import SpecResult, alternate, count_flops, prepared_model
from flowdsl.runtime.training.demo import random_context

__all__ = ["bench_spec", "run_spec_probe"]


def bench_spec(
    path: str,
    batch: int,
    repeats: int,
    threads: int,
    compile_: bool = True,
    onnx: bool = True,
    normflows: bool = True,
    warm: bool = False,
    floor: bool = False,
    say: Callable[[str], None] = print,
    device: str = "cpu",
) -> SpecResult:
    """Time every variant of one spec in this process (see the module docstring); with ``warm``,
    time them again after one training step of the unfused model (glibc's malloc keeps freed
    blocks after such a peak, which removes page faults from later calls); with ``floor``, also
    time the fused model's conditioner convolutions alone (``bench_acceptance.conditioner_floor``);
    ``device``: where the models and inputs live (not the CPU: no onnxruntime, normflows or floor)."""
    spec, model, x = prepared_model(path, batch)
    res = SpecResult(spec.name, threads=threads)
    dev = torch.device(device)
    if dev.type != "cpu":
        model, x = model.to(dev), x.to(dev)
        off = [name for name, on in (("onnxruntime", onnx), ("normflows", normflows), ("floor", floor)) if on]
        if off:
            res.notes.append(f"on {dev}: no {', '.join(off)} (CPU measurements)")
        onnx = normflows = floor = False
    fused = model.fuse()
    # conditional specs: one random context per example, fed to every variant alike
    c = random_context(model, batch, x.dtype)
    if c is not None:
        c = c.to(x.device)
        res.notes.append(f"conditional: a random {model.context_kind} context per example")

    def z_batch():  # latents from the prior (a conditional prior: given the context)
        if c is None:
            return fused.prior.sample(batch)
        ref = fused._ref_tensor()
        return fused._prior_sample(batch, 1.0, ref.device, ref.dtype, fused.encode_context(c, batch))

    lp: dict[str, Callable] = {
        "unfused eager": lambda: model.log_prob(x, context=c),
        "fused eager": lambda: fused.log_prob(x, context=c),
    }
    sa: dict[str, Callable] = {
        "unfused eager": lambda: model.inverse(z_batch(), context=c),
        "fused eager": lambda: fused.inverse(z_batch(), context=c),
    }
    ref_lp = model.log_prob(x, context=c).detach()
    ref_lp_scale = float(ref_lp.abs().max().clamp_min(1.0))
    if not len(fused.steps):
        res.notes.append("no layers: nothing to fuse")
    if compile_ and len(fused.steps):
        torch._dynamo.reset()
        opts = {"freezing": True}
        c_lp = torch.compile(lambda v: fused.log_prob(v, context=c), fullgraph=True, dynamic=False, options=opts)
        c_inv = torch.compile(lambda v: fused.inverse(v, context=c), fullgraph=True, dynamic=False, options=opts)
        with torch.no_grad():
            for key, fn, arg in (("log_prob", c_lp, x), ("inverse", c_inv, z_batch())):
                t = time.perf_counter()
                fn(arg)
                res.compile_s[key] = time.perf_counter() - t
                say(f"  {spec.name}: compiled {key} in {res.compile_s[key]:.1f} s")
            res.errors["fused + compile"] = float((c_lp(x) - ref_lp).abs().max()) / ref_lp_scale
        lp["fused + compile"] = lambda: c_lp(x)
        sa["fused + compile"] = lambda: c_inv(z_batch())
    if onnx and len(fused.steps):
        import onnxruntime as ort

        import flowdsl

        tmp = tempfile.mkdtemp(prefix="flowdsl-bench-")
        fwd_path, inv_path = flowdsl.export_onnx(model, tmp)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # no busy-waiting of onnxruntime's worker threads after a run: they would take a core
        # from whichever variant runs next
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s_f = ort.InferenceSession(fwd_path, so, providers=["CPUExecutionProvider"])
        s_i = ort.InferenceSession(inv_path, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        extra = {} if c is None else {"context": c.numpy()}
        lp["onnxruntime"] = lambda: s_f.run(["log_prob"], {"x": xn, **extra})
        sa["onnxruntime"] = lambda: s_i.run(None, {"z": z_batch().numpy(), **extra})
        res.errors["onnxruntime"] = (
            float(abs(torch.from_numpy(s_f.run(["log_prob"], {"x": xn, **extra})[0]) - ref_lp).max()) / ref_lp_scale
        )
    if floor and len(fused.steps):
        from flowdsl.runtime.bench.acceptance import FLOOR, conditioner_floor

        z_fixed = z_batch()
        f_lp = conditioner_floor(fused, lambda: fused.log_prob(x, context=c))
        f_inv = conditioner_floor(fused, lambda: fused.inverse(z_fixed, context=c))
        if f_lp is not None and f_inv is not None:
            lp[FLOOR], sa[FLOOR] = f_lp, f_inv
    scales = glow_structure(spec.graph) if c is None else None  # normflows' Glow is unconditional
    if normflows and scales is not None:
        try:
            import warnings

            with warnings.catch_warnings():  # normflows calls the deprecated torch.lu
                warnings.simplefilter("ignore")
                nfm = normflows_glow(scales)
        except ImportError:
            res.notes.append("normflows is not installed (pip install 'flowdsl[bench]'): no normflows column")
        else:
            nfm.eval()
            with torch.no_grad():
                nfm.log_prob(x, None)  # normflows' data-dependent actnorm initialisation
            lp["normflows"] = lambda: nfm.log_prob(x, None)
            sa["normflows"] = lambda: nfm.sample(batch)
            n_ours = sum(p.numel() for p in model.steps.parameters())
            n_nf = sum(p.numel() for f in nfm.flows for p in f.parameters())
            res.notes.append(f"normflows Glow: {n_nf:,} flow parameters (flowdsl: {n_ours:,})")
    with torch.no_grad():
        res.errors["fused eager"] = float((fused.log_prob(x, context=c) - ref_lp).abs().max()) / ref_lp_scale
        res.flops["log_prob"] = count_flops(lambda: model.log_prob(x, context=c))
        res.flops["sample"] = count_flops(lambda: model.inverse(z_batch(), context=c))
    say(f"  {spec.name}: timing {', '.join(lp)} ({repeats} alternating rounds, both directions)")
    fns = {**{f"log_prob|{k}": v for k, v in lp.items()}, **{f"sample|{k}": v for k, v in sa.items()}}
    if dev.type == "cuda":  # time the work, not the launch: wait for the device after every call
        fns = {k: (lambda f=f: (f(), torch.cuda.synchronize(dev))) for k, f in fns.items()}
    times = alternate(fns, repeats)
    for d in ("log_prob", "sample"):
        res.times[d] = {k.split("|", 1)[1]: v for k, v in times.items() if k.startswith(d + "|")}
    if warm:
        say(f"  {spec.name}: one training step, then the same rounds again")
        model.train()
        (-model.log_prob(x, context=c).mean()).backward()
        model.zero_grad(set_to_none=True)
        model.eval()
        times = alternate(fns, repeats)
        res.warm = {
            d: {k.split("|", 1)[1]: v for k, v in times.items() if k.startswith(d + "|")}
            for d in ("log_prob", "sample")
        }
        if floor and len(fused.steps):
            from flowdsl.runtime.bench.acceptance import conv_kernels

            say(f"  {spec.name}: the floor's convolutions, kernel by kernel")
            res.kernels = conv_kernels(fused, lambda: fused.log_prob(x, context=c), threads, repeats)
    return res


def run_spec_probe(path: str, batch: int, repeats: int, threads: int, flags: dict[str, bool], warm: bool) -> SpecResult:
    """:func:`bench_spec` in a fresh process (the same start for every spec: allocator, caches,
    and a cold inductor compile: its on-disk caches are disabled); a ``warm`` probe (the acceptance
    one) also times the convolution floor. Raises RuntimeError on failure."""
    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    cmd = [
        sys.executable,
        "-m",
        "flowdsl.runtime.bench.spec_bench",
        "--spec-probe",
        json.dumps({"path": path, "batch": batch, "repeats": repeats, "threads": threads, "warm": warm, **flags}),
    ]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"probe failed (exit {out.returncode}): {lines[-1] if lines else 'no output'}")
    data = json.loads(lines[-1])
    if "error" in data:
        raise RuntimeError(data["error"])
    return SpecResult(**data)


def _spec_probe(cfg: dict) -> dict:
    import dataclasses
    import warnings

    from flowdsl.errors import FlowDSLError

    warnings.simplefilter("ignore")
    torch.set_num_threads(cfg["threads"])
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        res = bench_spec(
            cfg["path"],
            cfg["batch"],
            cfg["repeats"],
            cfg["threads"],
            compile_=cfg["compile"],
            onnx=cfg["onnx"],
            normflows=cfg["normflows"],
            warm=cfg["warm"],
            floor=cfg["warm"],
            say=say,
            device=cfg.get("device", "cpu"),
        )
    except FlowDSLError as e:
        return {"error": f"does not check: {str(e).splitlines()[0]}"}
    return dataclasses.asdict(res)


if __name__ == "__main__":  # the probes run in fresh processes
    if len(sys.argv) == 3 and sys.argv[1] == "--spec-probe":
        print(json.dumps(_spec_probe(json.loads(sys.argv[2]))))
    else:
        print("usage: flowdsl bench SPEC... (this module's entry point is internal)", file=sys.stderr)
        sys.exit(2)
