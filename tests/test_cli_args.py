"""Bad `metadepth` invocations: each exits non-zero with ONE line on stderr that names the argument or key and says
what to do, and never a traceback. Runs in-process (typer's CliRunner) against a copy of params.yaml; none of these
may start a Prefect flow, a training step or write params.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "profiles", root / "profiles")
    (root / "a_file").write_text("not a folder")
    (root / "images").mkdir()
    (root / "raw").mkdir()
    return root


# (argv, words the one line must contain: the argument/key named, and a hint of the fix)
CASES = [
    (["stage", "nope"], ["'nope'", "prepare, init, meta_init, supervised, finetune, evaluate, report"]),
    (["stage"], ["'args'", "metadepth stage --help"]),
    (["stage", "evaluate", "ft_meta"], ["evaluate", "no arguments", "metadepth stage evaluate"]),
    (["stage", "supervised"], ["SEED", "metadepth stage supervised 0"]),
    (["stage", "prepare"], ["prepare", "DATASET"]),
    (["stage", "supervised", "7"], ["SEED '7'", "seeds"]),
    (["stage", "finetune", "nope", "0"], ["'nope'", "finetune.inits"]),
    (["stage", "finetune", "meta"], ["START SEED", "metadepth stage finetune scratch 0"]),
    (["stage", "finetune", "meta", "7"], ["SEED '7'", "seeds"]),
    (["stage", "report", "extra"], ["report", "no arguments"]),
    (["run", "-S", "finetune.steps"], ["finetune.steps", "KEY=VALUE"]),
    (["run", "-S", "finetune.stepz=3"], ["finetune.stepz", "unknown key"]),
    (["run", "-S", "finetune.steps=-3"], ["finetune.steps", "greater than or equal to 1"]),
    (["run", "--max-parallel", "0"], ["--max-parallel", "metadepth run --help"]),
    (["run", "--bogus"], ["--bogus", "metadepth run --help"]),
    (["profile", "nope"], ["nope", "profiles/"]),
    (["predict", "missing.pt", "images"], ["missing.pt", "checkpoint"]),
    (["predict", "{ckpt}", "images", "--out", "a_file"], ["--out", "a_file", "folder"]),
    (["predict", "{ckpt}", "images", "--fov", "0"], ["--fov", "(0, 180)"]),
    (["predict", "{ckpt}", "images", "--fov", "wide"], ["--fov", "valid number", "metadepth predict --help"]),
    (["predict", "{ckpt}", "images", "--batch-size", "0"], ["--batch-size", "metadepth predict --help"]),
    (["predict", "{ckpt}"], ["'inputs'", "metadepth predict --help"]),
    (["bench", "--only", "nope"], ["--only", "nope", "reptile"]),
    (["bench", "--threads", "-1"], ["--threads", "metadepth bench --help"]),
    (["bench", "--quik"], ["--quik", "metadepth bench --help"]),
    (["data", "ingest", "raw", "--format", "nope", "--name", "x"], ["nope", "metadepth data formats"]),
    (["data", "ingest", "raw", "--name", "x"], ["--format", "metadepth data ingest --help"]),
    (["data", "ingest", "raw", "--format", "hm3d", "--name", "../x"], ["--name", "'../x'"]),
    (["data", "ingest", "raw", "--format", "hm3d", "--name", "x", "-o", "depth_scale"], ["depth_scale",
                                                                                          "KEY=VALUE"]),
    (["data", "ingest", "missing", "--format", "hm3d", "--name", "x"], ["missing"]),
    (["data", "inspect", "nope"], ["nope", "ingest"]),
    (["nope"], ["nope", "metadepth --help"]),
]


@pytest.fixture(scope="module")
def checkpoint(project) -> str:
    """A real (tiny) checkpoint, so predict's other arguments are what fails."""
    import torch

    from tasks.checkpoints import build_model, save_checkpoint
    from tasks.params import load_params

    torch.manual_seed(0)
    model_params = load_params(ROOT / "params.yaml").model.model_dump() | {"encoder": "test_convnext"}
    path = project / "tiny.pt"
    save_checkpoint(path, build_model(model_params), model_params, step=0, data_hash="0" * 64)
    return str(path)


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_invocation_is_one_line(project, checkpoint, monkeypatch, argv, words):
    monkeypatch.chdir(project)
    monkeypatch.setenv("DVC_ROOT", str(project))
    before = (project / "params.yaml").read_text()
    result = CliRunner().invoke(app, [checkpoint if a == "{ckpt}" else a for a in argv], prog_name="metadepth")
    err = result.stderr.strip()
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert (project / "params.yaml").read_text() == before  # a rejected -S never half-writes params.yaml
    assert not (project / "mlruns").exists() and not (project / "mlflow.db").exists()  # nothing started


def test_help_and_no_arguments_still_show_help():
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "stage" in result.output
