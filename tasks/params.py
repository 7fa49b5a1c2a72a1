"""The one schema for params.yaml.

Everything the pipeline reads from params.yaml goes through `load_params`, so a typo or a bad value fails once, at the
boundary, with the dotted key in the message, instead of deep inside a training loop. Unknown keys are errors too:
a misspelt knob that silently keeps its default is the most expensive kind of bug in a multi-hour run.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML

from tasks.io import MetadepthError, atomic_write
from tasks.preprocess.sources import SourceParams

DOMAIN_NAME = r"^[a-z0-9][a-z0-9_\-]*$"  # dataset names become paths under data/: no separators, no dots


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    domains: list[str] = Field(min_length=1)  # datasets prepared and evaluated (synthetic domains by default)
    train_domain: str  # the one domain used for meta-initialisation and fine-tuning
    height: int = Field(ge=16, le=2048)  # training / evaluation resolution
    width: int = Field(ge=16, le=2048)
    train_size: int = Field(ge=1)  # frames per split for generated (synthetic) datasets
    train_scenes: int | None = Field(default=None, ge=1)  # distinct rooms in synthetic train splits; None: all
    val_size: int = Field(ge=1)
    test_size: int = Field(ge=1)
    min_depth: float = Field(gt=0)  # depth outside [min_depth, max_depth] is marked invalid (0) in shards
    max_depth: float = Field(gt=0)
    chunk_frames: int = Field(ge=1)  # frames per HDF5 chunk: 1 keeps random access to one chunk per sample
    compression: Literal["none", "lzf", "gzip"]  # none: fastest reads (docs/performance.md); lzf/gzip: smaller
    render_batch: int = Field(ge=1)  # frames the synthetic generator renders at once (bounds memory)
    sources: dict[str, SourceParams] = {}  # real datasets: name -> reader + path under data/raw/ (else synthetic)

    @field_validator("domains")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        import re

        for name in v:
            if not re.match(DOMAIN_NAME, name):
                raise ValueError(f"dataset name {name!r} must match {DOMAIN_NAME} (it becomes a folder under data/)")
        if len(set(v)) != len(v):
            raise ValueError("dataset names must be unique")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.train_domain not in self.domains:
            raise ValueError(f"train_domain {self.train_domain!r} is not one of domains {self.domains}")
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        if self.train_scenes is not None and self.train_domain in self.sources:
            raise ValueError(f"train_scenes applies to synthetic domains only, and train_domain {self.train_domain!r} "
                             "is a real dataset (data.sources); set train_scenes: null")
        return self


class ModelParams(_Strict):
    encoder: str  # any timm model name that supports features_only
    decoder_channels: list[int] = Field(min_length=5, max_length=5)
    scales: list[int] = Field(min_length=1)
    min_depth: float = Field(gt=0)  # range of the network's output head
    max_depth: float = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        if sorted(set(self.scales)) != self.scales or self.scales[0] != 0 or self.scales[-1] > 4:
            raise ValueError("scales must be increasing, unique, start at 0 and stay <= 4")
        return self


INIT_KINDS = ("scratch", "pretrained")


class InitParams(_Strict):
    # -> data/checkpoints/seed<k>/<kind>.pt: 'scratch' is random weights from the seed, 'pretrained' a local file
    kinds: list[Literal["scratch", "pretrained"]] = Field(min_length=1)
    pretrained_path: str | None = None  # local encoder weights (.pth/.safetensors) for 'pretrained'; never downloaded

    @model_validator(mode="after")
    def _consistent(self) -> InitParams:
        if "pretrained" in self.kinds and not self.pretrained_path:
            raise ValueError("kinds contains 'pretrained' but pretrained_path is not set; point it at a local "
                             "encoder weights file or remove 'pretrained'")
        return self


class LossParams(_Strict):
    smooth_weight: float = Field(ge=0)  # paper: 0.001
    scale_decay: float = Field(gt=0)  # paper: smoothness weight divided by 2.3 per scale
    # plain: the paper's second-order term on the depth map; edge_aware: on mean-normalised depth, discounted at
    # image edges (monodepth2-style). Used by every loss term of every training stage.
    smoothness: Literal["plain", "edge_aware"] = "plain"


class AugmentParams(_Strict):
    brightness: float = Field(ge=0, le=1)
    contrast: float = Field(ge=0, le=1)
    saturation: float = Field(ge=0, le=1)
    hue: float = Field(ge=0, le=0.5)
    flip_prob: float = Field(ge=0, le=1)


class TaskAugmentParams(_Strict):
    mixup: bool  # mix the task with a second task after the inner steps
    mixup_alpha: float = Field(gt=0)  # lambda ~ Beta(alpha, alpha)
    channel_shuffle: bool  # swap a fraction of bottleneck channels with the second task's
    shuffle_fraction: float = Field(ge=0, le=1)


class MetaSettings(_Strict):
    """One meta-initialisation's settings; `MetaParams` adds the named variants (ablations) on top."""

    steps: int = Field(ge=1)  # outer (meta) steps
    tasks_per_step: int = Field(ge=1)  # batched Reptile: mean of this many task deltas per outer step
    batch_size: int = Field(ge=1)  # one task = one mini-batch of this size
    inner_steps: int = Field(ge=1)  # paper: L = 4
    inner_lr: float = Field(gt=0)  # paper: 1e-3
    outer_lr: float = Field(gt=0)  # paper: 0.1
    outer_optimizer: Literal["sgd", "adam"]
    # Inner-step gradient clipping: none (default, by measurement: docs/findings.md), value (each entry to
    # [-clip_max, clip_max], what the paper's snippet meant) or norm (the global norm to clip_max).
    clip: Literal["none", "value", "norm"] = "none"
    clip_max: float = Field(default=1.0, gt=0)
    # same: every inner step trains on the task's one batch, freshly augmented (the paper's text); fresh: a new
    # batch at every inner step (the paper's released snippet).
    inner_batches: Literal["same", "fresh"] = "same"
    skip_nonfinite_steps: bool = False  # NaN/inf in a meta step: skip that step (logged) instead of stopping
    online_augment: bool  # fresh colour jitter + flip at every inner step
    task_augment: TaskAugmentParams
    log_every: int = Field(ge=1)
    val_every: int = Field(default=50, ge=1)  # steps between validation losses in the curve

    @property
    def steps_per_task(self) -> int:
        """Gradient steps one task takes: the inner steps, plus the task-augmentation step."""
        return self.inner_steps + (1 if self.task_augment.mixup or self.task_augment.channel_shuffle else 0)

    def gradient_steps(self, processes: int = 1) -> int:
        """The stage's budget in gradient steps (each on a batch of batch_size): what `sup` is matched to."""
        return self.steps * self.tasks_per_step * processes * self.steps_per_task


class MetaParams(MetaSettings):
    # The checkpoint meta-learning (and `sup`) starts from: an init kind (scratch, pretrained). One for every
    # variant, so dvc.yaml can name the dependency.
    start: str = "scratch"
    # Meta-initialisations to learn: name -> overrides of the settings above. 'meta' with no overrides is the
    # paper's setting; extra entries are the ablations (e.g. meta_no_task_aug: {task_augment: {mixup: false}}).
    variants: dict[str, dict[str, Any]] = Field(min_length=1)

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        import re

        for name, overrides in v.items():
            if not re.match(r"^meta[a-z0-9_]*$", name):
                raise ValueError(f"variant name {name!r} must start with 'meta' and use [a-z0-9_]")
            for key in ("variants", "start"):
                if key in (overrides or {}):
                    raise ValueError(f"variant {name!r} cannot override '{key}'")
        return v

    @model_validator(mode="after")
    def _variants_valid(self) -> MetaParams:
        for name in self.variants:
            self.variant(name)  # raises with the variant's key named
        return self

    def variant(self, name: str) -> MetaSettings:
        """These settings with variant `name`'s overrides applied (nested dicts merge), validated."""
        def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
            return {k: merge(base[k], over[k]) if isinstance(base.get(k), dict) and isinstance(over.get(k), dict)
                    else over.get(k, base.get(k)) for k in {*base, *over}}

        if name not in self.variants:
            raise MetadepthError(f"meta.variants has no {name!r}; known: {sorted(self.variants)}")
        try:
            base = self.model_dump(exclude={"variants", "start"})
            return MetaSettings.model_validate(merge(base, self.variants[name] or {}))
        except ValidationError as err:
            raise ValueError(_format_error(err, f"variants.{name}")) from None


class FinetuneParams(_Strict):
    # Start checkpoints to fine-tune (an init kind or a meta variant); run `x` writes checkpoint ft_<x>. A list of
    # checkpoint names, not a name -> checkpoint mapping, so dvc.yaml's matrix can name the dependency.
    inits: list[str] = Field(min_length=1)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)  # paper: Adam 5e-4
    lr_min: float = Field(ge=0)  # paper: cosine annealing to 1e-6
    weight_decay: float = Field(ge=0)
    clip_grad_norm: float | None = Field(default=None, gt=0)
    online_augment: bool
    log_every: int = Field(ge=1)
    val_every: int = Field(default=50, ge=1)  # steps between validation losses in the curve

    @field_validator("inits")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("start checkpoints must be unique")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneParams:
        if self.lr_min > self.lr:
            raise ValueError("lr_min must not exceed lr")
        return self


class ProtocolParams(_Strict):
    min_depth: float = Field(gt=0)  # evaluation caps (standard protocol: 1e-3 .. 10 m indoors)
    max_depth: float = Field(gt=0)
    crop: Literal["none", "eigen"]  # eigen: the NYUv2 Eigen crop

    @model_validator(mode="after")
    def _caps(self) -> ProtocolParams:
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        return self


class EvaluateParams(ProtocolParams):
    models: list[str] = Field(min_length=1)  # checkpoint names under data/checkpoints (and 'constant')
    # Protocols, each in every metrics file: name -> per-image alignment (none = metric depth, median = per-image
    # median scaling, scale_shift = least-squares scale and shift).
    protocols: dict[str, Literal["none", "median", "scale_shift"]] = Field(min_length=1)
    batch_size: int = Field(ge=1)
    # Per-dataset protocol: dataset -> any of min_depth/max_depth/crop, e.g. nyuv2: {crop: eigen}
    per_dataset: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _per_dataset(self) -> EvaluateParams:
        for name in self.per_dataset:
            self.protocol(name)  # raises naming the dataset and key
        return self

    def protocol(self, dataset: str) -> ProtocolParams:
        """The evaluation protocol of one dataset: the defaults above with its per_dataset overrides."""
        base = self.model_dump(include=set(ProtocolParams.model_fields))
        try:
            return ProtocolParams.model_validate(base | (self.per_dataset.get(dataset) or {}))
        except ValidationError as err:
            raise ValueError(_format_error(err, f"per_dataset.{dataset}")) from None


class ClaimParams(_Strict):
    model: str  # the model the claim is about, e.g. meta
    baseline: str  # what it is compared with, seed by seed, e.g. sup


class ReportParams(_Strict):
    baseline: str  # the model every other row's relative RMSE change is measured against
    qualitative_samples: int = Field(ge=1, le=16)
    # name -> comparison: a verdict per protocol in the report and in reports/metrics.json (not run when a model
    # of it was not evaluated)
    claims: dict[str, ClaimParams]


class RuntimeParams(_Strict):
    device: Literal["auto", "cpu", "cuda"]
    num_threads: int = Field(ge=0)  # torch intra-op threads; 0 = torch's default
    num_workers: int = Field(ge=0)  # DataLoader worker processes
    resume_every: int = Field(ge=1)  # training steps between resumable <name>.resume.pt snapshots
    nproc_per_node: int = Field(default=1, ge=1)  # >1: training stages run under torchrun (one process per device)
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on GPU, gloo on CPU
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto: bf16 autocast on GPU, off on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for GPU, off on CPU
    # torch.compile the model in meta_init, finetune and evaluate (checkpoints keep plain keys). Off by default:
    # no gain on the CPU default for a ~50 s compile (docs/performance.md); a GPU question.
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # torch.compile(mode=...)


class TrackingParams(_Strict):
    """Where runs are recorded and outputs stored. Not listed in any stage's dvc.yaml `params:`: it does not
    change results, so changing it re-runs nothing and it is left out of the params logged to MLflow."""

    mlflow_uri: str | None = None  # null: sqlite:///mlflow.db in the project; MLFLOW_TRACKING_URI overrides both
    experiment: str = Field(default="metadepth", min_length=1)  # MLflow experiment; METADEPTH_EXPERIMENT overrides
    dvc_remote: str | None = None  # `metadepth run --push` target; null: DVC's default remote (`dvc remote add -d`)

    @field_validator("mlflow_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v and v != "databricks":
            raise ValueError(f"{v!r} is not a tracking URI; use e.g. sqlite:///mlflow.db or http://host:5000")
        return v


class Params(_Strict):
    seed: int = Field(ge=0)  # the data seed: synthetic frames and splits (the same data for every training seed)
    # Training seeds: every init, meta-initialisation and fine-tuning run is trained once per seed (its weights,
    # data order and augmentation draws), outputs under seed<k>/; the report gives means and 95% intervals.
    seeds: list[int] = Field(min_length=1)
    data: DataParams
    model: ModelParams
    init: InitParams
    loss: LossParams
    augment: AugmentParams
    meta: MetaParams
    finetune: FinetuneParams
    evaluate: EvaluateParams
    report: ReportParams
    runtime: RuntimeParams
    tracking: TrackingParams = TrackingParams()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("seeds must be unique non-negative integers, e.g. [0, 1, 2]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.meta.start not in self.init.kinds:
            raise ValueError(f"meta.start: {self.meta.start!r} is not in init.kinds {self.init.kinds}")
        starts = set(self.init.kinds) | set(self.meta.variants) | {"sup"}
        for source in self.finetune.inits:
            if source not in starts:
                raise ValueError(f"finetune.inits: {source!r} is not produced by the pipeline; use one of "
                                 f"{sorted(starts)} (init.kinds, meta.variants, sup)")
        known = starts | {f"ft_{name}" for name in self.finetune.inits} | {"constant"}
        for model in self.evaluate.models:
            if model not in known:
                raise ValueError(f"evaluate.models: {model!r} is not produced by the pipeline (known: {sorted(known)})")
        for name in self.evaluate.per_dataset:
            if name not in self.data.domains:
                raise ValueError(f"evaluate.per_dataset: {name!r} is not in data.domains {self.data.domains}")
        if self.report.baseline not in self.evaluate.models:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not in evaluate.models")
        return self


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (misspelt? see params.yaml for the valid keys)"
    elif first["type"] == "missing":
        msg = "missing key"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def validate(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise MetadepthError(_format_error(err, source)) from None


def _yaml() -> YAML:
    y = YAML()  # round-trip mode keeps the comments of params.yaml when -S overrides are written back
    y.preserve_quotes = True
    return y


def read_raw(path: Path) -> Any:
    if not path.is_file():
        raise MetadepthError(f"{path}: params file not found; run from the project root or pass --params")
    try:
        return _yaml().load(path.read_text())
    except Exception as err:  # ruamel raises many types; all mean the same to the user
        raise MetadepthError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    return validate(json.loads(json.dumps(read_raw(path))), str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key.sub=value` with the value parsed as YAML, the same syntax as `dvc exp run -S`."""
    if "=" not in text:
        raise MetadepthError(f"override {text!r}: expected KEY=VALUE, e.g. finetune.steps=100")
    key, value = text.split("=", 1)
    if not key.strip():
        raise MetadepthError(f"override {text!r}: empty key")
    return key.strip().split("."), YAML(typ="safe").load(io.StringIO(value)) if value.strip() else None


def _with_overrides(path: Path, overrides: list[str]) -> tuple[Any, Params]:
    raw = read_raw(path)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for depth, k in enumerate(keys[:-1]):
            if not isinstance(node, dict) or k not in node:
                raise MetadepthError(f"override {text!r}: unknown key {'.'.join(keys[: depth + 1])} "
                                     "(see params.yaml for the valid keys)")
            node = node[k]
        if not isinstance(node, dict) or keys[-1] not in node:
            raise MetadepthError(f"override {text!r}: unknown key {'.'.join(keys)} "
                                 "(see params.yaml for the valid keys)")
        node[keys[-1]] = value
    return raw, validate(json.loads(json.dumps(raw)), f"{path} with overrides")


def check_overrides(path: Path, overrides: list[str]) -> Params:
    """The params `-S` overrides would give, validated, without writing anything (a CLI checks them up front)."""
    return _with_overrides(path, overrides)[1]


def apply_overrides(path: Path, overrides: list[str]) -> Params:
    """Write `-S` overrides into params.yaml, as `dvc exp run -S` does, so DVC and Prefect see the same values."""
    raw, params = _with_overrides(path, overrides)
    buf = io.StringIO()
    _yaml().dump(raw, buf)
    with atomic_write(path) as tmp:
        tmp.write_text(buf.getvalue())
    return params


def profile_overrides(profile: Path) -> list[str]:
    """A profile file (nested YAML of params keys) as `-S key=value` overrides, applied like any other."""
    if not profile.is_file():
        raise MetadepthError(f"{profile}: profile not found; profiles live in profiles/<name>.yaml")
    raw = read_raw(profile)

    def walk(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [o for k, v in node.items() for o in walk(v, f"{prefix}{k}.")]
        return [f"{prefix[:-1]}={json.dumps(node)}"]

    return walk(json.loads(json.dumps(raw or {})), "")


def subset(params: Params, keys: list[str]) -> dict[str, Any]:
    """The values of dotted keys, e.g. ['seed', 'data.height'], as DVC's `params:` lists name them."""
    full = params.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = full
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def result_params(params: Params) -> dict[str, Any]:
    """Every setting that can change results (all but `tracking`): what pipeline runs log and hash."""
    return params.model_dump(mode="json", exclude={"tracking"})


def params_hash(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
