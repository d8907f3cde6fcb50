"""The ``flowdsl`` command line.

    flowdsl check FILE [--explain]        print the bijector graph; exit 1 with located errors
    flowdsl graph FILE -o out.svg|.png|.dot
    flowdsl export FILE|RUN|CKPT [--checkpoint CKPT | --untrained] --out DIR
    flowdsl demo [--out DIR] [--sweep]    the main job on the bundled default (train digits, sample, export)
    flowdsl fmt FILE... [--check]         the canonical layout, comments kept (flowdsl/fmt.py)
    flowdsl lsp [--stdio]                 the language server for editors (flowdsl.lsp)
    (train, sample, eval, explain, bench: registered by their runtime modules)

Exit codes: 0 success, 1 user error (bad spec, data or checkpoint, and usage errors such as an
unknown flag or an out-of-range number), 2 internal error. User errors print without a
traceback; ``--debug`` (before or after the command) shows it. ``flowdsl --version``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from flowdsl.errors import FlowDSLError

__all__ = ["main", "build_parser"]

#: subcommands defined here; they need neither torch nor the runtime's command modules, so
#: ``flowdsl check`` starts in the time it takes to import lark, pydantic and networkx
CORE_COMMANDS = ("check", "graph", "export", "demo", "fmt", "lsp")

#: modules that add subcommands with a ``register(subparsers)`` function, when present (loaded
#: unless the command line names a core command); the training module also adds the subcommands
#: of the registered objectives (``fdrl-*``)
PLUGIN_MODULES = (
    "flowdsl.fuzz",
    "flowdsl.runtime.training.cli",
    "flowdsl.runtime.training.eval_cli",
    "flowdsl.runtime.explain.cli",
    "flowdsl.runtime.bench.suite",
    "flowdsl.runtime.bench.training",
)


def _cmd_check(args: argparse.Namespace) -> int:
    from flowdsl.compiler.ir import FlowGraph
    from flowdsl.compiler.passes import run_pipeline
    from flowdsl.wording import plural

    data = _read(args.file)

    def show(name: str, ir) -> None:
        if not args.explain:
            return
        print(f"==== after pass: {name} " + "=" * max(0, 60 - len(name)))
        if name == "parse":
            print(
                f"{plural(len(ir.blocks), 'block')}: {', '.join(b.name for b in ir.blocks) or '-'}; "
                f"flow '{ir.flow.name}' with {plural(len(ir.flow.body), 'statement')}"
            )
        elif name == "expand":
            context = f", context {ir.context.describe()}" if ir.context is not None else ""
            print(
                f"flow {ir.name}: input {ir.input.kind} {tuple(ir.input.shape)}{context}, dequantize {ir.dequantize}, "
                f"prior {ir.prior.name}, objective {ir.objective.name}"
            )
            for layer in ir.iter_layers():
                via = f"  (via {' > '.join(layer.via)})" if layer.via else ""
                print(f"  {layer.id:<28} {layer.kind:<10} line {layer.span.line:<4} {layer.args}{via}")
        elif isinstance(ir, FlowGraph):
            print(ir.format(with_shapes=name != "build_graph"))
        print()

    spec, graph = run_pipeline(data, args.file, on_pass=show)
    if args.explain:  # the fusion plan: the engine is the compiler's, the rules the runtime's
        import flowdsl.runtime.fusion.rules  # noqa: F401
        from flowdsl.compiler.passes.fusion import explain_fusion

        print(explain_fusion(graph))
    if not args.explain:
        print(graph.format())
    for w in graph.warnings:
        print(w.render(), file=sys.stderr)
    if graph.warnings and args.werror:
        print(f"{args.file}: {plural(len(graph.warnings), 'warning')} treated as errors (--werror)", file=sys.stderr)
        return 1
    print(f"{args.file}: ok ({spec.name}: prior {spec.prior.name}, objective {spec.objective.name})")
    return 0


def _read(path: str) -> bytes:
    from flowdsl.parser import read_source  # bounded: regular files only, at most the limit + 1 byte

    return read_source(path)


def _cmd_graph(args: argparse.Namespace) -> int:
    import flowdsl
    from flowdsl.runtime.explain.draw import draw_graph

    spec = flowdsl.parse(_read(args.file), filename=args.file)
    try:
        out = draw_graph(spec.graph, args.output)
    except FlowDSLError as e:  # the drawing's errors are about the output file
        if e.filename == "<string>":
            e.filename = args.output
        raise
    print(f"wrote {out}")
    return 0


def _load_for_export(args: argparse.Namespace):
    """The model to export and a line naming its weights: a run folder (its best checkpoint, the
    spec stored in the run), a checkpoint file, or a spec file with ``--checkpoint`` or ``--untrained``."""
    import flowdsl
    from flowdsl.runtime.training.models import check_finite_weights

    src = args.file
    is_weights = Path(src).is_dir() or Path(src).suffix.lower() in (".pt", ".safetensors")
    if is_weights:
        if args.checkpoint or args.untrained:
            raise FlowDSLError(
                "a run folder or checkpoint carries its own weights: --checkpoint and --untrained go with a spec file",
                filename=src,
            )
        from flowdsl.runtime.training.models import load_model

        _spec, model, ckpt = load_model(src)
        path, step = ckpt.get("path", src), int(ckpt["step"])
    else:
        spec = flowdsl.parse(_read(src), filename=src)
        model = flowdsl.compile(spec)
        if args.checkpoint and args.untrained:
            raise FlowDSLError("--checkpoint and --untrained exclude each other", filename=src)
        if not args.checkpoint and not args.untrained:
            raise FlowDSLError(
                "no trained weights: pass --checkpoint CKPT (or a run folder instead of the spec file), "
                "or --untrained to export the initial weights on purpose",
                filename=src,
            )
        if args.untrained:
            print(f"warning: exporting UNTRAINED weights of {spec.name} (initialised from its seed)", file=sys.stderr)
            return model.eval(), "untrained"
        from flowdsl.runtime.training.checkpoint_io import load_weights

        ckpt = load_weights(model, args.checkpoint)
        path, step = ckpt.get("path", args.checkpoint), int(ckpt["step"])
    check_finite_weights(model, path, "export")
    return model.eval(), f"{path}, step {step}"


def _cmd_export(args: argparse.Namespace) -> int:
    """Export and check through ``flowdsl.export_onnx``; a parity failure (above ``--tolerance`` or
    NaN) is its FlowDSLError, printed with the error table by ``main`` (exit 1)."""
    import flowdsl
    from flowdsl.runtime.export.onnx import describe_io, fed_contexts, parity_table

    model, weights = _load_for_export(args)
    print(f"weights: {weights}")
    res = flowdsl.export_onnx(
        model,
        args.out,
        check=True,
        exporter=args.exporter,
        check_batch=args.batch,
        tolerance=args.tolerance,
        weights=weights,
    )
    print(f"wrote {res.forward}: {describe_io(res.forward)}")
    print(f"wrote {res.inverse}: {describe_io(res.inverse)}")
    prior = Path(res.forward).with_name("prior.onnx")
    if prior.exists():
        print(f"wrote {prior}: {describe_io(prior)} (the prior's sampler: see the README's ONNX section)")
    print(f"onnxruntime vs PyTorch (float32, batch {args.batch}{fed_contexts(res.parity)}):")
    for line in parity_table(res.parity):
        print(f"  {line}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flowdsl.runtime.training.demo import run_demo

    return run_demo(args.out, steps=args.steps, sweep=args.sweep, specs_dir=args.specs)


DEBUG_HELP = "show tracebacks for every error (also FLOWDSL_DEBUG=1)"
def _cmd_lsp(args: argparse.Namespace) -> int:
    from flowdsl.lsp.server import serve

    return serve()


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(extra: Sequence[Callable] = (), plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``plugins=False`` leaves out the runtime's subcommands."""
    from flowdsl.cliargs import FlowArgumentParser, batch_size, positive_float, steps
    from flowdsl.version import __version__

    p = FlowArgumentParser(prog="flowdsl", description="A declarative graph compiler for normalizing flows.")
    p.add_argument("--version", action="version", version=f"flowdsl {__version__}", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="check a spec file and print its bijector graph")
    c.add_argument("file", help="spec file (.flow)")
    c.add_argument("--explain", action="store_true", help="print the IR after each pass")
    c.add_argument("--werror", action="store_true", help="exit 1 when the checker has warnings")
    c.set_defaults(func=_cmd_check)

    g = sub.add_parser("graph", help="draw the bijector graph (.svg, .png or .dot)")
    g.add_argument("file", help="spec file (.flow)")
    g.add_argument("-o", "--output", required=True, help="output file: .svg or .png (matplotlib) or .dot (Graphviz)")
    g.set_defaults(func=_cmd_graph)

    e = sub.add_parser("export", help="export forward.onnx, inverse.onnx and prior.onnx and check them in onnxruntime")
    e.add_argument(
        "file", metavar="FILE|RUN|CKPT", help="spec file (with --checkpoint or --untrained), run folder or checkpoint"
    )
    e.add_argument(
        "--checkpoint", default=None, metavar="CKPT", help="weights for a spec file (.pt, .safetensors, run folder)"
    )
    e.add_argument("--untrained", action="store_true", help="export a spec's initial (untrained) weights on purpose")
    e.add_argument("--out", required=True, metavar="DIR", help="export folder (new, or holding only a previous export)")
    e.add_argument(
        "--exporter",
        choices=["auto", "torchscript", "dynamo"],
        default="auto",
        help="PyTorch's ONNX exporter (default auto: TorchScript, dynamo where it cannot)",
    )
    e.add_argument(
        "--batch", type=batch_size, default=7, metavar="N", help="batch size of the parity check (default 7)"
    )
    e.add_argument(
        "--tolerance",
        type=positive_float(),
        default=1e-4,
        metavar="X",
        help="largest relative error onnxruntime vs PyTorch that passes (default 1e-4; NaN always fails)",
    )
    e.set_defaults(func=_cmd_export)

    d = sub.add_parser("demo", help="train the digits Glow, write a sample grid, export it (the main job)")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--steps", type=steps, default=None, help="training steps (default: the spec's)")
    d.add_argument("--sweep", action="store_true", help="also check, round-trip and export every bundled spec")
    d.add_argument("--specs", default=None, help="folder of spec files for --sweep (default: the bundled specs)")
    d.set_defaults(func=_cmd_demo)

    from flowdsl.fmt_cli import register as register_fmt  # `flowdsl fmt`: torch-free, like check

    register_fmt(sub)

    ls = sub.add_parser("lsp", help="run the language server (LSP over stdin/stdout) for editors")
    ls.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only transport)")
    ls.set_defaults(func=_cmd_lsp)

    for mod in PLUGIN_MODULES if plugins else ():
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name and mod.startswith(err.name):
                continue
            raise
        m.register(sub)
    for fn in extra:
        fn(sub)
    for sp in sub.choices.values():  # --debug is accepted after the command too
        if "--debug" not in sp._option_string_actions:
            sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def _subject(args: argparse.Namespace | None) -> str | None:
    """The file a command works on (its first positional argument), for errors raised without one."""
    for name in ("file", "source", "spec", "run", "specs"):
        value = getattr(args, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if len(value) == 1 else None
        if value:
            return str(value)
    return getattr(args, "command", None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FLOWDSL_DEBUG") == "1"
    args = None
    try:
        command = _command_of(argv)
        only_version = command is None and "--version" in argv and not {"-h", "--help"} & set(argv)
        parser = build_parser(plugins=command not in CORE_COMMANDS and not only_version)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 1
        return int(args.func(args) or 0)
    except FlowDSLError as e:
        if e.filename == "<string>" and _subject(args):  # name the file, not <string>
            e.filename = _subject(args)
        if debug:
            import traceback

            traceback.print_exc()
        print(e.render(), file=sys.stderr)
        return 1
    except MemoryError:  # an input or setting larger than this machine holds: the user's to change
        if debug:
            import traceback

            traceback.print_exc()
        print(
            "flowdsl: error: out of memory; use a smaller batch, sample count or input, or lower the "
            "FLOWDSL_MAX_* limits (README, Robustness) so such inputs are refused before they allocate",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `flowdsl check f | head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except SystemExit:
        raise
    except BaseException as e:  # an internal error: exit 2
        import traceback

        if debug:
            traceback.print_exc()
        else:
            print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
