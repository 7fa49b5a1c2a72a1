from pathlib import Path

import pytest

from tasks.io import MetadepthError
from tasks.param_values import apply_overrides, subset
from tasks.params import load_params, merged, read_raw, validate

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    import json

    return json.loads(json.dumps(read_raw(ROOT / "params.yaml")))


def test_default_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    meta, ft = p.meta.settings, p.finetune.settings
    assert meta.inner_steps == 4 and meta.inner_lr == 1e-3 and meta.outer_lr == 0.1  # the paper's values
    assert ft.lr == 1e-3 and ft.lr_min == 1e-6  # 1e-3 on the CPU default's encoder, by measurement
    assert p.loss.smooth_weight == 1e-3 and p.loss.scale_decay == 2.3


@pytest.mark.parametrize(
    "path, value, key_in_message",
    [
        (("meta", "settings", "inner_stepz"), 3, "meta.settings.inner_stepz"),  # unknown key
        (("meta", "settings", "inner_steps"), "four", "meta.settings.inner_steps"),  # wrong type
        (("meta", "settings", "inner_steps"), 0, "meta.settings.inner_steps"),  # out of range
        (("finetune", "settings", "lr"), -1.0, "finetune.settings.lr"),
        (("train_domain",), "mars", "train_domain 'mars' is not one of domains"),  # inconsistent
        (("domains",), ["../etc"], "domains"),  # would escape data/
        (("domains",), ["loft", "loft"], "domains: ['loft', 'loft'] repeats an entry"),
        (("evaluate", "models"), ["ft_nothing"], "evaluate.models"),
        (("augment", "flip_prob"), 1.5, "augment.flip_prob"),
        (("meta", "settings", "outer_optimizer"), "rmsprop", "meta.settings.outer_optimizer"),
        (("evaluate", "per_dataset"), {"loft": {"crop": "middle"}}, "per_dataset.loft: crop"),
        (("evaluate", "per_dataset"), {"mars": {"crop": "eigen"}}, "evaluate.per_dataset: 'mars'"),
        (("meta", "variants"), {"meta": {}, "meta_x": {"inner_lr": -1}}, "variants.meta_x: inner_lr"),
        (("init", "kinds"), ["pretrained"], "pretrained_path is not set"),
        (("seeds",), [], "seeds"),
        (("seeds",), [0, 0], "seeds: [0, 0] repeats an entry"),
        (("seeds",), [-1], "seeds"),
        (("seeds",), "0", "seeds"),
        (("finetune", "starts"), ["meta_x"], "finetune.starts: 'meta_x' is not produced"),
        (("finetune", "starts"), ["scratch", "scratch"], "finetune.starts"),
        (("finetune", "starts"), {"scratch": "scratch"}, "finetune.starts"),  # the old mapping form
        (("init", "kinds"), ["random"], "init.kinds"),
        (("runtime", "numerics", "compile"), "maybe", "runtime.numerics.compile"),
        (("runtime", "numerics", "compile_mode"), "fastest", "runtime.numerics.compile_mode"),
        (("meta", "steps"), 5, "meta.steps: moved to meta.settings.steps"),  # the keys before the regrouping
        (("seed",), 0, "seed: moved to data.seed"),
        (("runtime", "device"), "cpu", "runtime.device: moved to runtime.host.device"),
        (("tracking", "mlflow_uri"), "mlflow.db", "tracking.mlflow_uri"),  # a path, not a URI
        (("tracking", "experiment"), "", "tracking.experiment"),
        (("tracking", "dvc_remot"), "backup", "tracking.dvc_remot"),
        (("tracking", "dvc_remote"), 3, "tracking.dvc_remote"),
    ],
)
def test_bad_params_name_the_key(path, value, key_in_message):
    raw = raw_params()
    node = raw
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(MetadepthError) as err:
        validate(raw)
    assert key_in_message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_key_is_named():
    raw = raw_params()
    del raw["loss"]["scale_decay"]
    with pytest.raises(MetadepthError, match=r"loss\.scale_decay: missing key"):
        validate(raw)


def test_overrides_write_back_and_keep_comments(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    p = apply_overrides(f, ["finetune.steps=7", "meta.settings.task_augment.mixup=false"])
    assert p.finetune.steps == 7 and p.meta.settings.task_augment.mixup is False
    text = f.read_text()
    assert "steps: 7" in text and "meta: the Reptile meta-initialisation" in text
    assert load_params(f).finetune.steps == 7


@pytest.mark.parametrize("bad", ["finetune.nope=1", "finetune.steps", "finetune.steps=-3", "=3"])
def test_bad_overrides_fail_and_leave_file_untouched(tmp_path, bad):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    before = f.read_text()
    with pytest.raises(MetadepthError):
        apply_overrides(f, [bad])
    assert f.read_text() == before


def test_subset_reads_dotted_keys():
    p = load_params(ROOT / "params.yaml")
    assert subset(p, ["data.seed", "finetune.settings.lr"]) == {"data.seed": p.data.seed, "finetune.settings.lr": 1e-3}


def test_paper_profile_applies_and_validates(tmp_path):
    from tasks.params_file import profile_overrides

    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    p = apply_overrides(f, profile_overrides(ROOT / "profiles" / "paper.yaml"))
    assert p.model.encoder == "convnext_base" and (p.data.height, p.data.width) == (256, 320)
    meta = p.meta.settings
    assert meta.inner_lr == 1e-3 and meta.outer_lr == 0.1 and p.finetune.settings.lr == 5e-4  # kept from the paper
    assert p.runtime.host.device == "cuda"
    # ConvNeXt has four levels (strides 4..32): all kept, so the decoder needs one width per stride 1..16.
    assert p.model.encoder_levels is None and len(p.model.decoder_channels) == 5


def test_per_dataset_protocol_overrides_only_that_dataset():
    raw = raw_params()
    raw["evaluate"]["per_dataset"] = {"office": {"crop": "eigen", "max_depth": 8.0}}
    p = validate(raw)
    assert p.evaluate.protocol("office").crop == "eigen" and p.evaluate.protocol("office").max_depth == 8.0
    assert p.evaluate.protocol("loft").crop == "none" and p.evaluate.protocol("loft").max_depth == 10.0


def test_tracking_settings_change_no_result():
    """`tracking` is not a stage input: no dvc.yaml stage lists it, and it is left out of what runs log and hash."""
    from ruamel.yaml import YAML

    from tasks.param_values import result_params

    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = [k for s in stages.values() for k in (s.get("do") or s).get("params", [])]
    assert not [k for k in listed if str(k).split(".")[0] == "tracking"]
    raw = raw_params()
    raw["tracking"] = {"mlflow_uri": "sqlite:///elsewhere.db", "experiment": "x", "dvc_remote": "backup"}
    assert "tracking" not in result_params(validate(raw))
    assert result_params(validate(raw)) == result_params(load_params(ROOT / "params.yaml"))


def test_tracking_section_is_optional_and_read_alone(tmp_path, monkeypatch):
    """Reading runs (`metadepth compare`) needs only a valid `tracking` section, not a valid rest of the file."""
    from tasks.tracking import settings, tracking_uri

    raw = raw_params()
    del raw["tracking"]
    assert validate(raw).tracking.experiment == "metadepth"
    f = tmp_path / "params.yaml"
    f.write_text("seed: -1\ntracking: {mlflow_uri: sqlite:///runs/m.db, experiment: mine}\n")
    assert settings(tmp_path).experiment == "mine"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/runs/m.db"  # relative to the project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"  # the environment wins over params.yaml
    f.write_text("tracking: {mlflow_uri: runs/m.db}\n")
    with pytest.raises(MetadepthError, match=r"tracking\.mlflow_uri: .*not a tracking URI"):
        settings(tmp_path)
    f.write_text("tracking: {experimnet: mine}\n")
    with pytest.raises(MetadepthError, match=r"tracking\.experimnet: unknown key; did you mean tracking\.experiment"):
        settings(tmp_path)


# ---------------------------------------------------------------- reading errors: where, and what was meant

# (params.yaml text, the one line's "file:line:column" and problem)
YAML_ERRORS = [
    ("seed: 0\ndata: [1, 2\nmodel: {}\n", "params.yaml:3:6: not valid YAML: expected ',' or ']', but got ':'"),
    ("seed: 0\n  bad: 1\n", "params.yaml:2:6: not valid YAML: mapping values are not allowed here"),
    ("seed: 0\nseed: 1\n", 'params.yaml:2:1: not valid YAML: found duplicate key "seed"'),
    ("a: 'open\n", "params.yaml:2:1: not valid YAML: found unexpected end of stream"),
    ("a: @x\n", "params.yaml:1:4: not valid YAML: found character '@' that cannot start any token"),
    ("a:\n\t- 1\n", "params.yaml:2:1: not valid YAML: found character '\\t' that cannot start any token"),
]


@pytest.mark.parametrize("text, message", YAML_ERRORS, ids=[m.split(": ", 2)[-1] for _, m in YAML_ERRORS])
def test_yaml_syntax_error_gives_file_line_and_column(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(text)
    with pytest.raises(MetadepthError) as err:
        load_params("params.yaml")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# (where a key is renamed or misspelt: section path, old name, new name; the closest valid key the error names)
RENAMED = [
    ((), "runtime", "runtimes", "runtimes: unknown key; did you mean runtime?"),
    (("finetune",), "steps", "step", "finetune.step: unknown key; did you mean finetune.steps?"),
    (("meta", "settings", "task_augment"), "mixup", "mix_up",
     "meta.settings.task_augment.mix_up: unknown key; did you mean "
                                                  "meta.settings.task_augment.mixup?"),
    (("runtime", "host"), "num_workers", "workers",
     "runtime.host.workers: unknown key; did you mean runtime.host.num_workers?"),
    (("finetune", "settings"), "lr", "learning_rate_zz",
     "finetune.settings.learning_rate_zz: unknown key; valid here: lr, lr_min, weight_decay"),
]


@pytest.mark.parametrize("section, old, new, message", RENAMED, ids=[r[2] for r in RENAMED])
def test_renamed_key_is_reported_as_unknown_with_the_closest_key(section, old, new, message):
    raw = raw_params()
    node = raw
    for k in section:
        node = node[k]
    node[new] = node.pop(old)
    with pytest.raises(MetadepthError) as err:
        validate(raw)
    assert f"params.yaml: {message}" in str(err.value), str(err.value)
    assert "(and 1 more)" in str(err.value)  # the missing key it left behind is counted, not shown first


def test_misspelt_key_inside_a_variant_or_source_gets_the_closest_key():
    raw = raw_params()
    raw["meta"]["variants"]["meta_l8"] = {"inner_stepz": 8}
    with pytest.raises(MetadepthError, match=r"variants\.meta_l8: inner_stepz: unknown key; did you mean inner_steps"):
        validate(raw)
    raw = raw_params()
    raw["data"]["sources"] = {"real": {"formt": "va", "path": "va"}}
    with pytest.raises(MetadepthError, match=r"data\.sources\.real\.formt: unknown key; did you mean "
                                             r"data\.sources\.real\.format"):
        validate(raw)


def test_misspelt_override_names_the_closest_key(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(MetadepthError, match=r"unknown key finetune\.stepz; did you mean finetune\.steps\?"):
        apply_overrides(f, ["finetune.stepz=3"])
    with pytest.raises(MetadepthError, match=r"unknown key finetunes; did you mean finetune\?"):
        apply_overrides(f, ["finetunes.steps=3"])
    with pytest.raises(MetadepthError, match=r"override 'seeds=\[0': not valid YAML"):
        apply_overrides(f, ["seeds=[0"])


# ---------------------------------------------------------------- writing overrides: only the values named change

OVERRIDES = {  # override -> the params.yaml key line it may change (every other line must stay byte-identical)
    "finetune.steps=7": "  steps: 1500",
    "seeds=[0, 1]": "seeds: [0, 1, 2]",
    "init.pretrained_path=weights/enc.pth": "  pretrained_path: null",
    "runtime.numerics.compile_mode=max-autotune": "    compile_mode: default",
    "meta.settings.task_augment={mixup: false, mixup_alpha: 0.4, channel_shuffle: true, shuffle_fraction: 0.5}":
        "      mixup: true",  # a block mapping replaced by a flow one: its first line, and its other lines go
    "evaluate.per_dataset={office: {crop: eigen}}": "  per_dataset: {}",
    "model.encoder=convnext_pico": "  encoder: resnet10t",
}


def test_overrides_change_only_the_lines_of_the_values_they_name(tmp_path):
    import difflib

    f = tmp_path / "params.yaml"
    before = (ROOT / "params.yaml").read_text()
    f.write_text(before)
    p = apply_overrides(f, list(OVERRIDES))
    assert p.finetune.steps == 7 and p.seeds == [0, 1] and p.init.pretrained_path == "weights/enc.pth"
    assert p.meta.settings.task_augment.shuffle_fraction == 0.5 and p.evaluate.protocol("office").crop == "eigen"
    assert load_params(f) == p
    old, new = before.splitlines(keepends=True), f.read_text().splitlines(keepends=True)
    changed = [line.rstrip("\n") for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, old, new, autojunk=False)
               .get_opcodes() if tag != "equal" for line in old[i1:i2]]
    allowed = {line.split("#")[0].rstrip() for line in OVERRIDES.values()}
    allowed |= {"      mixup_alpha: 0.4", "      channel_shuffle: true", "      shuffle_fraction: 0.25"}
    assert {line.split("#")[0].rstrip() for line in changed} == allowed
    text = f.read_text()
    assert text.count(": null") == before.count(": null") - 1  # untouched nulls stay `null`, never a blank
    assert "seeds: [0, 1] # training seeds" in text  # the style and the comment of a changed line stay
    assert "  per_dataset: {office: {crop: eigen}}   # dataset -> protocol overrides" in text
    apply_overrides(f, ["init.pretrained_path=null", "init.pretrained_path="])  # back to null, either spelling
    assert "  pretrained_path: null\n" in f.read_text() and load_params(f).init.pretrained_path is None


def test_paper_profile_changes_no_other_line(tmp_path):
    from tasks.params_file import profile_overrides

    f = tmp_path / "params.yaml"
    before = (ROOT / "params.yaml").read_text()
    f.write_text(before)
    overrides = profile_overrides(ROOT / "profiles" / "paper.yaml")
    apply_overrides(f, overrides)
    keys = {o.split("=")[0].split(".")[-1] for o in overrides}
    for old, new in zip(before.splitlines(), f.read_text().splitlines(), strict=True):
        if old != new:
            assert old.split(":")[0].strip() in keys, (old, new)
    assert before.count("\n") == f.read_text().count("\n")


def test_every_field_is_described_for_the_prefect_form():
    """The Prefect UI's Params form shows each field's description: none may be left blank."""
    from tasks.params import Params

    schema = Params.model_json_schema()
    sections = [("Params", schema), *schema["$defs"].items()]
    blank = [f"{name}.{key}" for name, section in sections for key, field in section.get("properties", {}).items()
             if not field.get("description") and "$ref" not in field]
    assert blank == []
    assert schema["$defs"]["FinetuneParams"]["properties"]["steps"]["description"] == "fine-tuning steps"


def test_a_variant_overrides_only_the_nested_keys_it_names():
    assert merged({"a": 1, "t": {"x": 1, "y": 2}}, {"t": {"y": 3}, "b": 4}) == {"a": 1, "t": {"x": 1, "y": 3}, "b": 4}
    raw = raw_params()
    raw["meta"]["variants"]["meta_nomix"] = {"inner_steps": 8, "task_augment": {"mixup": False}}
    meta = validate(raw).meta
    variant = meta.variant("meta_nomix")
    assert (variant.inner_steps, variant.task_augment.mixup) == (8, False)
    assert variant.task_augment.channel_shuffle == meta.settings.task_augment.channel_shuffle
    assert variant.inner_lr == meta.settings.inner_lr
