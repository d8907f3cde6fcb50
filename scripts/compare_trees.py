#!/usr/bin/env python3
"""Compare the numerics of two flowdsl trees (e.g. before and after a restructuring), spec by spec.

    python scripts/compare_trees.py --before /path/before/.venv/bin/python \
                                    --after  /path/after/.venv/bin/python  [--out DIR] [--spec NAME]

Each python runs this file as a worker (``--worker``) in its own tree (the tree is the folder that
holds ``.venv``; override with --before-tree / --after-tree). For every ``specs/*.flow`` of that
tree the worker parses, compiles with the spec's seed (``flowdsl.compile(spec)``), runs the
data-dependent initialisation on a fixed input x = torch.rand(3, *model.input_shape) from a
torch.Generator seeded 1234 (train mode, then eval) and records, as hashes of the tensors' bytes:

* z, logdet = model(x); model.inverse(z); model.log_prob(x); every eager step's output and log-det;
* fused = model.fuse(); fused(x); fused.inverse(z); fused.log_prob(x);
* model.sample(4) and fused.sample(4), each under torch.manual_seed(1);
* the state_dict (keys and values), the parameter counts, and ``flowdsl check`` stdout/stderr/exit code.

This is done in float32 and again after ``model.double()`` (fused again from the float64 model), and
for two parameter states: ``init`` (right after the data-dependent initialisation) and ``random``
(the tree's own ``randomize_parameters(scale=0.3, seed=0)``, as in the demo: many layers start as
the identity, which would hide differences). Workers use --threads torch threads (default 2).
The parent compares both JSON reports and prints every difference (a unified diff for the
``flowdsl check`` text, the max abs difference for tensors: the workers keep the tensors in --out).
Exit status 0 iff everything is identical.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 3
DATA_SEED = 1234
SAMPLE_SEED = 1
N_SAMPLES = 4


# ---------------------------------------------------------------------------------------------
# worker: runs inside one tree's venv
# ---------------------------------------------------------------------------------------------
def _randomize_parameters(model, scale: float = 0.3, seed: int = 0) -> None:
    """The tree's own ``randomize_parameters`` (runtime/training/demo.py, or runtime/demo.py)."""
    try:
        from flowdsl.runtime.training.demo import randomize_parameters
    except ImportError:
        from flowdsl.runtime.demo import randomize_parameters
    randomize_parameters(model, scale=scale, seed=seed)


class Recorder:
    """Collects {key: description} for one spec; tensors are saved to ``tensors`` for diffs."""

    def __init__(self) -> None:
        self.items: dict[str, object] = {}
        self.tensors: dict[str, object] = {}

    def tensor(self, key: str, t) -> None:
        import torch

        t = t.detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        digest = hashlib.sha256(data).hexdigest()[:20]
        self.items[key] = {"sha": digest, "dtype": str(t.dtype), "shape": list(t.shape)}
        self.tensors[key] = t.clone()

    def value(self, key: str, v) -> None:
        self.items[key] = v

    def attempt(self, key: str, fn) -> None:
        """Run fn(); an exception is recorded (as its type and message) instead of aborting."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any failure is a finding to compare
            self.items[key + ".error"] = f"{type(e).__name__}: {e}"


def _record_model(rec: Recorder, tag: str, model, x) -> None:
    import torch

    rec.value(f"{tag}.state_keys", list(model.state_dict().keys()))
    sd = hashlib.sha256()
    for v in model.state_dict().values():
        v = v.detach().cpu().contiguous()
        sd.update(v.numpy().tobytes() if v.is_floating_point() else repr(v.tolist()).encode())
    rec.value(f"{tag}.state_values_sha", sd.hexdigest()[:20])
    rec.value(f"{tag}.params", sum(p.numel() for p in model.parameters()))

    with torch.no_grad():
        z, logdet = model(x)
        rec.tensor(f"{tag}.eager.z", z)
        rec.tensor(f"{tag}.eager.logdet", logdet)
        rec.attempt(f"{tag}.eager.inverse", lambda: rec.tensor(f"{tag}.eager.inverse", model.inverse(z)))
        rec.attempt(f"{tag}.eager.log_prob", lambda: rec.tensor(f"{tag}.eager.log_prob", model.log_prob(x)))

        def steps() -> None:  # every eager step along the chain, as FlowModel._chain_forward runs it
            h = x
            for i, step in enumerate(model.steps):
                name = f"{tag}.step{i:03d}.{model.node_ids[i] if i < len(model.node_ids) else '?'}"
                if getattr(step, "factor_out", False):
                    h, lat = step.split(h)
                    rec.tensor(name + ".latent", lat)
                else:
                    h, ld = step(h)
                    rec.tensor(name + ".logdet", ld)
                rec.tensor(name + ".out", h)

        rec.attempt(f"{tag}.steps", steps)

        def sample() -> None:
            torch.manual_seed(SAMPLE_SEED)
            rec.tensor(f"{tag}.eager.sample", model.sample(N_SAMPLES))

        rec.attempt(f"{tag}.eager.sample", sample)

        def fused_all() -> None:
            fused = model.fuse()
            rec.value(f"{tag}.fused.params", sum(p.numel() for p in fused.parameters()))
            rec.value(f"{tag}.fused.n_steps", len(fused.steps))
            fz, fld = fused(x)
            rec.tensor(f"{tag}.fused.z", fz)
            rec.tensor(f"{tag}.fused.logdet", fld)
            rec.attempt(f"{tag}.fused.inverse", lambda: rec.tensor(f"{tag}.fused.inverse", fused.inverse(z)))
            rec.attempt(f"{tag}.fused.log_prob", lambda: rec.tensor(f"{tag}.fused.log_prob", fused.log_prob(x)))

            def fsample() -> None:
                torch.manual_seed(SAMPLE_SEED)
                rec.tensor(f"{tag}.fused.sample", fused.sample(N_SAMPLES))

            rec.attempt(f"{tag}.fused.sample", fsample)

        rec.attempt(f"{tag}.fused", fused_all)


def _check_text(spec_rel: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "flowdsl", "check", spec_rel], capture_output=True, text=True)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def worker(out_dir: Path, only: str | None, threads: int) -> int:
    import torch

    import flowdsl

    torch.set_num_threads(threads)
    report: dict = {"flowdsl_file": flowdsl.__file__, "torch": torch.__version__, "threads": threads,
                    "cwd": os.getcwd(), "specs": {}}
    for path in sorted(Path("specs").glob("*.flow")):
        if only and path.stem != only:
            continue
        t0 = time.time()
        rec = Recorder()
        rel = f"specs/{path.name}"
        rec.value("check", _check_text(rel))

        def run_spec() -> None:
            spec = flowdsl.load(rel)
            model = flowdsl.compile(spec)
            rec.value("input_shape", list(model.input_shape))
            rec.value("n_steps", len(model.steps))
            gen = torch.Generator().manual_seed(DATA_SEED)
            x = torch.rand(BATCH, *model.input_shape, generator=gen)
            rec.tensor("x", x)
            model.train()
            with torch.no_grad():
                model(x)  # data-dependent initialisation
            model.eval()
            _record_model(rec, "init.f32", model, x)
            model.double()
            _record_model(rec, "init.f64", model, x.double())
            model.float()
            with torch.no_grad():
                _randomize_parameters(model)
            _record_model(rec, "random.f32", model, x)
            model.double()
            _record_model(rec, "random.f64", model, x.double())

        rec.attempt("spec", run_spec)
        report["specs"][path.name] = rec.items
        torch.save(rec.tensors, out_dir / f"{path.stem}.pt")
        print(f"  {path.name}: {len(rec.items)} items, {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------------------
# parent: runs both workers and compares
# ---------------------------------------------------------------------------------------------
def _tree_of(py: str) -> Path:
    p = Path(py).absolute()  # not resolve(): a venv's python is a symlink to the system one
    if p.parent.name == "bin" and p.parent.parent.name == ".venv":
        return p.parents[2]
    raise SystemExit(f"cannot tell the tree of {py}: pass --before-tree/--after-tree")


def _run_worker(py: str, tree: Path, out: Path, only: str | None, threads: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [py, str(Path(__file__).absolute()), "--worker", "--out", str(out), "--threads", str(threads)]
    if only:
        cmd += ["--spec", only]
    print(f"== {tree}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=tree, check=True)
    return json.loads((out / "report.json").read_text())


def _max_abs_diff(a_dir: Path, b_dir: Path, spec_stem: str, key: str) -> str:
    try:
        import torch
    except ImportError:
        return "(torch not importable here: no max abs diff)"
    a = torch.load(a_dir / f"{spec_stem}.pt")[key]
    b = torch.load(b_dir / f"{spec_stem}.pt")[key]
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    d = (a.double() - b.double()).abs()
    n_nan = int(torch.isnan(d).sum())
    d = torch.nan_to_num(d, nan=0.0)
    return f"max abs diff {float(d.max()):.3e} ({int((d > 0).sum())}/{d.numel()} differ, {n_nan} NaN)"


def _short(v: object, n: int = 300) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


def compare(a: dict, b: dict, a_dir: Path, b_dir: Path) -> int:
    n_diff = 0
    names = sorted(set(a["specs"]) | set(b["specs"]))
    rows = []
    for name in names:
        sa, sb = a["specs"].get(name), b["specs"].get(name)
        if sa is None or sb is None:
            print(f"{name}: only in {'after' if sa is None else 'before'}")
            n_diff += 1
            continue
        diffs = []
        for key in sorted(set(sa) | set(sb)):
            va, vb = sa.get(key), sb.get(key)
            if va == vb:
                continue
            if isinstance(va, dict) and isinstance(vb, dict) and "sha" in va and "sha" in vb:
                diffs.append(f"  {key}: {_max_abs_diff(a_dir, b_dir, Path(name).stem, key)}")
            elif key == "check":
                for part in ("rc", "stdout", "stderr"):
                    pa, pb = va.get(part), vb.get(part)
                    if pa == pb:
                        continue
                    if isinstance(pa, str) and isinstance(pb, str):
                        udiff = difflib.unified_diff(pa.splitlines(), pb.splitlines(), "before", "after",
                                                     n=0, lineterm="")
                        diffs.append(f"  check.{part} (`flowdsl check` output):\n    " + "\n    ".join(udiff))
                    else:
                        diffs.append(f"  check.{part}: before {pa!r} | after {pb!r}")
            else:
                diffs.append(f"  {key}: before {_short(va)} | after {_short(vb)}")
        n_tensors = sum(1 for v in sa.values() if isinstance(v, dict) and "sha" in v)
        errors = sorted(k for k in sa if k.endswith(".error"))
        params = sa.get("init.f32.params", "-")
        rows.append((name, params, n_tensors, len(diffs), errors))
        if diffs:
            n_diff += len(diffs)
            print(f"{name}: {len(diffs)} difference(s)")
            print("\n".join(diffs))
    print()
    print(f"| {'spec':<32} | {'params':>10} | {'tensors hashed':>14} | {'differences':>11} | errors (both trees) |")
    print(f"|{'-' * 34}|{'-' * 11}:|{'-' * 15}:|{'-' * 12}:|---------------------|")
    for name, params, n_t, n_d, errors in rows:
        err = ", ".join(e.removesuffix(".error") for e in errors) or "-"
        print(f"| {name:<32} | {params:>10,} | {n_t:>14} | {n_d:>11} | {err} |"
              if isinstance(params, int) else f"| {name:<32} | {params:>10} | {n_t:>14} | {n_d:>11} | {err} |")
    print()
    print("bit-identical on every spec" if n_diff == 0 else f"{n_diff} difference(s)")
    return 0 if n_diff == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="python of the 'before' tree's venv")
    ap.add_argument("--after", help="python of the 'after' tree's venv")
    ap.add_argument("--before-tree", default=None)
    ap.add_argument("--after-tree", default=None)
    ap.add_argument("--out", default=None, help="where the workers keep report.json and tensors")
    ap.add_argument("--spec", default=None, help="only this spec (file stem, e.g. glow_cifar)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the workers (default 2)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(Path(args.out), args.spec, args.threads)
    if not (args.before and args.after):
        ap.error("--before and --after are required")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="compare_trees_"))
    tb = Path(args.before_tree) if args.before_tree else _tree_of(args.before)
    ta = Path(args.after_tree) if args.after_tree else _tree_of(args.after)
    rb = _run_worker(args.before, tb, out / "before", args.spec, args.threads)
    ra = _run_worker(args.after, ta, out / "after", args.spec, args.threads)
    for tag, r in (("before", rb), ("after", ra)):
        print(f"{tag}: flowdsl from {r['flowdsl_file']}, torch {r['torch']}, {r['threads']} thread(s)")
    print(f"reports and tensors in {out}")
    return compare(rb, ra, out / "before", out / "after")


if __name__ == "__main__":
    sys.exit(main())
