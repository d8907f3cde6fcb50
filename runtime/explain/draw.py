"""Drawings of the bijector graph: Graphviz DOT text, or SVG/PNG rendered with matplotlib.

The chain runs top to bottom (x at the top, the final latent at the bottom); latents that
``split`` factors out hang to the right; body layers of composite kinds are indented.
"""

from __future__ import annotations

from pathlib import Path

from flowdsl.compiler.ir import FlowGraph, _shape
from flowdsl.errors import FlowDSLError
from flowdsl.wording import plural

__all__ = ["to_dot", "draw_graph"]


def _label(n) -> str:
    shape = f"{_shape(n.in_shape)} → {_shape(n.out_shape)}" if n.in_shape else ""
    args = n.args_text()
    return "\n".join(x for x in (f"{n.kind}  (line {n.span.line})", args, shape) if x)


def to_dot(graph: FlowGraph) -> str:
    lines = ["digraph flow {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    for nid in graph.g.nodes:
        n = graph.node(nid)
        if n.role == "input":
            lab = f"x {_shape(n.out_shape)}"
            lines.append(f'  "{nid}" [label="{lab}", shape=oval];')
        elif n.role == "latent":
            lab = f"{nid} {_shape(n.out_shape)}"
            lines.append(f'  "{nid}" [label="{lab}", shape=oval, style=filled, fillcolor="#dde8f7"];')
        else:
            lab = _label(n).replace('"', "'").replace("\n", "\\n")
            lines.append(f'  "{nid}" [label="{nid}\\n{lab}"];')
    for a, b, data in graph.g.edges(data=True):
        style = {"latent": ' [style=dashed, label="latent"]', "body": ' [style=dotted, label="body"]'}.get(
            data.get("port"), ""
        )
        lines.append(f'  "{a}" -> "{b}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_graph(graph: FlowGraph, output: str) -> str:
    """Write the drawing; the format follows the file extension (.dot, .svg, .png). The write is
    atomic and refuses folders, devices and FIFOs (:mod:`flowdsl.outputs`); the folder must exist."""
    from flowdsl.outputs import atomic_write, atomic_write_text, check_output_path

    out = Path(output)
    ext = out.suffix.lower()
    if ext not in (".dot", ".gv", ".svg", ".png", ".pdf"):
        raise FlowDSLError(f"unknown drawing format '{ext or output}': use .svg, .png or .dot")
    check_output_path(out, what="drawing")
    if ext in (".dot", ".gv"):
        atomic_write_text(out, to_dot(graph), what="drawing")
        return str(out)
    _draw_matplotlib(graph, out, lambda save: atomic_write(out, save, what="drawing"))
    return str(out)


def _draw_matplotlib(graph: FlowGraph, out: Path, write=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []  # (node, depth)
    x = graph.node("x")
    rows.append((x, 0))
    for n in graph.layers():
        rows.append((n, graph.depth(n)))
        for succ in graph.g.successors(n.id):
            if graph.g.edges[n.id, succ].get("port") == "latent":
                rows.append((graph.node(succ), -1))
    final = graph.node(graph.latents[-1])
    rows.append((final, 0))
    h = 0.62
    fig_h = max(3.0, len(rows) * h + 0.8)
    fig, ax = plt.subplots(figsize=(9.5, fig_h))
    ax.set_xlim(0, 10)
    ax.set_ylim(-len(rows) * h - 0.3, 0.5)
    ax.axis("off")
    colors = {"input": "#f3f3f3", "latent": "#dde8f7"}
    prev_y = None
    for i, (n, depth) in enumerate(rows):
        y = -i * h
        if n.role == "layer":
            text = f"{n.id}: {n.kind}" + (f"({n.args_text()})" if n.args_text() else "")
            sub = f"{_shape(n.in_shape)} → {_shape(n.out_shape)}   {n.n_params or 0:,} params   line {n.span.line}"
            x0 = 0.3 + 0.5 * max(depth, 0)
            face = "#fff4dc" if n.kind in ("squeeze", "split", "permute") else "#ffffff"
        else:
            text = f"x {_shape(n.out_shape)}" if n.role == "input" else f"latent {n.id} {_shape(n.out_shape)}"
            sub = ""
            x0 = 6.3 if depth < 0 else 0.3
            face = colors[n.role]
        width = 3.4 if depth < 0 else 9.2 - x0
        ax.add_patch(
            plt.Rectangle((x0, y - 0.5 * h + 0.06), width, h - 0.12, facecolor=face, edgecolor="#444444", lw=0.8)
        )
        ax.text(x0 + 0.1, y + (0.08 if sub else 0.0), text[:110], fontsize=7.5, va="center", family="monospace")
        if sub:
            ax.text(x0 + 0.1, y - 0.14, sub, fontsize=6.5, va="center", color="#555555", family="monospace")
        if depth >= 0 and prev_y is not None:
            ax.annotate(
                "", xy=(0.2, y + 0.25 * h), xytext=(0.2, prev_y - 0.25 * h), arrowprops=dict(arrowstyle="->", lw=0.6)
            )
        if depth >= 0:
            prev_y = y
    ax.set_title(
        f"flow {graph.spec.name}: {plural(sum(1 for _ in graph.layers()), 'bijector')}, "
        f"{plural(graph.model_params(), 'parameter')}",
        fontsize=10,
    )
    fig.tight_layout()
    dpi = 110 if out.suffix.lower() == ".png" else None
    try:
        if write is None:
            fig.savefig(out, dpi=dpi)
        else:  # an atomic writer: ``write(save)`` calls ``save(fileobj)``
            write(lambda f: fig.savefig(f, dpi=dpi, format=out.suffix.lower()[1:]))
    finally:
        plt.close(fig)
