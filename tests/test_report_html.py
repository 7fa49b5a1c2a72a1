"""The report end to end: hand-made schema-2 metrics files, curve CSVs of both formats, real tiny checkpoints for
the qualitative grid, then every output (index.html, summary.md, metrics.json, metrics_detail.json, curves.csv) and
the DVC views of them (`dvc metrics show`, `dvc plots show` offline)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest
from fake_metrics import write_metrics
from tiny_project import ROOT

from tasks.initialize import run_init
from tasks.report import run_report

RMSE = {  # model -> dataset -> metric-protocol RMSE per training seed (seeds 0, 1)
    "ft_scratch": {"loft": [1.20, 1.30], "studio": [2.00, 2.40]},
    "ft_meta": {"loft": [1.10, 1.25], "studio": [1.80, 2.30]},
    "meta": {"loft": [2.00, 2.10], "studio": [2.60, 2.70]},
    "scratch": {"loft": [2.05, 2.15], "studio": [2.65, 2.75]},
    "constant": {"loft": [2.50, 2.50], "studio": [2.38, 2.38]},
}


@pytest.fixture(scope="module")
def project(tiny_project, single_thread):
    """Two training seeds. Only the qualitative grid needs weights: seed 0's scratch start stands in for both
    fine-tuned models (the grid draws predictions next to the ground truth, whatever the weights)."""
    root, params = tiny_project(upto="prepare", seeds=[0, 1],
                                evaluate={"batch_size": 4, "models": ["ft_scratch", "ft_meta", "meta"]})
    run_init(params, root, "scratch", seed=0)
    ckpt = root / "data/checkpoints/seed0"
    for name in ("ft_scratch", "ft_meta"):
        shutil.copy(ckpt / "scratch.pt", ckpt / f"{name}.pt")
    write_metrics(root, RMSE)
    for seed in params.seeds:
        curves = root / f"data/curves/seed{seed}"
        curves.mkdir(parents=True, exist_ok=True)
        # a CSV of before this round (no val_loss, no grad_norm) and two of the new format (val_loss on steps 0, 2)
        pd.DataFrame({"step": [0, 1, 2], "loss": [1.0, 0.8, 0.7], "lr": [5e-4] * 3}).to_csv(
            curves / "ft_scratch.csv", index=False)
        pd.DataFrame({"step": [0, 1, 2], "loss": [0.9, 0.7, 0.6], "lr": [5e-4] * 3, "grad_norm": [9.0, 5.0, 4.0],
                      "val_loss": [1.1, None, 0.8]}).to_csv(curves / "ft_meta.csv", index=False)
        pd.DataFrame({"step": [0, 1], "loss_first": [1.0, 0.9], "loss_last": [0.9, 0.8], "grad_norm": [12.0, 10.0],
                      "val_loss": [1.2, 1.0]}).to_csv(curves / "meta.csv", index=False)
    out = run_report(params, root)
    return root, params, out


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


def per_seed_change(model: str, baseline: str, column: str, seed: int) -> float:
    zs = {m: RMSE[m][column][seed] for m in (model, baseline)}
    return 100 * (zs[model] / zs[baseline] - 1)


def test_html_report(project):
    root, params, out = project
    reports = root / "reports"
    assert out["html"] == "reports/index.html"
    page = (reports / "index.html").read_text(encoding="utf-8")
    parsed = Collector()
    parsed.feed(page)
    text = " ".join(parsed.text)
    for protocol in ("metric", "median"):
        assert {f"cross-domain-{protocol}", f"relative-change-{protocol}", f"rmse-ci-{protocol}",
                f"protocol-{protocol}"} <= parsed.ids
    assert {"headline", "claims", "curves", "qualitative"} <= parsed.ids
    assert "script" not in parsed.tags and "link" not in parsed.tags  # no external CSS or JS
    images = [ref for tag, ref in parsed.refs if tag == "img"]
    assert len(images) == 4  # RMSE bars per protocol, curves, qualitative grid: embedded, so the page travels alone
    for img in images:
        assert img.startswith("data:image/png;base64,")
        assert base64.b64decode(img.split(",", 1)[1])[:4] == b"\x89PNG"
    for _tag, ref in parsed.refs:
        if not ref.startswith("data:"):
            assert "://" not in ref and not ref.startswith("/"), f"{ref}: pages must open from disk"
            assert (reports / ref).is_file(), f"{ref} is referenced but missing"
    # the tables carry the numbers of the metrics files (means over seeds) and the one relative change
    for per_ds in RMSE.values():
        for values in per_ds.values():
            assert f"{sum(values) / 2:.3f}" in text
            assert f"{sum(values) / 4:.3f}" in text  # the median protocol's table (half the RMSE by construction)
    change = (per_seed_change("ft_meta", "ft_scratch", "studio", 0) + per_seed_change("ft_meta", "ft_scratch",
                                                                                    "studio", 1)) / 2
    assert f"({change:+.1f}%)" in text
    assert "loft (train)" in text and "studio (zero-shot)" in text and "meta-init + fine-tune" in text
    assert "untrained random start" in text and "constant training-set median depth" in text
    assert "2 seeds: mean and 95% t-interval" in text and "n=1" not in text
    protocol = json.loads((root / "data/metrics/seed1/ft_meta__studio.json").read_text())["protocols"]["median"]
    assert protocol["protocol"]["aggregation"] in text and "max_depth" in text
    assert "finetune · metric protocol: inconclusive" in text and "prior · median protocol: not run" in text


def test_summary_and_metrics_keep_their_contract(project):
    root, params, out = project
    md = (root / "reports" / "summary.md").read_text()
    assert "loft (train)" in md and "meta-init + fine-tune" in md and "zero-shot mean" in md and "index.html" in md
    assert "(n=1)" not in md and "2 training seeds" in md
    assert md.index("## Verdicts") < md.index("## metric protocol") < md.index("## median protocol")
    for ref in ("figures/rmse_bars_metric.png", "figures/rmse_bars_median.png", "figures/loss_curves.png",
                "figures/qualitative.png"):
        assert f"]({ref})" in md and (root / "reports" / ref).read_bytes()[:4] == b"\x89PNG"
    # the Prefect artifact variant: no relative image paths, which break outside reports/
    assert "](figures/" not in out["markdown"] and "## Verdicts" in out["markdown"]
    assert [line for line in out["table"].splitlines() if line.startswith("| model")] == [
        "| model (metric protocol) | loft (train) | studio (zero-shot) | zero-shot mean |",
        "| model (median protocol) | loft (train) | studio (zero-shot) | zero-shot mean |"]
    assert all(isinstance(r["rmse"], float) for r in out["table_rows"])

    summary = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(summary) == {"n_seeds", "claims", "zero_shot", "in_domain"} and summary["n_seeds"] == 2
    claim = summary["claims"]["finetune"]["metric"]
    changes = [per_seed_change("ft_meta", "ft_scratch", "studio", s) for s in (0, 1)]
    assert claim["rmse_change_pct"] == pytest.approx(sum(changes) / 2, abs=1e-3)
    assert claim["n_seeds"] == 2 and claim["ci95"][0] < claim["rmse_change_pct"] < claim["ci95"][1]
    assert summary["claims"]["prior"]["metric"]["verdict"] == "not run"
    assert summary["zero_shot"]["constant"]["metric"]["rmse"] == pytest.approx(2.38)
    assert set(summary["in_domain"]) == {"ft_scratch"}  # the baseline's own domain, metric protocol: the headline
    assert summary["in_domain"]["ft_scratch"]["metric"]["rmse"] == pytest.approx(1.25)
    assert all(set(v) == {"rmse"} for m in summary["zero_shot"].values() for v in m.values())  # a few columns

    detail = json.loads((root / "reports" / "metrics_detail.json").read_text())
    assert detail["protocols"]["median"]["models"]["ft_scratch"]["columns"]["loft"]["rmse"]["mean"] == \
        pytest.approx(1.25 / 2)
    assert detail["claims"]["finetune"]["metric"]["comparison"] == "ft_meta vs ft_scratch"
    cells = detail["protocols"]["metric"]["models"]
    assert cells["ft_scratch"]["columns"]["studio"]["rmse_change_pct"] is None
    assert cells["ft_meta"]["columns"]["studio"]["rmse_change_pct"]["mean"] == pytest.approx(sum(changes) / 2,
                                                                                            abs=1e-3)
    assert set(cells["ft_meta"]["columns"]["loft"]) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1",
                                                         "a2", "a3"}
    assert cells["ft_meta"]["columns"]["studio"]["rmse_per_seed"] == RMSE["ft_meta"]["studio"]


def test_curves_csv_covers_every_seed_and_series(project):
    root, params, _ = project
    curves = pd.read_csv(root / "reports" / "curves.csv")
    assert list(curves.columns) == ["model", "seed", "step", "series", "value"]
    assert set(curves["seed"]) == {0, 1} and set(curves["model"]) == {"ft_scratch", "ft_meta", "meta"}
    series = curves.groupby("model")["series"].apply(set).to_dict()
    assert series["ft_scratch"] == {"loss", "lr"}  # the old format still reads
    assert series["ft_meta"] == {"loss", "lr", "grad_norm", "val_loss"}
    val = curves[(curves["model"] == "ft_meta") & (curves["series"] == "val_loss") & (curves["seed"] == 0)]
    assert list(val["step"]) == [0, 2]  # empty cells on non-validation steps are not points


def dvc(root, *args):
    return subprocess.run(["dvc", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def test_dvc_metrics_and_plots_views(project, tmp_path):
    """`dvc metrics show` gives a short readable row, and `dvc plots show` renders offline from the vendored page."""
    root, _, _ = project
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    for name in ("metrics.json", "curves.csv"):
        shutil.copy(root / "reports" / name, repo / "reports" / name)
    for rel in ("tasks/report/templates/dvc_curves.json", "tasks/report/vendor/dvc_plots.html"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, repo / rel)
    plots = (ROOT / "dvc.yaml").read_text().split("\nplots:", 1)[1]
    (repo / "dvc.yaml").write_text("metrics:\n  - reports/metrics.json\nplots:" + plots)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert data["claims"]["finetune"]["median"]["verdict"] == "inconclusive"
    table = dvc(repo, "metrics", "show")
    assert "claims.finetune.metric.rmse_change_pct" in table and "zero_shot.ft_meta.metric.rmse" in table
    dvc(repo, "plots", "show", "-o", "plots_out")
    page = (repo / "plots_out" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src" not in page  # Vega comes inline: renders offline
    assert "vegaEmbed(" in page and '"series"' in page and '"seed"' in page
    if shutil.which("node"):  # draw it as a browser would, from the page alone
        svg = json.loads(subprocess.run(["node", str(ROOT / "tests" / "render_vega.js"), "plots_out/index.html"],
                                        cwd=repo, check=True, capture_output=True, text=True).stdout)
        assert {"loss", "val_loss", "grad_norm", "loss_first", "ft_meta", "ft_scratch", "meta"} <= set(svg["texts"])
        assert svg["lines"] > 10
