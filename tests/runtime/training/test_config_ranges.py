"""TrainConfig refuses the values the command-line flags refuse when they arrive another way
(keyword arguments of ``train``, settings stored in a checkpoint): issue #15 item 2."""

from __future__ import annotations

import math

import pytest

from flowdsl.errors import DataError
from flowdsl.runtime.training.config import resolve_config


@pytest.mark.parametrize(
    "key,value",
    [
        ("clip", -1.0),
        ("clip", 0.0),
        ("clip", math.nan),
        ("lr", math.inf),
        ("lr", math.nan),
        ("weight_decay", math.nan),
        ("weight_decay", math.inf),
        ("weight_decay", -0.1),
        ("max_time", -1.0),
        ("sample_temperature", math.nan),
        ("sample_temperature", 0.0),
        ("warmup", -1),
        ("seed", -1),
        ("sample_n", -1),
    ],
)
def test_bad_setting_is_refused(key, value):
    with pytest.raises(DataError, match=key):
        resolve_config(**{key: value})


def test_stored_settings_are_checked_too():
    with pytest.raises(DataError, match="clip"):
        resolve_config(stored={"clip": -1.0})


def test_defaults_and_edges_pass():
    cfg = resolve_config(weight_decay=0.0, warmup=0, seed=0, sample_n=0, max_time=0.0, clip=1e-6)
    assert cfg.clip == 1e-6
