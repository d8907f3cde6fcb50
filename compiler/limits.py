"""Resource limits the checker enforces before anything is allocated.

Each limit can be raised with an environment variable (read when flowdsl is imported) or by
assigning to ``LIMITS`` in Python. Every input path checks its limit before it allocates: spec
text (``max_source_bytes``: files are read up to the limit plus one byte, and only regular files),
data files (``max_data_bytes``: ``.npy`` headers, ``.npz`` members' uncompressed sizes from the zip
directory, CSV files; ``max_image_pixels``: image sizes from the file header), sample counts
(``max_samples``), batch sizes (``max_batch``: the spec's ``train(batch=...)``, flags and Python
keyword arguments) and thread counts (``max_threads``). The README's Robustness section lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Limits", "LIMITS"]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Limits:
    #: most layers a spec may expand to (repeats and blocks included)
    max_layers: int = _env_int("FLOWDSL_MAX_LAYERS", 5_000)
    #: largest single size argument (channels, height, hidden, ...)
    max_dim: int = _env_int("FLOWDSL_MAX_DIM", 65_536)
    #: most dimensions of one input sample
    max_input_numel: int = _env_int("FLOWDSL_MAX_INPUT_NUMEL", 16_777_216)
    #: most trainable parameters
    max_params: int = _env_int("FLOWDSL_MAX_PARAMS", 500_000_000)
    #: largest integer literal (seeds included)
    max_int: int = _env_int("FLOWDSL_MAX_INT", 2**62)
    #: longest list literal
    max_list: int = _env_int("FLOWDSL_MAX_LIST", 4096)
    #: most statement expansions (repeat iterations and statements visited)
    max_expansion_steps: int = _env_int("FLOWDSL_MAX_EXPANSION_STEPS", 200_000)
    #: most activation memory for one training step at the spec's batch size (bytes, float32)
    max_activation_bytes: int = _env_int("FLOWDSL_MAX_ACTIVATION_BYTES", 16 * 1024**3)
    #: most memory one layer's inverse may take to plan when it is built (bytes; estimated by the
    #: kind, e.g. ``compiler.kinds.conv.plan_bytes``, and checked before anything is allocated)
    max_plan_bytes: int = _env_int("FLOWDSL_MAX_PLAN_BYTES", 2 * 1024**3)
    #: most sequential passes one layer's slow direction may take (``autoregressive`` on D entries
    #: takes D: its inverse for direction=forward, its forward for direction=inverse; each pass is
    #: unrolled in ONNX and under torch.compile)
    max_sequential_passes: int = _env_int("FLOWDSL_MAX_SEQUENTIAL_PASSES", 1024)
    #: largest batch size (training, evaluation, export checks)
    max_batch: int = _env_int("FLOWDSL_MAX_BATCH", 65_536)
    #: most samples one command draws (they are drawn in batches of at most max_batch)
    max_samples: int = _env_int("FLOWDSL_MAX_SAMPLES", 1_000_000)
    #: most torch / onnxruntime threads a command may ask for
    max_threads: int = _env_int("FLOWDSL_MAX_THREADS", 256)
    #: largest spec file or text (bytes; a file is read up to this plus one byte, never further)
    max_source_bytes: int = _env_int("FLOWDSL_MAX_SOURCE_BYTES", 1_000_000)
    #: most tokens (names, numbers, strings, punctuation; comments not counted) of one spec: the
    #: parser's time is linear in them, and this bound keeps the worst spec under the front end's
    #: 2 s (real specs have a few hundred; 5,000 written-out Glow layers about 21,000, and a
    #: 1,000-deep block chain with 4,999 written-out layers about 26,500)
    max_tokens: int = _env_int("FLOWDSL_MAX_TOKENS", 30_000)
    #: most bytes one data file may expand to in memory (an .npy array, one .npz member, a CSV's values)
    max_data_bytes: int = _env_int("FLOWDSL_MAX_DATA_BYTES", 4 * 1024**3)
    #: most pixels of one image file (width × height, read from its header before decoding)
    max_image_pixels: int = _env_int("FLOWDSL_MAX_IMAGE_PIXELS", 16_777_216)


LIMITS = Limits()
