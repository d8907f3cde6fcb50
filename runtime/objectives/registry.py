"""The objective runtime registry: how each objective trains a spec and samples a run.

    @objective_runtime("mle")
    class MLERuntime(ObjectiveRuntime):
        def train(self, spec, data=None, steps=None, out=None, resume=False, *, overwrite=False,
                  quiet=False, **options) -> dict: ...
        def sample(self, run, n=64, *, out="grid.png", seed=0, data=None, **options) -> dict: ...

The language side of an objective (its argument model and checks) is a kind of
``flowdsl.compiler.kinds``; this registry holds what runs it. :func:`train` and :func:`sample`
dispatch by the objective of the spec (or of the spec stored in the run's checkpoint), and
``flowdsl train`` / ``flowdsl sample`` (:mod:`flowdsl.runtime.training.cli`) go through them:
each runtime adds its own flags in a group of its own (:meth:`ObjectiveRuntime.add_train_arguments`,
:meth:`ObjectiveRuntime.add_sample_arguments`; they must not clash with the common flags or with
another objective's), turns the flags that were given into keyword options
(:meth:`ObjectiveRuntime.train_options`), and may add subcommands of its own
(:meth:`ObjectiveRuntime.add_commands`). The built-in runtimes register when
``flowdsl.runtime.objectives`` imports their modules (explicitly, in its ``__init__``), which
Python does before it runs this module.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, ClassVar, Optional

from flowdsl.errors import CheckpointError, FlowDSLError, NotAvailableError

__all__ = [
    "ObjectiveRuntime",
    "objective_runtime",
    "unregister_objective_runtime",
    "get_objective_runtime",
    "objective_runtimes",
    "run_objective",
    "train",
    "sample",
]


class ObjectiveRuntime:
    """What ``flowdsl train`` and ``flowdsl sample`` need of an objective (one instance per objective).

    ``train`` returns the run's summary (a dict); ``sample`` returns ``{"path", "n", "step",
    "spec", "message", ...}`` where ``message`` is the line the command prints. The argument
    hooks get an ``argparse`` argument group titled after the objective.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line: what training with this objective does

    def train(
        self,
        spec: Any,
        data: Optional[str] = None,
        steps: Optional[int] = None,
        out: Optional[str | os.PathLike] = None,
        resume: bool = False,
        *,
        overwrite: bool = False,
        quiet: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        raise NotImplementedError(f"objective {self.name!r} does not train")

    def sample(
        self,
        run: str | os.PathLike,
        n: int = 64,
        *,
        out: str | os.PathLike = "grid.png",
        seed: int = 0,
        data: Optional[str] = None,
        **options: Any,
    ) -> dict[str, Any]:
        raise NotImplementedError(f"objective {self.name!r} does not sample")

    def add_train_arguments(self, group: Any) -> None:
        """Add this objective's ``flowdsl train`` flags to ``group``."""

    def add_sample_arguments(self, group: Any) -> None:
        """Add this objective's ``flowdsl sample`` flags to ``group``."""

    def train_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Keyword options of :meth:`train` from this objective's flags that were given
        (``{dest: value}``). Default: as they are."""
        return dict(given)

    def sample_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Keyword options of :meth:`sample` from this objective's flags that were given."""
        return dict(given)

    def add_commands(self, subparsers: Any) -> None:
        """Add subcommands of this objective to an ``argparse`` subparsers object."""


_RUNTIMES: dict[str, ObjectiveRuntime] = {}


def objective_runtime(name: str):
    """Class decorator: register an :class:`ObjectiveRuntime` subclass as the runtime of objective
    ``name`` (one instance is kept). Registering the same class again is a no-op."""

    def register(cls: type[ObjectiveRuntime]) -> type[ObjectiveRuntime]:
        if not (isinstance(cls, type) and issubclass(cls, ObjectiveRuntime)):
            raise TypeError(f"@objective_runtime({name!r}) decorates an ObjectiveRuntime subclass, not {cls!r}")
        prev = _RUNTIMES.get(name)
        if prev is not None and (type(prev).__module__, type(prev).__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"objective {name!r} has two runtimes: {type(prev).__module__} and {cls.__module__}")
        cls.name = name
        _RUNTIMES[name] = cls()
        return cls

    return register


def unregister_objective_runtime(name: str) -> None:
    """Remove the runtime of objective ``name`` (no error when there is none)."""
    _RUNTIMES.pop(name, None)


def objective_runtimes() -> dict[str, ObjectiveRuntime]:
    return dict(_RUNTIMES)


def get_objective_runtime(name: str, spec: Any = None) -> ObjectiveRuntime:
    """The runtime of objective ``name``; a :class:`NotAvailableError` located at the spec's
    ``objective`` statement (when ``spec`` is given) if nothing registered one."""
    rt = _RUNTIMES.get(name)
    if rt is not None:
        return rt
    objective = getattr(spec, "objective", None)
    raise NotAvailableError(
        f"objective {name!r} has no runtime (no @objective_runtime({name!r}) is registered); "
        f"objectives that train: {', '.join(sorted(_RUNTIMES)) or 'none'}",
        filename=str(getattr(spec, "filename", None) or "train"),
        span=getattr(objective, "span", None),
        source=getattr(spec, "source", None),
    )


def _objective_name(spec: Any) -> str:
    return str(getattr(getattr(spec, "objective", None), "name", None) or "mle")


def run_objective(run: str | os.PathLike, factory: Any = None) -> tuple[str, Any]:
    """``(objective name, spec)`` of a run folder or checkpoint (its spec is parsed from the text
    stored in the checkpoint)."""
    from flowdsl.runtime.training.checkpoint import read_checkpoint
    from flowdsl.runtime.training.models import ModelFactory

    ckpt = read_checkpoint(run)
    try:
        filename = ckpt.get("spec_filename") or "<checkpoint>"
        spec = (factory or ModelFactory()).parse(ckpt["spec_text"], filename=filename)
    except FlowDSLError as e:
        raise CheckpointError(
            f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(ckpt.get("path", run))
        ) from None
    return _objective_name(spec), spec


def train(
    spec: Any,
    data: Optional[str] = None,
    steps: Optional[int] = None,
    out: Optional[str | os.PathLike] = None,
    resume: bool = False,
    *,
    overwrite: bool = False,
    quiet: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Train ``spec`` (a parsed spec, a path to a spec file, or spec text; with ``resume``, also a
    run folder, whose stored spec is used and which is the run continued) by its objective.

    ``data``, ``steps``, ``out``, ``resume``, ``overwrite`` and ``quiet`` mean the same for every
    objective; ``options`` go to the objective's runtime (for ``mle``: the
    :class:`~flowdsl.runtime.training.config.TrainConfig` fields and ``factory``, see
    :func:`flowdsl.runtime.training.loop.train_mle`; for ``fdrl`` also the FDRL settings).
    Returns the run's summary.
    """
    from flowdsl.runtime.data.arrays import remember_arrays
    from flowdsl.runtime.training.models import ModelFactory, as_spec
    from flowdsl.runtime.training.run_folder import spec_of_run_folder

    found = spec_of_run_folder(spec, out, resume, options.get("factory"))  # train(RUN_FOLDER, resume=True)
    if found is not None:
        spec, out = found
    spec = as_spec(spec, options.get("factory") or ModelFactory())
    rt = get_objective_runtime(_objective_name(spec), spec)
    data = remember_arrays(data)  # in-memory arrays (numpy, torch) travel as a label the run can store
    return rt.train(spec, data, steps, out, resume, overwrite=overwrite, quiet=quiet, **options)


def sample(
    run: str | os.PathLike,
    n: int = 64,
    *,
    out: str | os.PathLike = "grid.png",
    seed: int = 0,
    data: Optional[str] = None,
    **options: Any,
) -> dict[str, Any]:
    """Sample a trained run (folder or checkpoint) by the objective of its spec; writes ``out``
    and returns ``{"path", "n", "step", "spec", "message", ...}``."""
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import ResourceLimitError

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ResourceLimitError(f"n must be a whole number ≥ 1, got {n!r}", filename="sample")
    if n > LIMITS.max_samples:  # checked before the run is even read
        raise ResourceLimitError(
            f"n {n:,} is above the limit of {LIMITS.max_samples:,} samples (FLOWDSL_MAX_SAMPLES)", filename="sample"
        )
    name, spec = run_objective(run, options.get("factory"))
    return get_objective_runtime(name, spec).sample(run, n, out=out, seed=seed, data=data, **options)


# -- command-line support (used by flowdsl.runtime.training.cli) ------------------------------------


class _Recorder:
    """An argument group that remembers the actions added through it."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.actions: list[argparse.Action] = []

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = self.group.add_argument(*args, **kwargs)
        self.actions.append(action)
        return action


def add_objective_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add every objective's flags for ``command`` (``"train"`` or ``"sample"``) to ``parser``,
    each in its own group; :func:`objective_options` reads them back."""
    owned: dict[str, list[argparse.Action]] = {}
    for name, rt in _RUNTIMES.items():
        title = f"objective {name}" + (f" ({rt.summary})" if rt.summary else "")
        rec = _Recorder(parser.add_argument_group(title))
        (rt.add_train_arguments if command == "train" else rt.add_sample_arguments)(rec)
        if rec.actions:
            owned[name] = rec.actions
    parser.set_defaults(_objective_flags=owned)


def objective_options(args: argparse.Namespace, name: str, command: str, where: str) -> dict[str, Any]:
    """The keyword options of objective ``name`` from the flags given on the command line; a
    flag of another objective is a :class:`FlowDSLError` (``where`` names the spec or run)."""
    rt = get_objective_runtime(name)
    given: dict[str, Any] = {}
    for other, actions in (getattr(args, "_objective_flags", None) or {}).items():
        for a in actions:
            value = getattr(args, a.dest, a.default)
            if value == a.default:
                continue
            if other != name:
                flag = a.option_strings[0]
                raise FlowDSLError(
                    f"{flag} is a flag of objective {other}; {where} has objective {name}", filename=where
                )
            given[a.dest] = value
    return rt.train_options(given) if command == "train" else rt.sample_options(given)
