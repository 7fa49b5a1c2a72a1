"""The report: intervals over seeds against hand-computed values, and the static HTML page on a tiny real project."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tiny_project import ROOT, tiny_params

from tasks.evaluate import run_evaluate
from tasks.finetune import run_finetune
from tasks.initialize import run_init
from tasks.io import MetadepthError
from tasks.meta_init import run_meta_init
from tasks.params import load_params
from tasks.preprocess.prepare import prepare
from tasks.report import (
    T95,
    html_report,
    mean_ci,
    mean_over_seeds,
    plot_rmse_bars,
    protocol_value,
    protocols,
    relative_change,
    run_report,
    seed_statistics,
    summarise,
    t_quantile,
    t_quantile_fallback,
)


@pytest.fixture(scope="module")
def tiny_params_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    tiny_params(root / "params.yaml", seeds=[0, 1])  # two training seeds: the report shows 95% intervals
    return root


@pytest.fixture(scope="module")
def project(tiny_params_file):
    """The tiny pipeline over two training seeds, stage by stage as tests/test_stages.py runs it, then the report."""
    root = tiny_params_file
    params = load_params(root / "params.yaml")
    for d in params.data.domains:
        prepare(params, root, d)
    for seed in params.seeds:
        run_init(params, root, "scratch", seed=seed)
        for variant in params.meta.variants:
            run_meta_init(params, root, variant, seed=seed)
        for name in params.finetune.inits:
            run_finetune(params, root, name, seed=seed)
        for m in params.evaluate.models:
            for d in params.data.domains:
                run_evaluate(params, root, m, d, seed=seed)
    out = run_report(params, root)
    return root, params, out


# --- statistics against hand-computed values -----------------------------------------------------------------------


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


def test_relative_change_is_paired_by_seed():
    # per-seed changes -10 % and -20 %: mean -15, s = 7.0711, se = 5, t(0.975, 1) = 12.706 -> +-63.53
    iv = relative_change([0.9, 0.8], [1.0, 1.0])
    assert iv.mean == pytest.approx(-15.0)
    assert (iv.low, iv.high) == (pytest.approx(-78.53, abs=0.01), pytest.approx(48.53, abs=0.01))
    assert iv.text("{:+.1f}", " %") == "-15.0 % [-78.5, +48.5] % (n=2)"
    with pytest.raises(MetadepthError, match="same seeds"):
        relative_change([0.9, 0.8], [1.0])


def test_t_quantiles():
    assert T95[0] == 12.706 and T95[9] == 2.228 and T95[29] == 2.042  # df 1, 10, 30 from any t table
    for df in (31, 40, 60, 120, 1000):
        assert t_quantile_fallback(df) == pytest.approx({31: 2.0395, 40: 2.0211, 60: 2.0003, 120: 1.9799,
                                                         1000: 1.9623}[df], abs=2e-4)
    for df in range(1, 80):
        assert t_quantile(df) == pytest.approx(t_quantile_fallback(df), abs=1e-3)  # scipy (if any) agrees


def fake_runs(params, rmse: dict[str, dict[str, list[float]]]) -> dict:
    protocol = {"min_depth": 0.001, "max_depth": 10.0, "crop": "none", "align": "none", "aggregation": "mean"}
    return {m: {d: [{"metrics": {"rmse": v, "abs_rel": v / 10, "a1": 1 - v / 10}, "n_images": 4,
                     "n_valid_pixels": 100, "protocol": protocol} for v in vals] for d, vals in per_ds.items()}
            for m, per_ds in rmse.items()}


def test_seed_statistics_by_hand(tiny_params_file):
    params = load_params(tiny_params_file / "params.yaml")  # domains loft (train), studio
    runs = fake_runs(params, {"ft_scratch": {"loft": [1.0, 1.0, 1.0], "studio": [2.0, 2.0, 4.0]},
                              "ft_meta": {"loft": [1.0, 0.9, 0.8], "studio": [1.0, 1.0, 3.0]}})
    stats = seed_statistics(params, runs)
    assert stats["ft_scratch"]["studio"]["change"] is None
    # studio per seed: -50 %, -50 %, -25 % -> mean -41.667, s = 14.434, se = 8.333, t(2) = 4.303 -> +-35.86
    change = stats["ft_meta"]["studio"]["change"]
    assert change.mean == pytest.approx(-41.667, abs=1e-3) and change.n == 3
    assert change.high - change.mean == pytest.approx(4.302653 * 14.433757 / math.sqrt(3), abs=1e-3)
    # one zero-shot domain: the zero-shot mean is that domain
    assert stats["ft_meta"]["zero_shot_mean"]["change"].mean == pytest.approx(change.mean)
    assert stats["ft_meta"]["zero_shot_mean"]["rmse"].mean == pytest.approx(5 / 3)
    # the headline table takes the mean over seeds
    summary = summarise(params, mean_over_seeds(runs))
    assert summary["models"]["ft_scratch"]["studio"]["rmse"] == pytest.approx(8 / 3, abs=1e-5)


def test_multi_seed_report_shows_intervals(tiny_params_file, tmp_path):
    params = load_params(tiny_params_file / "params.yaml")
    runs = fake_runs(params, {"ft_scratch": {"loft": [1.0, 1.1, 1.2], "studio": [2.0, 2.2, 2.4]},
                              "ft_meta": {"loft": [0.9, 1.0, 1.0], "studio": [1.6, 1.9, 2.0]}})
    stats = seed_statistics(params, runs)
    plot_rmse_bars(params, stats, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    page = html_report(params, summarise(params, mean_over_seeds(runs)), stats, runs,
                       {"bars": "b.png", "curves": "c.png", "qualitative": "q.png"})
    assert "n=3" in page and "95% CI [" in page and stats["ft_meta"]["studio"]["change"].text("{:+.1f}", " %") in page


def test_protocol_may_differ_by_dataset_but_not_by_model(tiny_params_file):
    params = load_params(tiny_params_file / "params.yaml")
    runs = fake_runs(params, {m: {"loft": [1.0], "studio": [2.0]} for m in ("ft_scratch", "ft_meta")})
    for model in runs:  # the Eigen crop on one dataset only, for every model: a valid protocol
        runs[model]["studio"][0]["protocol"] = {**runs[model]["studio"][0]["protocol"], "crop": "eigen"}
    protocol, differing = protocols(runs, "ft_scratch")
    assert differing == [] and protocol["max_depth"] == 10.0
    assert protocol_value(protocol["crop"]) == "loft: none, studio: eigen"
    runs["ft_meta"]["loft"][0]["protocol"] = {**runs["ft_meta"]["loft"][0]["protocol"], "max_depth": 80.0}
    assert protocols(runs, "ft_scratch")[1] == ["ft_meta__loft"]  # one model under other rules: named


# --- the page on a real tiny project -------------------------------------------------------------------------------


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.ids.add(a.get("id", ""))
        for key in ("src", "href"):
            if key in a:
                self.refs.append((tag, a[key]))

    def handle_data(self, data):
        self.text.append(data)


def test_html_report(project):
    root, params, out = project
    reports = root / "reports"
    assert out["html"] == "reports/index.html"
    page = (reports / "index.html").read_text(encoding="utf-8")
    parsed = Collector()
    parsed.feed(page)
    text = " ".join(parsed.text)
    assert {"cross-domain", "relative-change", "rmse-ci", "protocol"} <= parsed.ids
    assert "script" not in parsed.tags and "link" not in parsed.tags  # no external CSS or JS
    images = [ref for tag, ref in parsed.refs if tag == "img"]
    assert {"figures/rmse_bars.png", "figures/loss_curves.png", "figures/qualitative.png"} <= set(images)
    for _tag, ref in parsed.refs:
        assert "://" not in ref and not ref.startswith("/"), f"{ref}: pages must open from disk"
        assert (reports / ref).is_file(), f"{ref} is referenced but missing"
    for img in images:
        assert (reports / img).read_bytes()[:4] == b"\x89PNG"
    # the train x test matrix carries the numbers of the metrics files
    summary = json.loads((reports / "metrics.json").read_text())
    for model, row in summary["models"].items():
        for domain in params.data.domains:
            assert f"{row[domain]['rmse']:.3f}" in text
        assert f"({row['zero_shot_mean']['rmse_change_pct']:+.1f}%)" in text or model == params.report.baseline
    assert "loft (train)" in text and "studio (zero-shot)" in text and "meta-init + fine-tune" in text
    assert "2 seeds: mean and 95% t-interval" in text and "n=1" not in text
    protocol = json.loads((root / "data/metrics/seed1/ft_meta__studio.json").read_text())["protocol"]
    assert protocol["aggregation"] in text and "max_depth" in text


def test_summary_and_metrics_keep_their_contract(project):
    root, params, _ = project
    md = (root / "reports" / "summary.md").read_text()
    assert "loft (train)" in md and "meta-init + fine-tune" in md and "zero-shot mean" in md and "index.html" in md
    assert "(n=1)" not in md and "2 seeds" in md
    summary = json.loads((root / "reports" / "metrics.json").read_text())
    assert {"train_domain", "baseline", "models", "n_seeds", "rmse_change_ci95"} <= set(summary)
    assert summary["models"]["ft_scratch"]["studio"]["rmse_change_pct"] == 0.0
    assert summary["n_seeds"] == 2
    ci = summary["rmse_change_ci95"]["ft_meta"]["studio"]
    assert ci["n"] == 2 and ci["ci95_low"] < ci["mean"] < ci["ci95_high"]
    # the interval is over the per-seed paired changes of the two seeds' metrics files
    per_seed = [json.loads((root / f"data/metrics/seed{s}/{m}__studio.json").read_text())["metrics"]["rmse"]
                for m in ("ft_meta", "ft_scratch") for s in (0, 1)]
    changes = [100 * (per_seed[i] - per_seed[2 + i]) / per_seed[2 + i] for i in (0, 1)]
    assert ci["mean"] == pytest.approx(sum(changes) / 2, abs=1e-3)
    # the seeds really differ (their own initial weights and data order), or the interval would be empty
    assert per_seed[0] != per_seed[1]
