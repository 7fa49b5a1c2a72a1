"""The Prefect cache key sees exactly what DVC sees for a stage: dep contents (code included), its params, its cmd."""

from __future__ import annotations

import pytest
from tiny_project import tiny_params

from tasks.caching import cache_key, find_stage, load_stages, outputs_exist
from tasks.params import load_params


@pytest.fixture(scope="module")
def project(tiny_repo):
    return tiny_repo("caching")


def key(root, args):
    return cache_key(root, find_stage(root, args), load_params(root / "params.yaml"))


def test_stages_come_from_dvc_yaml(project):
    names = {s.name for s in load_stages(project)}
    assert {"prepare@loft", "init@scratch-0", "meta_init@meta-0", "finetune@meta-0", "supervised@0",
            "finetune@sup-0", "evaluate", "report"} <= names
    spec = find_stage(project, ("finetune", "meta", "0"))
    assert "data/checkpoints/seed0/meta.pt" in spec.deps and "finetune.settings" in spec.params
    assert [u.name for u in spec.upstream(load_stages(project))] == ["prepare@loft", "meta_init@meta-0"]
    assert not outputs_exist(project, spec)


def test_key_follows_code_params_and_data_of_the_stage_only(project):
    ft = ("finetune", "meta", "0")
    base = key(project, ft)
    assert key(project, ft) == base  # stable

    (project / "tasks" / "__pycache__").mkdir(exist_ok=True)
    (project / "tasks" / "__pycache__" / "x.pyc").write_bytes(b"bytecode")
    assert key(project, ft) == base  # byte-code caches are ignored, as in .dvcignore

    evaluate = project / "tasks" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# another stage's code\n")
    assert key(project, ft) == base

    tiny_params(project / "params.yaml", evaluate={"batch_size": 3})
    assert key(project, ft) == base  # another stage's params

    code = project / "tasks" / "finetune.py"
    original = code.read_text()
    code.write_text(original + "\n# edited\n")
    assert key(project, ft) != base  # the stage's own code
    code.write_text(original)
    assert key(project, ft) == base

    tiny_params(project / "params.yaml", finetune={"settings": {"lr": 0.002}})  # the default is 0.001
    assert key(project, ft) != base  # the stage's params

    ck = project / "data" / "checkpoints" / "seed0" / "meta.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    before, report_before = key(project, ft), key(project, ("report",))
    (ck.parent / ".gitignore").write_text("/meta.pt\n")  # written by `dvc commit`: not content
    assert key(project, ("report",)) == report_before  # the report depends on the whole folder
    ck.write_bytes(b"weights")
    assert key(project, ft) != before  # its input data


def test_our_reading_of_dvc_yaml_agrees_with_dvcs_public_api(project, monkeypatch):
    """Each stage's params as DVC's public `dvc.api.params_show(stages=...)` reports them, and the stage list as
    `dvc stage list` prints it: a DVC upgrade that changed how stages resolve would fail here, not silently change
    our cache keys."""
    import subprocess

    import dvc.api

    specs = load_stages(project)
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=project, capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(s.name for s in specs) == sorted(listed)
    monkeypatch.chdir(project)  # params_show resolves the params file against the working directory
    for spec in specs:
        shown = dvc.api.params_show(stages=[spec.name])
        top = {key.split(".")[0] for key in spec.params}
        assert top == set(shown), spec.name
        for key in spec.params:  # every dotted key we hash is a key DVC resolves
            node = shown
            for part in key.split("."):
                node = node[part]


def test_a_deleted_file_inside_a_folder_output_is_a_cache_miss(tmp_path):
    """evaluate's out is the folder data/metrics: with one metrics file gone the folder still exists, so the stage
    must say which files it needs (a cached result would otherwise leave the report without its input)."""
    from tiny_project import write_params

    from tasks.evaluate import metrics_files
    from tasks.stages import STAGES

    params = write_params(tmp_path)
    files = metrics_files(params, tmp_path)
    assert len(files) == len(params.seeds) * len(params.evaluate.models) * len(params.domains)
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    assert STAGES["evaluate"].outputs_complete(params, tmp_path)
    files[-1].unlink()
    assert not STAGES["evaluate"].outputs_complete(params, tmp_path)
    assert STAGES["report"].outputs_complete(params, tmp_path)  # a stage whose outs are its files: DVC's outs
