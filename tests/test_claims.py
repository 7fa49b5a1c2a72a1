"""The claims' verdict rule on hand-made per-seed numbers, and the headline that says each verdict in words."""

from __future__ import annotations

import pytest
from fake_metrics import write_metrics
from test_report_table import project  # noqa: F401  (the fixture)

from tasks.report import render
from tasks.report.claims import evaluate_claims, verdict
from tasks.report.stats import relative_change
from tasks.report.table import build_table, load_metrics

MODELS = ["ft_scratch", "ft_meta", "ft_sup", "meta", "sup"]


@pytest.mark.parametrize(("model", "baseline", "expected"), [
    ([0.90, 0.92, 0.91], [1.0, 1.0, 1.0], "supported"),  # -10, -8, -9 %: the interval lies below 0
    ([1.10, 1.12, 1.11], [1.0, 1.0, 1.0], "refuted"),  # +10, +12, +11 %: above 0
    ([0.90, 1.10, 1.00], [1.0, 1.0, 1.0], "inconclusive"),  # -10, +10, 0 %: includes 0
    ([0.50], [1.0], "inconclusive"),  # one seed: no interval, however large the change
    ([0.98, 0.99], [1.0, 1.0], "inconclusive"),  # -2, -1 %: t(1) = 12.7 makes the interval [-8.9, +5.9]
])
def test_verdict_rule(model, baseline, expected):
    assert verdict(relative_change(model, baseline)) == expected


def claims_of(root, params, zero_shot: dict[str, list[float]]):
    """Metrics where every model scores 1.0 on loft and `zero_shot[model]` per seed on studio."""
    n = len(params.seeds)
    write_metrics(root, {m: {"loft": [1.0] * n, "studio": zero_shot[m]} for m in zero_shot})
    table = build_table(params, load_metrics(params, root))
    return table, evaluate_claims(table, params.report.claims)


def test_claims_on_every_protocol_with_the_matching_rule_in_words(project):  # noqa: F811
    root, params = project(seeds=(0, 1, 2), models=MODELS)
    table, claims = claims_of(root, params, {
        "ft_scratch": [2.0, 2.0, 2.0], "ft_meta": [1.8, 1.84, 1.82], "ft_sup": [1.6, 1.64, 1.62],
        "meta": [2.0, 2.2, 1.8], "sup": [2.0, 2.0, 2.0]})
    got = {(c.name, c.protocol): c.verdict for c in claims}
    assert got == {(n, p): v for n, v in [("prior", "inconclusive"), ("finetune", "supported"),
                                          ("finetune_vs_longer", "refuted")] for p in ("metric", "median")}
    finetune = next(c for c in claims if c.name == "finetune")
    assert finetune.change.mean == pytest.approx(-9.0) and finetune.comparison == "ft_meta vs ft_scratch"
    md = render.markdown(render.context(params, table, claims), [])
    headline = md[md.index("## Verdicts"):md.index("Tables below")]
    for rule in ("same start, same data, same number of gradient steps and image presentations",
                 "same start and the same number of fine-tuning steps",
                 "the baseline also got the meta stage's budget as extra supervised steps"):
        assert rule in headline
    assert headline.count("**supported** (") == 2 and headline.count("**refuted** (") == 2
    assert headline.count("**inconclusive** (the 95% interval includes 0)") == 2
    assert "metric protocol: meta-init + fine-tune changes the zero-shot mean RMSE by -9.0 % [" in headline
    assert "**metric** (metric depth, no alignment" in md and "**median** (per-image median scaling" in md
    assert "paper's" not in md
    page = render.html(render.context(params, table, claims),
                       {f"rmse_bars_{p}": b"png" for p in table.protocols} | {"qualitative": b"png"})
    assert "finetune · metric protocol: supported" in page and "paper's" not in page


def test_a_claim_whose_models_were_not_evaluated_is_not_run(project):  # noqa: F811
    root, params = project(seeds=(0,), models=["ft_scratch", "ft_meta"])
    table, claims = claims_of(root, params, {"ft_scratch": [2.0], "ft_meta": [1.0]})
    got = {c.name: c for c in claims if c.protocol == "metric"}
    assert got["prior"].verdict == "not run" and "meta and sup not evaluated" in got["prior"].reason
    assert got["finetune_vs_longer"].reason.startswith("ft_sup not evaluated")
    assert got["finetune"].verdict == "inconclusive" and got["finetune"].change.mean == pytest.approx(-50.0)
    md = render.markdown(render.context(params, table, claims), [])
    assert "metric protocol: **not run** (meta and sup not evaluated; add to evaluate.models)" in md
    assert "**inconclusive** (one seed gives no interval" in md
