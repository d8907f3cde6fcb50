"""Front-end fuzzing: mutate valid specs and require a located ``FlowDSLError`` or success.

Mutations (each drawn from a seeded ``random.Random``): delete, duplicate, swap and insert
tokens; splice in random bytes; wrap in deep nesting; replace numbers by huge ones; inject
non-UTF-8 bytes; stretch identifiers; truncate. Every input must, within ``time_limit`` seconds,
either parse and check (and, when small, compile) or raise a :class:`FlowDSLError` whose line is
known. Anything else is a bug, reported with the input that caused it.

Besides mutations, a share of the inputs (``family_fraction``) comes from :func:`generate`: large
inputs of the families that once made the front end slow or crash — huge lists, many arguments,
deep block chains, long comments and strings, many blocks, many lines — each up to ``max_size``
items (the CI test keeps it small; ``flowdsl fuzz --max-size`` goes up to the token limit).

``flowdsl fuzz --n 100000`` runs a long campaign; the test suite runs a fixed 5,000-input one.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

from flowdsl.errors import FlowDSLError

__all__ = ["seed_specs", "mutate", "generate", "FAMILIES", "check_input", "run_fuzz", "FuzzReport", "register"]

_TOKEN = re.compile(
    r"\s+|#[^\n]*|\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][A-Za-z0-9_]*|[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\$|.", re.S
)

_VOCAB = [
    "flow",
    "block",
    "input",
    "context",
    "dequantize",
    "prior",
    "objective",
    "train",
    "repeat",
    "rg",
    "disentangler",
    "decimator",
    "true",
    "false",
    "image",
    "vector",
    "label",
    "classes",
    "conditional",
    "actnorm",
    "conv1x1",
    "coupling",
    "permute",
    "squeeze",
    "split",
    "conv",
    "butterfly",
    "logit",
    "gaussian",
    "laplace",
    "spike_slab",
    "mle",
    "fdrl",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "$",
    "$hidden",
    "0",
    "1",
    "-1",
    "2",
    "3",
    "1e-3",
    "1e308",
    "99999999999999999999",
    '"s"',
    '"\\u00ff"',
    "kind",
    "hidden",
    "param",
    "qr",
    "lu",
    "mask",
    "checkerboard",
    "channels",
    "height",
    "width",
    "dim",
    "levels",
    "factor",
    "kernel",
    "depth",
    "over",
    "alpha",
    "auto",
    "step",
    "#c\n",
    "\n",
    " ",
]

_EXTRA_SEEDS = [
    "flow v { input vector(dim=4) repeat 2 { actnorm coupling(hidden=8) permute } prior laplace }",
    "block s(h=4, m=channel) { actnorm conv1x1(param=qr) coupling(hidden=$h, mask=$m) }\n"
    "flow i { input image(channels=2, height=4, width=4, levels=256) dequantize uniform\n"
    "  repeat 2 { s(h=8) } squeeze split repeat 2 { repeat 1 { s() } } prior gaussian(learned=true) }",
    "flow r { input image(channels=1, height=8, width=8) rg(kernel=4) { disentangler { coupling(net=mlp, "
    "mask=checkerboard, hidden=8) } decimator { coupling(net=mlp, mask=checkerboard, hidden=8) } } prior laplace }",
    "flow f { input vector(dim=2) objective fdrl(loss=lsif, divergence=pearson, steps=5) train(batch=8) }",
    "flow c { input image(channels=2, height=4, width=4) context image(channels=1, height=2, width=2)\n"
    "  coupling(hidden=8) squeeze coupling(hidden=8, context=false) prior gaussian(learned=true, conditional=true) }",
    "flow l { input vector(dim=4) context label(classes=3) repeat 2 { coupling(hidden=8) permute } prior laplace }",
]


def seed_specs() -> list[str]:
    """Valid spec texts: the bundled specs plus a few small ones."""
    out = []
    try:
        for p in sorted(resources.files("flowdsl.specs").iterdir(), key=lambda p: str(p)):
            if str(p).endswith(".flow"):
                out.append(p.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - specs not installed
        pass
    return out + list(_EXTRA_SEEDS)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def mutate(text: str, rng: random.Random, rounds: int | None = None) -> str | bytes:
    """One fuzz input derived from ``text``."""
    toks = _tokens(text)
    for _ in range(rounds or rng.randint(1, 4)):
        op = rng.randrange(11)
        n = len(toks)
        if op == 0 and n:  # delete a token
            del toks[rng.randrange(n)]
        elif op == 1 and n:  # duplicate a token
            i = rng.randrange(n)
            toks.insert(i, toks[i])
        elif op == 2 and n > 1:  # swap two tokens
            i, j = rng.randrange(n), rng.randrange(n)
            toks[i], toks[j] = toks[j], toks[i]
        elif op == 3:  # insert a token from the vocabulary
            toks.insert(rng.randrange(n + 1), rng.choice(_VOCAB))
        elif op == 4:  # huge or odd numbers
            nums = [i for i, t in enumerate(toks) if re.fullmatch(r"[+-]?\d.*", t)]
            if nums:
                toks[rng.choice(nums)] = rng.choice(
                    ["10" * rng.randint(5, 200), "-7", "0", "1e400", "4294967297", "2.5", "65536", "1000000"]
                )
        elif op == 5:  # very long identifier
            toks.insert(rng.randrange(n + 1), "x" * rng.randint(100, 20_000))
        elif op == 6:  # deep nesting
            depth = rng.randint(10, 400)
            opener = rng.choice(["repeat 2 {", "(", "[", "{"])
            closer = {"repeat 2 {": "}", "(": ")", "[": "]", "{": "}"}[opener]
            i = rng.randrange(n + 1)
            toks[i:i] = [opener] * depth + ["actnorm"] + [closer] * depth
        elif op == 7 and n:  # truncate
            toks = toks[: rng.randrange(n)]
        elif op == 8:  # random printable junk
            toks.insert(rng.randrange(n + 1), "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 12))))
        elif op == 9:  # random unicode
            toks.insert(rng.randrange(n + 1), "".join(chr(rng.randint(0xA0, 0x2FFF)) for _ in range(rng.randint(1, 6))))
        else:  # repeat counts that explode
            toks.insert(
                rng.randrange(n + 1),
                f"repeat {rng.choice([1000, 99999, 3])} {{ repeat {rng.choice([1000, 7])} {{ actnorm }} }}",
            )
    out = "".join(toks)
    r = rng.random()
    if r < 0.05:  # raw random bytes spliced in (often non-UTF-8)
        raw = out.encode("utf-8")
        i = rng.randrange(len(raw) + 1)
        return raw[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + raw[i:]
    if r < 0.07:
        return out.encode("utf-8") + b"\xff\xfe"
    if r < 0.08:
        return out.replace(" ", "\x00", 1)
    return out


_HEAD = "flow f {\n  input vector(dim=2)\n"
_IMG_HEAD = "flow f {\n  input image(channels=2, height=4, width=4)\n"
_LAYERS = ["actnorm", "permute", "conv1x1", "coupling(hidden=8)", "conv1x1(param=lu)", "actnorm()", "coupling"]


def _value(rng: random.Random) -> str:
    return rng.choice(["1", "0", "-3", "2.5", "1e9", "true", '"s"', "lu", "$h", "[1, 2]", "mlp(hidden=4)", "1" * 30])


def _huge_list(rng: random.Random, k: int) -> str:
    items = [_value(rng) if rng.random() < 0.1 else str(rng.randint(0, 9)) for _ in range(k)]
    inner = ", ".join(items) + ("," if rng.random() < 0.3 else "")
    arg = rng.choice(["seed", "hidden", "x", "kernel"])
    layer = rng.choice(["permute", "coupling", "actnorm", "conv1x1"])
    return _HEAD + f"  {layer}({arg}=[{inner}])\n  prior gaussian\n}}\n"


def _many_args(rng: random.Random, k: int) -> str:
    names = [rng.choice(["hidden", "mask", f"a{i}", f"hiden{i}", "seed"]) for i in range(k)]
    args = ", ".join(f"{n}={_value(rng)}" for n in names)
    if rng.random() < 0.5:
        return _HEAD + f"  coupling({args})\n  prior gaussian\n}}\n"
    params = ", ".join(f"p{i}=1" for i in range(rng.randint(0, k)))
    return f"block b({params}) {{ actnorm }}\n" + _HEAD + f"  b({args})\n  prior gaussian\n}}\n"


def _deep_chain(rng: random.Random, k: int) -> str:
    d = max(1, k)
    end = rng.choice(["actnorm", "coupling(hidden=$h)", "b0", "missing", "repeat 2 { actnorm }"])
    with_param = rng.random() < 0.5
    sig = "(h=4)" if with_param else ""
    call = "(h=$h)" if with_param else ""
    if not with_param:
        end = end.replace("$h", "4")
    blocks = [f"block b{i}{sig} {{ b{i + 1}{call} }}" for i in range(d - 1)] + [f"block b{d - 1}{sig} {{ {end} }}"]
    if rng.random() < 0.5:
        rng.shuffle(blocks)
    return "\n".join(blocks) + "\n" + _HEAD + "  b0\n  prior gaussian\n}\n"


def _long_comment(rng: random.Random, k: int) -> str:
    word = rng.choice(["w", "é", "x1_", "\t", "\x07", "#", '\\"']) * max(1, k * 5)
    where = rng.randrange(4)
    if where == 0:
        return f"# {word}\n" + _HEAD + "  actnorm\n  prior gaussian\n}\n"
    if where == 1:
        return _HEAD + f"  actnorm # {word}\n  prior gaussian\n}}\n"
    if where == 2:
        return _HEAD + f'  prior gaussian\n  train(data="{word}")\n}}\n'
    return _HEAD + f"  {word}\n  prior gaussian\n}}\n"  # a long identifier (or junk)


def _many_blocks(rng: random.Random, k: int) -> str:
    blocks = [f"block b{i}(h=8) {{ {rng.choice(_LAYERS)} }}" for i in range(k)]
    call = rng.choice([f"b{rng.randrange(k)}", f"bx{rng.randrange(k)}", "b", f"b{rng.randrange(k)}(h=16)", "c0"])
    return "\n".join(blocks) + "\n" + _HEAD + f"  {call}\n  prior gaussian\n}}\n"


def _many_lines(rng: random.Random, k: int) -> str:
    head = _IMG_HEAD if rng.random() < 0.3 else _HEAD
    lines = [f"  {rng.choice(_LAYERS)}" for _ in range(k)]
    if rng.random() < 0.3:
        lines[rng.randrange(k)] = "  " + rng.choice(["actnrom", "squeeze", "}", ")", "split", "layer"])
    return head + "\n".join(lines) + "\n  prior gaussian\n}\n"


#: the generated families: name -> ``fn(rng, size)`` returning spec text
FAMILIES: dict[str, Callable[[random.Random, int], str]] = {
    "huge_list": _huge_list,
    "many_args": _many_args,
    "deep_chain": _deep_chain,
    "long_comment": _long_comment,
    "many_blocks": _many_blocks,
    "many_lines": _many_lines,
}


def generate(rng: random.Random, max_size: int = 2000, family: str | None = None) -> str:
    """One large input of a family (random unless named) with up to ``max_size`` items; sizes
    are drawn log-uniformly, so small and large inputs are both common."""
    name = family or rng.choice(sorted(FAMILIES))
    k = max(1, int(round(math.exp(rng.uniform(0.0, math.log(max(2, max_size)))))))
    return FAMILIES[name](rng, k)


@dataclass
class FuzzReport:
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    compiled: int = 0
    max_seconds: float = 0.0
    slowest: str | bytes = ""
    failures: list[tuple[str | bytes, str]] = field(default_factory=list)
    slow: list[tuple[str | bytes, float]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.inputs} inputs: {self.accepted} accepted ({self.compiled} compiled), "
            f"{self.rejected} rejected with a "
            f"located FlowDSLError, {len(self.failures)} other exceptions, {len(self.slow)} slower than the limit; "
            f"slowest {self.max_seconds:.3f} s"
        )


def check_input(data: str | bytes, compile_small: bool = True, timings: list | None = None) -> str:
    """'accepted', 'compiled' or 'rejected'; raises AssertionError for anything else.

    ``timings`` (if given) receives the seconds the accept/reject decision took.
    """
    import flowdsl

    t0 = time.perf_counter()
    try:
        spec = flowdsl.parse(data, filename="fuzz.flow")
    except FlowDSLError as e:
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        if e.line < 1 or e.column < 0:
            raise AssertionError(f"FlowDSLError without a location: {e!r}") from None
        if not str(e).startswith("fuzz.flow:"):
            raise AssertionError(f"FlowDSLError not rendered with its file: {e!r}") from None
        return "rejected"
    if timings is not None:
        timings.append(time.perf_counter() - t0)
    if compile_small and spec.graph.total_params() < 200_000 and spec.input.numel <= 4096:
        model = flowdsl.compile(spec)
        import torch

        with torch.no_grad():
            model.eval()
            x = torch.rand(2, *model.input_shape)
            c = None  # a conditional flow runs with a context of the declared kind
            if spec.context is not None:
                ctx = spec.context
                c = torch.randint(0, ctx.classes, (2,)) if ctx.kind == "label" else torch.randn(2, *ctx.shape)
            z, _ = model(x, context=c)
            model.inverse(z, context=c)
        return "compiled"
    return "accepted"


def run_fuzz(
    n: int,
    seed: int = 0,
    time_limit: float = 2.0,
    on_progress: Callable[[int], None] | None = None,
    compile_fraction: float = 0.25,
    family_fraction: float = 0.1,
    max_size: int = 2000,
) -> FuzzReport:
    """Fuzz ``n`` inputs. The time limit applies to the accept/reject decision (the check);
    a ``compile_fraction`` of the accepted small specs is also compiled and run both ways.
    A ``family_fraction`` of the inputs comes from :func:`generate` (up to ``max_size`` items)."""
    rng = random.Random(seed)
    seeds = seed_specs()
    rep = FuzzReport()
    for s in seeds[:3]:  # warm caches and imports so the first timing is not the import time
        try:
            check_input(s, compile_small=True)
        except FlowDSLError:
            pass
    for i in range(n):
        data = generate(rng, max_size) if rng.random() < family_fraction else mutate(rng.choice(seeds), rng)
        timings: list[float] = []
        try:
            outcome = check_input(data, compile_small=rng.random() < compile_fraction, timings=timings)
        except Exception as e:  # noqa: BLE001 - the point is to catch everything
            rep.failures.append((data, f"{type(e).__name__}: {e}"))
            outcome = "failed"
        dt = timings[0] if timings else 0.0
        rep.inputs += 1
        if outcome == "rejected":
            rep.rejected += 1
        elif outcome in ("accepted", "compiled"):
            rep.accepted += 1
            rep.compiled += outcome == "compiled"
        if dt > rep.max_seconds:
            rep.max_seconds, rep.slowest = dt, data
        if dt > time_limit:
            rep.slow.append((data, dt))
        if on_progress and (i + 1) % 1000 == 0:
            on_progress(i + 1)
    return rep


def _cmd_fuzz(args) -> int:
    rep = run_fuzz(
        args.n,
        seed=args.seed,
        time_limit=args.time_limit,
        on_progress=lambda k: print(f"  {k} inputs ..."),
        family_fraction=args.family_fraction,
        max_size=args.max_size,
    )
    print(rep.summary())
    for data, msg in rep.failures[:10]:
        print(f"FAILURE: {msg}\n  input: {data!r:.400}")
    for data, dt in rep.slow[:5]:
        print(f"SLOW ({dt:.2f} s): {data!r:.300}")
    return 2 if rep.failures or rep.slow else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fuzz", help="fuzz the front end: mutated specs must be accepted or get a located error")
    from flowdsl.cliargs import float_range, positive_float, positive_int, seed

    p.add_argument("--n", type=positive_int(10_000_000), default=20_000, help="number of inputs (default 20,000)")
    p.add_argument("--seed", type=seed, default=0, help="random seed of the campaign (default 0)")
    p.add_argument(
        "--time-limit", type=positive_float(), default=2.0, help="seconds one accept/reject may take (default 2)"
    )
    p.add_argument(
        "--family-fraction",
        type=float_range(0.0, 1.0),
        default=0.1,
        help="share of generated large inputs (huge lists, many arguments/blocks/lines, deep chains, long comments)",
    )
    p.add_argument(
        "--max-size", type=positive_int(1_000_000), default=8000, help="most items of a generated input (default 8,000)"
    )
    p.set_defaults(func=_cmd_fuzz)
