"""Bad `metadepth` invocations: each exits non-zero with ONE line on stderr that names the argument or key and says
what to do, and never a traceback. Runs in-process (typer's CliRunner) against a copy of params.yaml; none of these
may start a Prefect flow, a training step or write params.yaml."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tiny_project import TINY_MODEL
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
    (["stage", "finetune", "nope", "0"], ["'nope'", "finetune.starts"]),
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
    model_params = load_params(ROOT / "params.yaml").model.model_dump() | TINY_MODEL
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


# ---------------------------------------------------------------- fast answers: no heavy import before the checks

HEAVY = ("torch", "timm", "prefect", "mlflow", "dvc")
# (argv, project folder, words of the answer): each must come without importing any of HEAVY
FAST = [
    (["predict", "missing.pt", "images"], "ok", "missing.pt: checkpoint not found"),
    (["predict", "fake.pt", "README.md"], "ok", "README.md: not an image file"),
    (["predict", "fake.pt", "images"], "ok", "images: no images found in this folder"),
    (["predict", "fake.pt", "images", "--device", "gpu"], "ok", "--device 'gpu'"),
    (["stage", "finetnue", "scratch", "0"], "ok", "unknown stage 'finetnue'"),
    (["stage", "finetune", "nope", "0"], "ok", "unknown START 'nope'"),
    (["stage", "evaluate", "ft_meta"], "ok", "expected no arguments"),
    (["run", "-S", "finetune.steps=-3"], "ok", "finetune.steps: Input should be greater than or equal to 1"),
    (["run", "-S", "finetune.stepz=3"], "ok", "did you mean finetune.steps?"),
    (["run", "--task-runner", "nope"], "ok", "nope"),
    (["stage", "prepare", "loft"], "broken", "params.yaml:3:5: not valid YAML: expected ',' or ']', but got ':'"),
    (["run"], "renamed", "finetune.stepz: unknown key; did you mean finetune.steps?"),
    (["profile", "nope"], "ok", "profiles/nope.yaml: profile not found"),
    (["bench", "--only", "nope"], "ok", "--only 'nope'"),
    (["data", "ingest", "images", "--format", "hm3d", "--name", "../x"], "ok", "--name '../x'"),
    (["stage", "--help"], "ok", "finetune START (finetune.starts) SEED (seeds)"),
    (["--version"], "ok", "metadepth 0."),
]

_FAST_SCRIPT = """
import json, os, sys
from typer.testing import CliRunner
from flows.cli import app
out = []
for argv, folder in json.loads(sys.argv[1]):
    os.chdir(folder)
    r = CliRunner().invoke(app, argv, prog_name="metadepth")
    out.append([r.exit_code, r.stdout + r.stderr])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"results": out, "heavy": heavy}))
"""


def test_argument_errors_come_before_any_heavy_import(tmp_path):
    """Every check above answers with torch, timm, Prefect, MLflow and DVC never imported (they cost seconds to
    tens of seconds on a small machine), in one fresh interpreter that runs them all."""
    import json
    import os
    import subprocess
    import sys

    folders = {name: tmp_path / name for name in ("ok", "broken", "renamed")}
    for folder in folders.values():
        folder.mkdir()
        shutil.copy2(ROOT / "dvc.yaml", folder / "dvc.yaml")
    text = (ROOT / "params.yaml").read_text()
    (folders["ok"] / "params.yaml").write_text(text)
    (folders["broken"] / "params.yaml").write_text("seed: 0\nseeds: [0\ndata: {}\n")  # an unclosed list
    renamed = re.sub(r"(?m)^(finetune:\n(?:  .*\n)*?)  steps:", r"\1  stepz:", text)  # finetune.steps misspelt
    assert renamed != text
    (folders["renamed"] / "params.yaml").write_text(renamed)
    (folders["ok"] / "README.md").write_text("not an image")
    (folders["ok"] / "fake.pt").write_bytes(b"not read: the inputs are checked first")
    (folders["ok"] / "images").mkdir()
    cases = [[argv, str(folders[folder])] for argv, folder, _ in FAST]
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"}
    proc = subprocess.run([sys.executable, "-c", _FAST_SCRIPT, json.dumps(cases), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    for (argv, _, words), (code, output) in zip(FAST, report["results"], strict=True):
        assert words in " ".join(output.split()), (argv, output)
        answered = argv[-1] in ("--help", "--version")
        assert (code == 0) if answered else (code == 1 and output.strip().startswith("error: ")), (argv, output)
    assert report["heavy"] == [], f"imported before the argument checks: {report['heavy']}"
