"""The ``flowdsl`` command line.

    flowdsl check FILE [--explain]        print the bijector graph; exit 1 with located errors
    flowdsl graph FILE -o out.svg|.png|.dot
    flowdsl export FILE [--checkpoint CKPT] --out DIR
    flowdsl demo [--out DIR] [--sweep]    the main job on the bundled default (train digits, sample, export)
    (train, sample, explain, bench: registered by their runtime modules)

Exit codes: 0 success, 1 user error (bad spec, data or checkpoint), 2 internal error.
User errors print without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Sequence

from flowdsl.errors import FlowDSLError

__all__ = ["main", "build_parser"]

#: subcommands defined here; they need neither torch nor the runtime's command modules, so
#: ``flowdsl check`` starts in the time it takes to import lark, pydantic and networkx
CORE_COMMANDS = ("check", "graph", "export", "demo")

#: modules that add subcommands with a ``register(subparsers)`` function, when present (loaded
#: unless the command line names a core command); the training module also adds the subcommands
#: of the registered objectives (``fdrl-*``)
PLUGIN_MODULES = (
    "flowdsl.fuzz",
    "flowdsl.runtime.training.cli",
    "flowdsl.runtime.explain.cli",
    "flowdsl.runtime.bench.suite",
    "flowdsl.runtime.bench.training",
)


def _cmd_check(args: argparse.Namespace) -> int:
    from flowdsl.compiler.ir import FlowGraph
    from flowdsl.compiler.passes import run_pipeline

    data = _read(args.file)

    def show(name: str, ir) -> None:
        if not args.explain:
            return
        print(f"==== after pass: {name} " + "=" * max(0, 60 - len(name)))
        if name == "parse":
            print(
                f"{len(ir.blocks)} block(s): {', '.join(b.name for b in ir.blocks) or '-'}; "
                f"flow '{ir.flow.name}' with {len(ir.flow.body)} statement(s)"
            )
        elif name == "expand":
            print(
                f"flow {ir.name}: input {ir.input.kind} {tuple(ir.input.shape)}, dequantize {ir.dequantize}, "
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
        print(f"{args.file}: {len(graph.warnings)} warning(s) treated as errors (--werror)", file=sys.stderr)
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
    out = draw_graph(spec.graph, args.output)
    print(f"wrote {out}")
    return 0


def _load_model(spec_path: str, checkpoint: str | None):
    import flowdsl

    spec = flowdsl.parse(_read(spec_path), filename=spec_path)
    model = flowdsl.compile(spec)
    if checkpoint:
        from flowdsl.runtime.training.checkpoint_io import load_weights

        load_weights(model, checkpoint)
    return model


def _cmd_export(args: argparse.Namespace) -> int:
    """Export and check through ``flowdsl.export_onnx``; a parity failure (above ``--tolerance`` or
    NaN) is its FlowDSLError, printed with the error table by ``main`` (exit 1)."""
    import flowdsl
    from flowdsl.runtime.export.onnx import parity_table

    model = _load_model(args.file, args.checkpoint).eval()
    res = flowdsl.export_onnx(
        model, args.out, check=True, exporter=args.exporter, check_batch=args.batch, tolerance=args.tolerance
    )
    print(f"wrote {res.forward}\nwrote {res.inverse}")
    print(f"onnxruntime vs PyTorch (float32, batch {args.batch}):")
    for line in parity_table(res.parity):
        print(f"  {line}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flowdsl.runtime.training.demo import run_demo

    return run_demo(args.out, steps=args.steps, sweep=args.sweep, specs_dir=args.specs)


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(extra: Sequence[Callable] = (), plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``plugins=False`` leaves out the runtime's subcommands."""
    from flowdsl.cliargs import FlowArgumentParser

    p = FlowArgumentParser(prog="flowdsl", description="A declarative graph compiler for normalizing flows.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for every error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="check a spec file and print its bijector graph")
    c.add_argument("file")
    c.add_argument("--explain", action="store_true", help="print the IR after each pass")
    c.add_argument("--werror", action="store_true", help="exit 1 when the checker has warnings")
    c.set_defaults(func=_cmd_check)

    g = sub.add_parser("graph", help="draw the bijector graph (.svg, .png or .dot)")
    g.add_argument("file")
    g.add_argument("-o", "--output", required=True)
    g.set_defaults(func=_cmd_graph)

    e = sub.add_parser("export", help="export forward.onnx and inverse.onnx and check them in onnxruntime")
    e.add_argument("file")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--out", required=True)
    e.add_argument("--exporter", choices=["auto", "torchscript", "dynamo"], default="auto")
    e.add_argument("--batch", type=int, default=7, help="batch size of the parity check")
    e.add_argument("--tolerance", type=float, default=1e-4)
    e.set_defaults(func=_cmd_export)

    d = sub.add_parser("demo", help="train the digits Glow, write a sample grid, export it (the main job)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the spec's)")
    d.add_argument("--sweep", action="store_true", help="also check, round-trip and export every bundled spec")
    d.add_argument("--specs", default=None, help="folder of spec files for --sweep (default: the bundled specs)")
    d.set_defaults(func=_cmd_demo)

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FLOWDSL_DEBUG") == "1"
    try:
        parser = build_parser(plugins=_command_of(argv) not in CORE_COMMANDS)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 1
        return int(args.func(args) or 0)
    except FlowDSLError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(e.render(), file=sys.stderr)
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
