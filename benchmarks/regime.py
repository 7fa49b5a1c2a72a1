"""Issue 17 item 1: find a training regime in which the depth network learns image-dependent depth.

Every run here uses the pipeline's own pieces: frames from tasks.preprocess.synthetic (the seeds prepare uses, the
same validity rule as the shards), models.network.DepthNet, the training loss of tasks.training.loss_fn_for, the
online augmentation and batch stream of the finetune stage, and models.metrics.depth_metrics on the test split.
Data stays in memory (cached under /tmp), so one run is a fine-tune plus an evaluation, nothing else.

Cost: the candidate's Adam step is timed against the reference step (convnext_atto, 48x64, batch 8, the default
decoder) in the same process, interleaved, so the ratio survives a loaded machine; absolute times mean nothing here.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.regime run --name NAME [--encoder E --steps M --lr LR ...]
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.regime clip --name NAME [same options] --outer-steps K
    .venv/bin/python -m benchmarks.regime table          # markdown table of every result JSON
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.regime cost   # step cost of encoder_levels / channels_last
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.regime errors [run options]   # where the AbsRel comes from
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models.losses as losses_module
from models.augment import make_task_augment
from models.losses import depth_loss
from models.metrics import depth_metrics
from models.network import DepthNet
from models.reptile import Reptile
from tasks.distributed import batches_at, stream_seed, task_generator
from tasks.params import load_params
from tasks.preprocess import synthetic
from tasks.preprocess.prepare import split_seed
from tasks.training import augment_fn, loss_fn_for, seed_everything

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "regime"
CACHE = Path("/tmp/regime-cache")
DOMAINS = ("loft", "apartment", "studio", "office")
_PIPELINE = load_params(ROOT / "params.yaml")
VALID_M = (_PIPELINE.data.min_depth, _PIPELINE.data.max_depth)  # prepare's validity rule: other depths become 0
CAPS_M = (_PIPELINE.evaluate.min_depth, _PIPELINE.evaluate.max_depth)  # the evaluate stage's caps
REFERENCE = {"encoder": "convnext_atto", "decoder": [16, 32, 64, 128, 256], "height": 48, "width": 64, "batch": 8}


@dataclasses.dataclass
class Config:
    name: str
    encoder: str = "convnext_atto"
    decoder: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64, 128, 256])
    height: int = 48
    width: int = 64
    batch: int = 8
    lr: float = 5e-4
    lr_min: float = 1e-6
    steps: int = 300
    train_size: int = 768
    test_size: int = 128
    clip: float = 1.0
    smooth: str = "edge"  # edge: today's loss_fn_for (image given); plain: the paper's term
    data_term: str = "mse"  # mse: the paper's metric MSE; logmse: MSE of log depth (a probe, not the paper's)
    calib: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # domain -> DomainSpec fields
    encoder_levels: int = 0  # timm feature levels kept (0: all); 4 on resnet10t drops the stride-32 stage
    scales: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3])  # supervised decoder scales
    head: str = "sigmoid"  # sigmoid: the network's bounded linear-in-depth map; linear: a probe (see HEADS)
    augment: bool = True  # the finetune stage's online augmentation (finetune.settings.online_augment)
    seed: int = 0  # training seed (the data seed stays params.data.seed = 0)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def calibrate(calib: dict[str, dict[str, Any]]) -> None:
    """Replace DomainSpec fields (lists become tuples): how the best calibration would be written in synthetic.py."""
    for domain, fields in calib.items():
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        synthetic.DOMAINS[domain] = dataclasses.replace(ORIGINAL[domain], **fields)


ORIGINAL = dict(synthetic.DOMAINS)
ORIGINAL_MSE = losses_module.masked_mse


def frames(domain: str, split: str, n: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """rgb (N,3,H,W) float [0,1] and depth (N,1,H,W) with prepare's validity rule (outside VALID_M -> 0)."""
    spec = dataclasses.asdict(synthetic.DOMAINS[domain])
    key = hashlib.sha256(json.dumps([domain, split, n, height, width, spec, VALID_M], default=str).encode()
                         ).hexdigest()[:16]
    path = CACHE / f"{domain}-{split}-{n}-{height}x{width}-{key}.npz"
    if not path.exists():
        batches = list(synthetic.generate(domain, n, split_seed(0, split), height, width, batch_size=64))
        rgb = np.concatenate([b["rgb"] for b in batches])
        d = np.concatenate([b["depth"] for b in batches]).astype(np.float32)
        # the rule of tasks/preprocess/shards.py's write_split, written out (editing shards.py would stale dvc.lock)
        d = np.where(np.isfinite(d) & (d >= VALID_M[0]) & (d <= VALID_M[1]), d, 0.0).astype(np.float32)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, rgb=rgb, depth=d)
    z = np.load(path)
    return {"rgb": torch.from_numpy(z["rgb"]).permute(0, 3, 1, 2).float().div_(255.0),
            "depth": torch.from_numpy(z["depth"]).unsqueeze(1)}


class Frames(torch.utils.data.Dataset):
    def __init__(self, data: dict[str, torch.Tensor]):
        self.data = data

    def __len__(self) -> int:
        return len(self.data["rgb"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"rgb": self.data["rgb"][i], "depth": self.data["depth"][i], "index": torch.tensor(i)}


# ---------------------------------------------------------------------------------------------------------------
# Model, training, evaluation
# ---------------------------------------------------------------------------------------------------------------


ORIGINAL_TO_DEPTH = DepthNet.to_depth


def _linear_to_depth(self: DepthNet, logits: torch.Tensor) -> torch.Tensor:
    # A probe: depth linear in the logit over the whole range (mid-range start, slope (max-min)/4 like the sigmoid
    # at 0), softly bounded below so near pixels get the same gradient as far ones instead of sigmoid's 2-6x less.
    mid, half = (self.max_depth + self.min_depth) / 2, (self.max_depth - self.min_depth) / 4
    return self.min_depth + torch.nn.functional.softplus(mid - self.min_depth + half * logits, beta=4.0)


HEADS = {"sigmoid": ORIGINAL_TO_DEPTH, "linear": _linear_to_depth}


def build(encoder: str, decoder: list[int], seed: int, levels: int = 0, scales: list[int] | None = None,
          head: str = "sigmoid") -> DepthNet:
    seed_everything(seed)  # as the init stage: the scratch weights follow the training seed
    DepthNet.to_depth = HEADS[head]  # looked up at call time: swapping it swaps every model's output map here
    return DepthNet(encoder=encoder, decoder_channels=tuple(decoder), encoder_levels=levels or None,
                    scales=tuple(scales or (0, 1, 2, 3)))


def _log_masked_mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = torch.nn.functional.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    valid = gt > 0
    diff = torch.log(pred) - torch.log(gt.clamp_min(1e-3))
    return (diff**2 * valid).sum() / valid.sum().clamp_min(1)


def loss_fn(cfg: Config):
    params = load_params(ROOT / "params.yaml")
    # depth_loss_terms looks masked_mse up at call time: swapping it swaps the data term of every loss here.
    losses_module.masked_mse = _log_masked_mse if cfg.data_term == "logmse" else ORIGINAL_MSE
    if cfg.smooth == "edge":  # the monodepth2-style option (what the pipeline used when these runs were made)
        return loss_fn_for(params.loss.model_copy(update={"smoothness": "edge_aware"}))
    return loss_fn_for(params.loss.model_copy(update={"smoothness": "plain"}))  # the paper's term, the default


def finetune(model: DepthNet, train: dict[str, torch.Tensor], cfg: Config, steps: int) -> list[float]:
    """The finetune stage's loop: Adam + cosine, norm clip, online augmentation reseeded per step, the same stream."""
    params = load_params(ROOT / "params.yaml")
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.lr_min)
    augment, lossf = augment_fn(params.augment), loss_fn(cfg)
    g = torch.Generator()
    batches = batches_at(Frames(train), cfg.batch, cfg.seed, itertools.count(0))
    losses = []
    for step in range(steps):
        batch = next(batches)
        if cfg.augment:
            batch = augment(batch, g.manual_seed(stream_seed(cfg.seed, step, 0)))
        loss = lossf(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def predict(model: DepthNet, rgb: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(rgb[i:i + 32])[0] for i in range(0, len(rgb), 32)])


def scores(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, Any]:
    """Both protocols of the evaluate stage (its caps, no crop), plus how image-dependent pred is."""
    out = {}
    for align in (None, "median"):
        m = depth_metrics(pred, gt, min_depth=CAPS_M[0], max_depth=CAPS_M[1], align=align)
        out[align or "none"] = {k: round(m[k], 4) for k in ("a1", "abs_rel", "rmse")}
    valid = gt > 0
    # Spread of the prediction across images relative to the gt's spread, per pixel: ~0 for one bowl for all.
    out["spread_ratio"] = round(float(pred.std(0)[valid.all(0)].mean() / gt.std(0)[valid.all(0)].mean()), 3) \
        if valid.all(0).any() else None
    return out


def evaluate(model: DepthNet, tests: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    return {d: scores(predict(model, t["rgb"]), t["depth"]) for d, t in tests.items()}


def guesses(train: dict[str, torch.Tensor], tests: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Sanity rows: the train median depth everywhere, and the per-pixel mean train depth map (the 'bowl')."""
    d = train["depth"]
    median = float(d[d > 0].median())
    bowl = (d.sum(0) / (d > 0).sum(0).clamp_min(1)).clamp_min(0.1)
    out = {}
    for name, t in tests.items():
        n = len(t["depth"])
        out[name] = {"constant": scores(torch.full_like(t["depth"], median), t["depth"])["none"],
                     "bowl": scores(bowl.expand(n, -1, -1, -1).clone(), t["depth"])}
    return out


def _stepper(lossf, encoder: str, decoder: list[int], h: int, w: int, b: int, levels: int = 0,
             channels_last: bool = False, scales: list[int] | None = None):
    model = build(encoder, decoder, 0, levels, scales).train()
    batch = {"rgb": torch.rand(b, 3, h, w), "depth": torch.rand(b, 1, h, w) * 9 + 0.5}
    if channels_last:  # as the training stages apply runtime.numerics.channels_last
        model = model.to(memory_format=torch.channels_last)
        batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = lossf(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def _interleaved(steppers: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median seconds per step of each stepper, timed in alternating rounds of 3 steps in this process."""
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for s in steppers.values():
        s()
    for _ in range(rounds):
        for key, s in steppers.items():
            t = time.perf_counter()
            for _ in range(3):
                s()
            times[key].append((time.perf_counter() - t) / 3)
    return {k: statistics.median(v) for k, v in times.items()}


def step_ratio(cfg: Config, rounds: int = 5) -> float:
    """Candidate step time / reference step time, interleaved in this process (only the ratio means anything)."""
    lossf = loss_fn(cfg)
    t = _interleaved({"ref": _stepper(lossf, REFERENCE["encoder"], REFERENCE["decoder"], REFERENCE["height"],
                                      REFERENCE["width"], REFERENCE["batch"]),
                      "cand": _stepper(lossf, cfg.encoder, cfg.decoder, cfg.height, cfg.width, cfg.batch,
                                       cfg.encoder_levels, scales=cfg.scales)}, rounds)
    return round(t["cand"] / t["ref"], 3)


def cost(rounds: int) -> None:
    """The step cost of the defaults' shape choices over resnet10t with all levels (48x64, batch 8, 1 thread)."""
    torch.set_num_threads(1)
    lossf = loss_fn(Config("cost", smooth="plain"))
    full, l4 = ("resnet10t", [16, 32, 64, 128, 256], 48, 64, 8), ("resnet10t", [16, 32, 64, 128], 48, 64, 8)
    t = _interleaved({"all levels": _stepper(lossf, *full),
                      "all levels, channels_last": _stepper(lossf, *full, channels_last=True),
                      "4 levels": _stepper(lossf, *l4, levels=4),
                      "4 levels, channels_last": _stepper(lossf, *l4, levels=4, channels_last=True)}, rounds)
    base = t["all levels"]
    print(json.dumps({"seconds_all_levels": round(base, 4), "rounds": rounds,
                      "ratio": {k: round(v / base, 3) for k, v in t.items()}}))


def load_data(cfg: Config) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    calibrate(cfg.calib)
    train = frames("loft", "train", cfg.train_size, cfg.height, cfg.width)
    tests = {d: frames(d, "test", cfg.test_size, cfg.height, cfg.width) for d in DOMAINS}
    return train, tests


def summary(ev: dict[str, Any]) -> dict[str, Any]:
    zs = [d for d in DOMAINS if d != "loft"]
    return {"in_a1": ev["loft"]["none"]["a1"], "in_abs_rel": ev["loft"]["none"]["abs_rel"],
            "in_rmse": ev["loft"]["none"]["rmse"], "in_med_a1": ev["loft"]["median"]["a1"],
            "zs_med_a1": {d: ev[d]["median"]["a1"] for d in zs}, "zs_none_a1": {d: ev[d]["none"]["a1"] for d in zs},
            "spread_ratio": ev["loft"]["spread_ratio"]}


def save(name: str, record: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({"name": name, **record.get("summary", {}), "step_ratio": record.get("step_ratio")}))


def run(cfg: Config) -> None:
    torch.set_num_threads(1)
    ratio = step_ratio(cfg)
    train, tests = load_data(cfg)
    model = build(cfg.encoder, cfg.decoder, cfg.seed, cfg.encoder_levels, cfg.scales, cfg.head)
    t = time.perf_counter()
    losses = finetune(model, train, cfg, cfg.steps)
    train_s = time.perf_counter() - t
    ev = evaluate(model, tests)
    save(cfg.name, {"kind": "finetune", "config": dataclasses.asdict(cfg), "step_ratio": ratio,
                    "ref_steps": round(ratio * cfg.steps, 1), "train_s": round(train_s, 1),
                    "final_loss": round(statistics.mean(losses[-20:]), 4), "summary": summary(ev), "eval": ev,
                    "guesses": guesses(train, tests)})


# ---------------------------------------------------------------------------------------------------------------
# Reptile inner clipping (issue 17 item 5)
# ---------------------------------------------------------------------------------------------------------------


class ClippedReptile(Reptile):
    """Reptile whose inner step clips by norm, by value or not at all, and records the pre-clip gradient norm."""

    def __init__(self, *args: Any, clip_mode: str, clip_value: float = 1.0, **kwargs: Any):
        super().__init__(*args, clip_grad_norm=None, **kwargs)
        self.clip_mode, self.clip_value, self.grad_norms = clip_mode, clip_value, []

    def _inner_update(self, loss: torch.Tensor) -> None:
        self.inner_model.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.inner_params if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))))
        if self.clip_mode == "norm":
            torch.nn.utils.clip_grad_norm_(self.inner_params, self.clip_value)
        elif self.clip_mode == "value":
            torch.nn.utils.clip_grad_value_(self.inner_params, self.clip_value)
        with torch.no_grad():
            params = [p for p in self.inner_params if p.grad is not None]
            torch._foreach_add_(params, [p.grad for p in params], alpha=-self.inner_lr)


def meta_train(model: DepthNet, train: dict[str, torch.Tensor], cfg: Config, outer_steps: int,
               clip_mode: str) -> dict[str, Any]:
    """The meta_init stage's wiring (params.yaml meta values), one task per step plus its partner."""
    params = load_params(ROOT / "params.yaml")
    mp = params.meta.settings
    augment = augment_fn(params.augment)
    shared = make_task_augment(mix_alpha=mp.task_augment.mixup_alpha, shuffle_p=mp.task_augment.shuffle_fraction,
                               criterion=lambda preds, gt: depth_loss(preds, gt, params.loss.smooth_weight,
                                                                      params.loss.scale_decay))
    reptile = ClippedReptile(
        model, loss_fn(cfg), inner_lr=mp.inner_lr, inner_steps=mp.inner_steps, outer_lr=mp.outer_lr,
        inner_augment=lambda batch, _g: augment(batch, batch["generator"]),
        task_augment=lambda m, batch, partner, _g: shared(m, batch, partner, batch["generator"]),
        generator=torch.Generator().manual_seed(cfg.seed), clip_mode=clip_mode)
    start = [p.detach().clone() for p in reptile.meta_params]
    batches = batches_at(Frames(train), mp.batch_size, cfg.seed, itertools.count(0))
    for step in range(outer_steps):
        task = next(batches)
        task["generator"] = task_generator(cfg.seed, step)
        reptile.meta_step([task], [next(batches)])
    moved = torch.linalg.vector_norm(torch.stack([(p - s).norm() for p, s in zip(reptile.meta_params, start,
                                                                                   strict=True)]))
    norms = reptile.grad_norms
    return {"moved_l2": round(float(moved), 4), "grad_norm_first": round(norms[0], 3),
            "grad_norm_median": round(statistics.median(norms), 3), "grad_norm_last": round(norms[-1], 3),
            "gradient_steps": len(norms)}


def clip_study(cfg: Config, outer_steps: int, modes: list[str], ft_steps: int) -> None:
    torch.set_num_threads(1)
    train, tests = load_data(cfg)
    for mode in modes:
        model = build(cfg.encoder, cfg.decoder, cfg.seed, cfg.encoder_levels, cfg.scales, cfg.head)
        t = time.perf_counter()
        record: dict[str, Any] = {"kind": "clip", "config": dataclasses.asdict(cfg), "clip_mode": mode,
                                  "outer_steps": outer_steps, **meta_train(model, train, cfg, outer_steps, mode)}
        record["meta_s"] = round(time.perf_counter() - t, 1)
        record["meta_eval"] = {d: v for d, v in evaluate(model, {"loft": tests["loft"]}).items()}
        if ft_steps:
            finetune(model, train, cfg, ft_steps)
            ev = evaluate(model, tests)
            record["ft_steps"] = ft_steps
            record["summary"] = summary(ev)
            record["ft_eval"] = ev
        save(f"{cfg.name}-clip-{mode}", record)


# ---------------------------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------------------------


def _abs_rel(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel AbsRel and its mask under the evaluate stage's caps, metric protocol."""
    pred = pred.clamp(*CAPS_M)
    return (pred - gt).abs() / gt.clamp_min(CAPS_M[0]), (gt > CAPS_M[0]) & (gt < CAPS_M[1])


def errors(cfg: Config) -> None:
    """Where the in-domain AbsRel comes from: by ground-truth depth, at depth edges, per image (loft test split)."""
    torch.set_num_threads(1)
    train, tests = load_data(cfg)
    model = build(cfg.encoder, cfg.decoder, cfg.seed, cfg.encoder_levels, cfg.scales, cfg.head)
    finetune(model, train, cfg, cfg.steps)
    gt = tests["loft"]["depth"]
    rel, valid = _abs_rel(predict(model, tests["loft"]["rgb"]), gt)
    g, r = gt[valid], rel[valid]
    out: dict[str, Any] = {"name": cfg.name, "abs_rel": round(float(r.mean()), 4), "by_depth_m": {}}
    for lo, hi in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 8), (8, 10)):
        m = (g >= lo) & (g < hi)
        out["by_depth_m"][f"{lo}-{hi}"] = {"pixels": round(float(m.float().mean()), 3),
                                           "abs_rel": round(float(r[m].mean()), 3),
                                           "share_of_abs_rel": round(float(r[m].sum() / r.sum()), 3)}
    d = gt[:, 0]  # a depth edge: a 4-neighbour differs by more than 10 %
    edge = torch.zeros_like(d, dtype=torch.bool)
    for dim in (1, 2):
        a, b = d.narrow(dim, 1, d.shape[dim] - 1), d.narrow(dim, 0, d.shape[dim] - 1)
        jump = (a - b).abs() > 0.1 * torch.minimum(a, b)
        edge.narrow(dim, 1, d.shape[dim] - 1).logical_or_(jump)
        edge.narrow(dim, 0, d.shape[dim] - 1).logical_or_(jump)
    e = edge.unsqueeze(1)[valid]
    out["edges"] = {"pixels": round(float(e.float().mean()), 3), "abs_rel": round(float(r[e].mean()), 3),
                    "share_of_abs_rel": round(float(r[e].sum() / r.sum()), 3)}
    per_image = [float(rel[i][valid[i]].mean()) for i in range(len(gt))]
    out["per_image_abs_rel_q10_q50_q90"] = [round(float(q), 3) for q in np.quantile(per_image, [0.1, 0.5, 0.9])]
    train_rel, train_valid = _abs_rel(predict(model, train["rgb"][:256]), train["depth"][:256])
    out["train_abs_rel"] = round(float(train_rel[train_valid].mean()), 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{cfg.name}.json").write_text(json.dumps({"kind": "errors", "config": dataclasses.asdict(cfg), **out},
                                                         indent=2))
    print(json.dumps(out))


def table() -> None:
    rows = []
    for path in sorted(RESULTS.glob("*.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        if r["kind"] != "finetune":
            continue
        c, s = r["config"], r["summary"]
        zs = " / ".join(f"{v:.2f}" for v in s["zs_med_a1"].values())
        calib = "; ".join(f"{d}: {f}" for d, f in c["calib"].items()) or "-"
        rows.append(f"| {path.stem} | {c['encoder']} | {c['height']}x{c['width']} | {c['batch']} | {c['lr']:g} | "
                    f"{c['steps']} | {c['train_size']} | {r['step_ratio']:.2f} | {r['ref_steps']:.0f} | "
                    f"{s['in_a1']:.3f} | {s['in_abs_rel']:.3f} | {s['in_rmse']:.3f} | {s['in_med_a1']:.3f} | "
                    f"{zs} | {s['spread_ratio']} | {calib} |")
    print("| run | encoder | HxW | batch | lr | steps | train | step cost | ref steps | a1 | AbsRel | RMSE | "
          "a1 med | zero-shot a1 med (apt / studio / office) | spread | calibration |")
    print("|" + "---|" * 16)
    print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["run", "clip", "table", "cost", "errors"])
    ap.add_argument("--name", default="run")
    for f in dataclasses.fields(Config):
        if f.name in ("name", "decoder", "calib", "scales", "augment"):
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(Config('x'), f.name)))
    ap.add_argument("--decoder", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--augment", type=lambda s: s.lower() in ("1", "true", "on", "yes"))
    ap.add_argument("--calib", type=json.loads, help='JSON, e.g. {"loft": {"room_size_m": [4, 8]}}')
    ap.add_argument("--outer-steps", type=int, default=50)
    ap.add_argument("--clip-modes", default="norm,value,none")
    ap.add_argument("--ft-steps", type=int, default=0)
    a = ap.parse_args()
    if a.mode == "table":
        return table()
    if a.mode == "cost":
        return cost(rounds=10)
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(Config) if getattr(a, f.name, None) is not None}
    cfg = Config(**given)
    if a.mode == "run":
        run(cfg)
    elif a.mode == "errors":
        errors(cfg)
    else:
        clip_study(cfg, a.outer_steps, a.clip_modes.split(","), a.ft_steps)


if __name__ == "__main__":
    main()
