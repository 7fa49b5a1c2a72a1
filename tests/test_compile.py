"""runtime.numerics.compile: the training and evaluation stages run a torch.compile'd model, checkpoints keep plain keys
(no `_orig_mod.` prefix), and a machine that cannot compile gets one line telling it to turn the switch off."""

from __future__ import annotations

import pytest
import torch
from tiny_project import write_params

from tasks.checkpoints import load_checkpoint, model_from_checkpoint
from tasks.io import MetadepthError
from tasks.runtime import Runtime, compile_unavailable

CPU = torch.device("cpu")


def _params(tmp_path, compile_: bool):
    return write_params(tmp_path, runtime={"numerics": {"compile": compile_},
                                           "host": {"device": "cpu", "num_threads": 1}})


def test_compile_off_returns_the_model_itself(tmp_path):
    model = torch.nn.Linear(2, 2)
    assert Runtime.from_params(_params(tmp_path, False).runtime).compile(model) is model


def test_no_compiler_is_one_line_naming_the_switch(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.runtime.shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(MetadepthError) as err:
        Runtime.from_params(_params(tmp_path, True).runtime)  # refused where the runtime is resolved
    message = str(err.value)
    assert "runtime.numerics.compile: false" in message and "C++ compiler" in message and "\n" not in message


@pytest.fixture
def project(tiny_project, single_thread):
    root, params = tiny_project(runtime={"numerics": {"compile": True}, "host": {"device": "cpu", "num_threads": 1}})
    yield params, root
    torch._dynamo.reset()  # compiled graphs must not leak into other tests


def _spy_compile(monkeypatch, **force) -> list[str]:
    """Record what torch.compile is applied to; `force` overrides its keywords (e.g. a cheap backend)."""
    compiled: list[str] = []
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(type(model).__name__)
                        or compile_(model, **{**kw, **force}))
    return compiled


def _assert_plain_keys(path) -> None:
    keys = list(load_checkpoint(path)["model"])
    assert keys and not any("_orig_mod" in k for k in keys)
    model, _ = model_from_checkpoint(path)  # loads into an eager model
    assert not any("_orig_mod" in k for k in model.state_dict())


@pytest.mark.skipif(compile_unavailable(CPU) is not None, reason=f"runtime.numerics.compile is refused here: "
                                                                 f"{compile_unavailable(CPU)}")
def test_compiled_training_step_runs_and_checkpoint_keys_are_plain(project, monkeypatch):
    """Forward and backward of the fine-tuning step through torch.compile's graph capture and AOT autograd (the
    'aot_eager' backend). Inductor's C++ code generation is left to `metadepth bench --only compile`: with a cold
    cache it took minutes of the 2-core CI budget for no extra check of our code."""
    from tasks.finetune import run_finetune

    params, root = project
    compiled = _spy_compile(monkeypatch, backend="aot_eager", mode=None)
    result = run_finetune(params, root, "scratch")
    assert compiled == ["DepthNet"]  # the training step ran through the compiled module
    assert result.final["loss"] == result.final["loss"]  # finite, not NaN
    _assert_plain_keys(root / result.checkpoint)


def test_meta_init_and_evaluate_run_through_the_compiled_model(project, monkeypatch):
    """Where the switch is applied in the other two stages (dynamo traces, the cheap 'eager' backend runs)."""
    from tasks.evaluate import run_evaluate
    from tasks.meta_init import run_meta_init

    params, root = project
    compiled = _spy_compile(monkeypatch, backend="eager", mode=None)
    result = run_meta_init(params, root, "meta")
    assert compiled == ["DepthNet"]  # Reptile's inner model, which runs every forward of the inner loop
    _assert_plain_keys(root / result.checkpoint)
    metrics = run_evaluate(params, root, "meta", "loft")
    assert compiled == ["DepthNet", "DepthNet"] and metrics["n_images"] > 0
