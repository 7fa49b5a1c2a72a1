"""Mixed precision and channels_last (runtime.numerics amp, channels_last): the policy, and bf16 training on CPU."""

from __future__ import annotations

import contextlib
import math

import torch
from tiny_project import ROOT

from tasks.checkpoints import load_checkpoint
from tasks.finetune import run_finetune
from tasks.meta_init import run_meta_init
from tasks.params import load_params
from tasks.runtime import Runtime

CPU = torch.device("cpu")


def runtime(**numerics) -> Runtime:
    """The CPU runtime of params.yaml with these runtime.numerics."""
    rt = load_params(ROOT / "params.yaml").runtime
    return Runtime.from_params(rt.model_copy(update={"numerics": rt.numerics.model_copy(update=numerics),
                                                     "host": rt.host.model_copy(update={"device": "cpu"})}))


def test_auto_is_off_on_cpu():
    rt = runtime(amp="auto", channels_last="auto")
    assert rt.amp_dtype is None
    assert isinstance(rt.autocast(), contextlib.nullcontext)
    assert rt.memory_format is torch.contiguous_format


def test_forced_settings_apply_on_cpu():
    rt = runtime(amp="bf16", channels_last="on")
    assert rt.amp_dtype is torch.bfloat16
    with rt.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    assert rt.memory_format is torch.channels_last
    assert runtime(amp="off").amp_dtype is None
    assert runtime(channels_last="off").memory_format is torch.contiguous_format


def test_bf16_channels_last_training_on_cpu_is_finite(tiny_project, single_thread):
    root, params = tiny_project(runtime={"host": {"num_threads": 1},
                                         "numerics": {"amp": "bf16", "channels_last": "on"}})
    meta = run_meta_init(params, root, "meta")
    assert math.isfinite(meta.final["loss_last"]) and math.isfinite(meta.final["loss_task_augment"])
    result = run_finetune(params, root, "meta")
    assert math.isfinite(result.final["loss"])
    ck = load_checkpoint(root / "data" / "checkpoints" / "seed0" / "ft_meta.pt")
    # weights stay float32 (autocast only lowers the compute) and are stored in the plain layout
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in ck["model"].values() if v.is_floating_point())
