"""The report's table model, statistics and machine-readable outputs, on hand-made schema-2 metrics files."""

from __future__ import annotations

import json
import math

import pytest
from fake_metrics import metrics_file, write_metrics
from tiny_project import ROOT, tiny_params

from tasks.io import MetadepthError
from tasks.params import load_params
from tasks.report import render
from tasks.report.claims import evaluate_claims
from tasks.report.stats import mean_ci, relative_change, t_quantile
from tasks.report.table import ZERO_SHOT, build_table, load_metrics

MODELS = ["ft_scratch", "ft_meta", "meta"]


@pytest.fixture
def project(tmp_path):
    """A params.yaml of the tiny project (domains loft = train, studio), with `seeds` and models to order."""
    def make(seeds=(0, 1), domains=("loft", "studio"), models=MODELS):
        (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        tiny_params(tmp_path / "params.yaml", seeds=list(seeds),
                    domains=list(domains),
                    evaluate={"batch_size": 4, "models": MODELS})
        params = load_params(tmp_path / "params.yaml")
        # models such as sup / ft_sup come from stages this test does not run: set them past the stage checks
        return tmp_path, params.model_copy(update={"evaluate": params.evaluate.model_copy(
            update={"models": list(models)})})
    return make


def table_of(root, params, rmse, **kw):
    write_metrics(root, rmse, **kw)
    return build_table(params, load_metrics(params, root))


def test_mean_ci_by_hand():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.290994, se = s / 2 = 0.645497, t(0.975, 3) = 3.182446
    iv = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert iv.mean == 2.5 and iv.n == 4
    assert iv.low == pytest.approx(2.5 - 3.182446 * 0.645497, abs=1e-3)
    assert iv.high == pytest.approx(4.554, abs=1e-3)
    single = mean_ci([0.7])
    assert (single.mean, single.low, single.high, single.n) == (0.7, None, None, 1)
    assert single.text() == "0.700 (n=1)"
    assert mean_ci([2.0, 2.0]).low == mean_ci([2.0, 2.0]).high == 2.0  # no spread, no width


def test_t_quantiles_from_any_t_table():
    for df, t in {1: 12.706, 2: 4.303, 10: 2.228, 30: 2.042, 120: 1.980}.items():
        assert t_quantile(df) == pytest.approx(t, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_relative_change_is_paired_by_seed():
    # per-seed changes -10 % and -20 %: mean -15, s = 7.0711, se = 5, t(0.975, 1) = 12.706 -> +-63.53
    iv = relative_change([0.9, 0.8], [1.0, 1.0])
    assert iv.mean == pytest.approx(-15.0)
    assert (iv.low, iv.high) == (pytest.approx(-78.53, abs=0.01), pytest.approx(48.53, abs=0.01))
    assert iv.text("{:+.1f}", " %") == "-15.0 % [-78.5, +48.5] % (n=2)"
    with pytest.raises(MetadepthError, match="same seeds"):
        relative_change([0.9, 0.8], [1.0])


def test_one_relative_change_everywhere(project):
    """Baseline RMSE [1, 2] vs model [2, 2]: per-seed changes +100 % and 0 %, so +50 % in every place. The old
    report printed +33 % (the change of the seed means) in the main table and +50 % in the interval table."""
    root, params = project()
    table = table_of(root, params, {"ft_scratch": {"loft": [1, 1], "studio": [1, 2]},
                                    "ft_meta": {"loft": [1, 1], "studio": [2, 2]},
                                    "meta": {"loft": [3, 3], "studio": [3, 3]}})
    cell = table.protocols["metric"].row("ft_meta").cells["studio"]
    assert cell.change.mean == pytest.approx(50.0)
    ctx = render.context(params, table, evaluate_claims(table, params.report.claims))
    md = render.markdown(ctx, [])
    page = render.html(ctx, {f"rmse_bars_{p}": b"png" for p in table.protocols} | {"qualitative": b"png"})
    for text in (md, page, render.markdown_tables(ctx)):
        assert "+50.0%" in text and "+33.3" not in text
    assert "+50.0 % [" in md and "+50.0 % [" in page  # the interval texts agree with the cells
    row = next(r for r in render.table_rows(table) if r["model"] == "ft_meta" and r["column"] == "studio (zero-shot)")
    assert row["rmse_change_pct"] == 50.0
    detail = render.detail_metrics(table, [])
    assert detail["protocols"]["metric"]["models"]["ft_meta"]["columns"]["studio"]["rmse_change_pct"]["mean"] == 50.0


def test_table_by_hand(project):
    root, params = project(seeds=(0, 1, 2), domains=("loft", "studio", "office"))
    table = table_of(root, params, {
        "ft_scratch": {"loft": [1.0, 1.0, 1.0], "studio": [2.0, 2.0, 4.0], "office": [2.0, 2.0, 2.0]},
        "ft_meta": {"loft": [1.0, 0.9, 0.8], "studio": [1.0, 1.0, 3.0], "office": [2.0, 2.0, 2.0]},
        "meta": {"loft": [3.0] * 3, "studio": [3.0] * 3, "office": [3.0] * 3}}, median_factor=0.5)
    assert list(table.protocols) == ["metric", "median"] and table.columns == ["loft", "studio", "office", ZERO_SHOT]
    assert table.held_out == ["studio", "office"] and table.n_seeds == 3
    pt = table.protocols["metric"]
    assert pt.row("ft_scratch").cells["studio"].change is None
    # studio per seed: -50 %, -50 %, -25 % -> mean -41.667, s = 14.434, se = 8.333, t(2) = 4.303 -> +-35.86
    change = pt.row("ft_meta").cells["studio"].change
    assert change.mean == pytest.approx(-41.667, abs=1e-3) and change.n == 3
    assert change.high - change.mean == pytest.approx(4.302653 * 14.433757 / math.sqrt(3), abs=1e-3)
    # zero-shot mean per seed: baseline 2, 2, 3; ft_meta 1.5, 1.5, 2.5 -> -25 %, -25 %, -16.67 %
    zs = pt.row("ft_meta").cells[ZERO_SHOT]
    assert zs.rmse_seeds == pytest.approx((1.5, 1.5, 2.5))
    assert zs.metrics["rmse"].mean == pytest.approx(11 / 6)
    assert zs.change.mean == pytest.approx((-25 - 25 - 100 / 6) / 3)
    assert zs.metrics["a1"].mean == pytest.approx(1 - 11 / 60)
    # the median protocol is its own table: half the RMSE, the same relative change
    assert table.protocols["median"].row("ft_meta").cells[ZERO_SHOT].metrics["rmse"].mean == pytest.approx(11 / 12)
    assert table.protocols["median"].description.startswith("per-image median scaling")
    assert "paper" not in table.protocols["metric"].description + table.protocols["median"].description


def test_sanity_rows_come_last_and_are_optional(project):
    root, params = project()
    rmse = {m: {"loft": [1.0, 1.0], "studio": [2.0, 2.0]} for m in MODELS}
    table = table_of(root, params, rmse)
    assert [r.model for r in table.protocols["metric"].rows] == MODELS  # no sanity files: no sanity rows
    write_metrics(root, {"constant": {"loft": [2.5, 2.5], "studio": [2.5, 2.5]},
                         "scratch": {"loft": [3.0, 3.0], "studio": [3.0, 3.0]}})
    rows = build_table(params, load_metrics(params, root)).protocols["metric"].rows
    assert [r.model for r in rows] == [*MODELS, "scratch", "constant"]
    assert [r.sanity for r in rows] == [False] * 3 + [True] * 2
    assert "untrained" in rows[3].label and "median depth" in rows[4].label
    assert rows[4].cells[ZERO_SHOT].change.mean == pytest.approx(25.0)


def test_missing_and_old_metrics_files_are_named(project):
    root, params = project()
    write_metrics(root, {m: {"loft": [1.0, 1.0], "studio": [2.0, 2.0]} for m in MODELS[:2]})
    with pytest.raises(MetadepthError, match=r"meta__loft.json: metrics file missing; run the evaluate stage"):
        load_metrics(params, root)
    write_metrics(root, {"meta": {"loft": [1.0, 1.0], "studio": [2.0, 2.0]}})
    old = root / "data/metrics/seed1/meta__studio.json"
    old.write_text(json.dumps({"model": "meta", "dataset": "studio", "metrics": {"rmse": 1.0}}))
    with pytest.raises(MetadepthError, match=r"meta__studio.json: metrics schema 1.*re-run the evaluate stage"):
        load_metrics(params, root)


def test_protocol_may_differ_by_dataset_but_not_by_model(project):
    root, params = project(seeds=(0,))
    write_metrics(root, {m: {"loft": [1.0], "studio": [2.0]} for m in MODELS})
    for m in MODELS:  # the Eigen crop on one dataset only, for every model: a valid protocol
        f = root / f"data/metrics/seed0/{m}__studio.json"
        record = json.loads(f.read_text())
        record["protocols"]["metric"]["protocol"]["crop"] = "eigen"
        f.write_text(json.dumps(record))
    pt = build_table(params, load_metrics(params, root)).protocols["metric"]
    assert pt.differing == [] and pt.protocol["max_depth"] == 10.0
    assert render.protocol_value(pt.protocol["crop"]) == "loft: none, studio: eigen"
    f = root / "data/metrics/seed0/ft_meta__loft.json"
    record = metrics_file("ft_meta", "loft", 0, {"metric": 1.0, "median": 0.5})
    record["protocols"]["metric"]["protocol"]["max_depth"] = 80.0
    f.write_text(json.dumps(record))
    assert build_table(params, load_metrics(params, root)).protocols["metric"].differing == ["ft_meta__loft"]


def test_headline_metrics_follow_the_contract(project):
    root, params = project(seeds=(0, 1, 2))
    table = table_of(root, params, {"ft_scratch": {"loft": [1.0, 1.1, 1.2], "studio": [2.0, 2.2, 2.4]},
                                    "ft_meta": {"loft": [0.9, 1.0, 1.0], "studio": [1.6, 1.9, 2.0]},
                                    "meta": {"loft": [3.0] * 3, "studio": [3.0] * 3}})
    out = render.headline_metrics(table, evaluate_claims(table, params.report.claims))
    assert set(out) == {"n_seeds", "claims", "zero_shot", "in_domain"} and out["n_seeds"] == 3
    assert set(out["claims"]) == {"prior", "finetune", "finetune_vs_longer"}
    claim = out["claims"]["finetune"]["metric"]
    assert set(claim) == {"rmse_change_pct", "ci95", "n_seeds", "verdict"}  # numbers and the verdict only
    assert claim["n_seeds"] == 3
    assert claim["rmse_change_pct"] == pytest.approx(100 * ((1.6 / 2 + 1.9 / 2.2 + 2.0 / 2.4) / 3 - 1), abs=1e-3)
    assert out["claims"]["prior"]["median"] == {"rmse_change_pct": None, "ci95": None, "n_seeds": 0,
                                                "verdict": "not run"}
    detail = render.detail_metrics(table, evaluate_claims(table, params.report.claims))
    assert detail["claims"]["finetune"]["metric"]["comparison"] == "ft_meta vs ft_scratch"
    zs = 5.5 / 3 / 2  # the seed-mean of studio's median-protocol RMSE, rounded to 5 digits in the file
    assert out["zero_shot"]["ft_meta"]["median"] == pytest.approx({"rmse": zs}, abs=1e-5)
    median = detail["protocols"]["median"]["models"]["ft_meta"]["columns"]["zero_shot_mean"]
    assert (median["abs_rel"]["mean"], median["a1"]["mean"]) == pytest.approx((zs / 10, 1 - zs / 10), abs=1e-5)
    assert out["in_domain"] == {"ft_scratch": {"metric": pytest.approx({"rmse": 1.1, "abs_rel": 0.11, "a1": 0.89},
                                                                       abs=1e-5)}}
    rows = render.table_rows(table)
    assert len(rows) == 2 * 3 * 3  # protocol x model x column
    for row in rows:  # numbers, not "1.384 / 0.274 / 0.620" strings (the Prefect table artifact)
        assert all(isinstance(row[k], float) for k in ("rmse", "abs_rel", "a1"))


def test_one_held_out_domain_less_is_fine(project):
    """Only the training domain: no zero-shot column, and the claims say why they were not run."""
    root, params = project(seeds=(0,), domains=("loft",))
    table = table_of(root, params, {m: {"loft": [1.0]} for m in MODELS})
    assert table.columns == ["loft"]
    claims = evaluate_claims(table, params.report.claims)
    assert all(c.verdict == "not run" for c in claims)
    assert render.headline_metrics(table, claims)["zero_shot"] == {}
    assert "no held-out domain" in render.markdown(render.context(params, table, claims), [])
