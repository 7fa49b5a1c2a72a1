"""The paper's claims as matched-budget comparisons: a relative change with its interval over seeds, and a verdict.

A claim compares two rows of the table on the zero-shot mean RMSE, per protocol, paired by seed (stats.relative_change,
the same definition as every table cell). The verdict only reads the interval, so one seed is always inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.params import ClaimParams
from tasks.report.stats import Interval, relative_change
from tasks.report.table import ZERO_SHOT, Table

# How each default claim keeps the comparison fair (contracts.md); a claim of another name states only its models.
RULES = {
    "prior": "same start, same data, same number of gradient steps and image presentations",
    "finetune": "same start and the same number of fine-tuning steps",
    "finetune_vs_longer": "the baseline also got the meta stage's budget as extra supervised steps",
}
# The paper's claim each default comparison tests (Wu et al., IROS 2024, abstract); finetune_vs_longer tests the
# second one against a baseline that trained as long in total.
QUOTES = {
    "prior": "on limited data [meta-learning] induces a much better prior (max 27.8% in RMSE)",
    "finetune": "finetuning on meta-learned initialization consistently outperforms baselines without the meta "
                "approach",
}
QUOTES["finetune_vs_longer"] = QUOTES["finetune"]
VERDICT_TEXT = {
    "supported": "the whole 95% interval lies below 0: lower zero-shot RMSE than the baseline",
    "refuted": "the whole 95% interval lies above 0: higher zero-shot RMSE than the baseline",
    "inconclusive": "the 95% interval includes 0",
}


@dataclass(frozen=True)
class Claim:
    name: str
    model: str
    baseline: str
    protocol: str
    change: Interval | None  # None: not run
    verdict: str  # supported | refuted | inconclusive | not run
    reason: str = ""  # why it was not run

    @property
    def comparison(self) -> str:
        return f"{self.model} vs {self.baseline}"

    @property
    def rule(self) -> str:
        return RULES.get(self.name, "")

    @property
    def quote(self) -> str:
        return QUOTES.get(self.name, "")

    @property
    def verdict_text(self) -> str:
        """Why the verdict is what it is, in words."""
        if self.change is None:
            return self.reason
        if self.change.n == 1:
            return "one seed gives no interval; run more `seeds`"
        return VERDICT_TEXT[self.verdict]


def verdict(change: Interval) -> str:
    """`supported` when the 95% interval lies wholly below 0, `refuted` when wholly above, else `inconclusive`."""
    if change.low is None or change.high is None:
        return "inconclusive"
    if change.high < 0:
        return "supported"
    if change.low > 0:
        return "refuted"
    return "inconclusive"


def evaluate_claims(table: Table, config: dict[str, ClaimParams]) -> list[Claim]:
    """Every configured claim on every protocol of the table, in (claim, protocol) order."""
    out = []
    for name, c in config.items():
        for protocol, pt in table.protocols.items():
            rows = {m: pt.row(m) for m in (c.model, c.baseline)}
            missing = [m for m, row in rows.items() if row is None]
            reason = (f"{' and '.join(missing)} not evaluated; add to evaluate.models" if missing
                      else "" if table.held_out else "no held-out domain (domains has only train_domain)")
            if reason:
                out.append(Claim(name, c.model, c.baseline, protocol, None, "not run", reason))
                continue
            model, base = rows[c.model], rows[c.baseline]
            change = relative_change(model.cells[ZERO_SHOT].rmse_seeds, base.cells[ZERO_SHOT].rmse_seeds)
            out.append(Claim(name, c.model, c.baseline, protocol, change, verdict(change)))
    return out
