"""`metadepth compare`: filters (experiment, tags, logged params) become MLflow filter strings; markdown and CSV."""

from __future__ import annotations

import io
import os
import shutil
import uuid

import pandas as pd
import pytest
from tiny_project import ROOT
from typer.testing import CliRunner

from flows.cli import app
from flows.compare import filter_string
from tasks import tracking
from tasks.io import MetadepthError

RMSE = "zero_shot.ft_meta.metric.rmse"


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_uri) -> dict:
    """A project folder and, in a fresh experiment of the session's MLflow DB, three pipeline runs and noise."""
    root = tmp_path_factory.mktemp("compare")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    exp, other = f"cmp-{uuid.uuid4().hex[:8]}", f"cmp-other-{uuid.uuid4().hex[:8]}"
    mp = pytest.MonkeyPatch()
    mp.setenv("METADEPTH_EXPERIMENT", exp)
    ids = {}
    for name, steps, runner, augment, rmse in [("r1", 4, "dvc", True, 1.0), ("r2", 8, "prefect", True, 0.9),
                                               ("r3", 8, "dvc", False, 0.8123456789)]:
        run = tracking.Run(root, name, params={"meta": {"settings": {"inner_steps": steps}},
                                               "finetune": {"settings": {"lr": 5e-4, "online_augment": augment}}},
                           tags={"kind": "pipeline", "runner": runner, "note": "it's"})
        run.log_metrics({RMSE: rmse, "in_domain.ft_meta.metric.rmse": 2.0}, step=0)
        run.end()
        ids[name] = run.id
    # a stage run: never shown
    tracking.Run(root, "stage", params={"meta": {"settings": {"inner_steps": 8}}}, tags={"kind": "stage"}).end()
    mp.setenv("METADEPTH_EXPERIMENT", other)
    other_run = tracking.Run(root, "elsewhere", tags={"kind": "pipeline"})
    other_run.end()
    mp.setenv("METADEPTH_EXPERIMENT", exp)
    mp.delenv("DVC_ROOT", raising=False)
    mp.chdir(root)
    saved = dict(os.environ)  # the CLI sets project-local defaults (PREFECT_HOME, ...): keep them out of other tests
    yield {"root": root, "ids": ids, "other": other}
    os.environ.clear()
    os.environ.update(saved)
    mp.undo()


def compare(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, ["compare", *args])
    return r.exit_code, r.stdout, r.stderr


def csv_rows(*args: str) -> pd.DataFrame:
    code, out, err = compare("--format", "csv", *args)
    assert code == 0, err
    return pd.read_csv(io.StringIO(out))


def names(*args: str) -> set[str]:
    return set(csv_rows(*args)["run_name"])


def test_param_and_tag_filters(project):
    assert names() == {"r1", "r2", "r3"}  # stage runs and other experiments never appear
    assert names("--param", "meta.settings.inner_steps=8") == {"r2", "r3"}
    assert names("--param", "meta.settings.inner_steps=8", "--tag", "runner=dvc") == {"r3"}
    # values are read like -S and matched as they were logged: true -> "True", 5e-4 -> "0.0005"
    assert names("--param", "finetune.settings.online_augment=true") == {"r1", "r2"}
    assert names("--param", "finetune.settings.lr=5e-4") == {"r1", "r2", "r3"}
    assert names("--tag", "note=it's") == {"r1", "r2", "r3"}  # quoted properly
    assert names("-n", "2") == {"r2", "r3"}  # the latest two


def test_filter_string_is_mlflow_syntax():
    assert filter_string([("runner", "dvc")], [("meta.settings.inner_steps", "8")]) == \
        "tags.`runner` = 'dvc' and params.`meta.settings.inner_steps` = '8'"
    assert filter_string([("note", "it's")], []) == "tags.`note` = \"it's\""
    with pytest.raises(MetadepthError, match="--tag note"):
        filter_string([("note", "it's \"x\"")], [])


def test_csv_has_one_row_per_run_with_full_precision(project, tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    code, stdout, err = compare("--format", "csv", "--out", str(out))
    assert code == 0, err
    table = pd.read_csv(out).set_index("run_name")
    assert set(table.index) == {"r1", "r2", "r3"}
    assert table.loc["r3", "run_id"] == project["ids"]["r3"] and table.loc["r3", "status"] == "FINISHED"
    assert table.loc["r3", RMSE] == 0.8123456789 and table.loc["r1", "meta.settings.inner_steps"] == 4
    assert "in_domain.ft_meta.metric.rmse" not in table.columns  # headline metrics only
    assert "finetune.settings.lr" not in table.columns  # identical in every run: not a difference
    assert not list(out.parent.glob(".*"))  # written atomically: no temporary left beside it


def test_markdown_shows_runs_as_columns(project):
    code, out, err = compare("--param", "meta.settings.inner_steps=8")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("| | r") and project["ids"]["r3"][:8] in lines[0]
    assert "| finetune.settings.online_augment | False | True |" in out and f"| {RMSE} | 0.8123 | 0.9 |" in out
    code, out, _ = compare("--param", "meta.settings.inner_steps=4")
    assert "| (parameters) | identical in all runs |" in out


def test_other_experiment(project):
    assert names("--experiment", project["other"]) == {"elsewhere"}
    code, _, err = compare("--experiment", "no-such-experiment")
    assert code == 1 and err.count("\n") == 1 and "no-such-experiment" in err


@pytest.mark.parametrize("args, named", [(["--tag", "runner"], "--tag 'runner'"),
                                         (["--param", "=8"], "--param '=8'"),
                                         (["--param", "meta.settings.inner_steps"],
                                          "--param 'meta.settings.inner_steps'")])
def test_bad_filter_is_one_line_naming_the_option(project, args, named):
    code, _, err = compare(*args)
    assert code == 1 and err.count("\n") == 1 and named in err and "KEY=VALUE" in err


def test_no_match_is_a_message_not_a_table(project, tmp_path):
    code, out, err = compare("--tag", "runner=nothing", "--out", str(tmp_path / "x.csv"))
    assert code == 0 and out == "" and "no pipeline runs match" in err and not (tmp_path / "x.csv").exists()
