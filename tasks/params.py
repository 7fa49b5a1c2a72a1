"""The one schema for params.yaml, and the one way to read it.

Everything the pipeline reads from params.yaml goes through `load_params`, so a typo or a bad value fails once, at the
boundary, with the dotted key in the message, instead of deep inside a training loop. Unknown keys are errors too:
a misspelt knob that silently keeps its default is the most expensive kind of bug in a multi-hour run. Each field's
description is what the Prefect UI's Params form shows. Reading and editing the file is tasks/params_file.py;
`-S` overrides and the values stages key on are tasks/param_values.py.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.io import MetadepthError
from tasks.params_file import format_error, moved_key, read_raw

DOMAIN_NAME = r"^[a-z0-9][a-z0-9_\-]*$"  # dataset names become paths under data/: no separators, no dots


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top, nested dicts merging key by key: how a meta variant overrides meta.settings."""
    return {**base, **{k: merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in over.items()}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceParams(_Strict):
    """A real dataset: read from data/raw/<path> by the prepare stage with its reader, instead of generated."""

    format: str = Field(description="a registered reader: nyuv2, hypersim, rendered, replica, hm3d, va")
    path: str = Field(description="relative to data/raw/ (a folder, or NYU's .mat file); must stay inside data/")
    options: dict[str, Any] = Field({}, description="reader-specific settings (`metadepth data formats`)")
    skip_bad: bool = Field(False, description="quarantine unreadable frames (quarantine.csv) instead of failing")

    @field_validator("path")
    @classmethod
    def _inside_data(cls, v: str) -> str:
        norm = posixpath.normpath(posixpath.join("data/raw", v.replace("\\", "/")))
        if not v.strip() or posixpath.isabs(v) or not norm.startswith("data/"):
            raise ValueError(f"{v!r} must be a path relative to data/raw/ that stays inside data/, e.g. 'nyuv2'")
        return v

    @model_validator(mode="after")
    def _known_format(self) -> SourceParams:
        # The readers (tasks/readers, below this schema) pull in h5py and OpenCV: imported only when a source is
        # configured, so a format or option typo still fails when params.yaml is loaded, at no cost otherwise.
        from tasks.readers import get_reader

        try:
            get_reader(self.format).parse_options(self.options)
        except MetadepthError as err:
            raise ValueError(str(err)) from None
        return self

    def raw_path(self, root: Path) -> Path:
        """The dataset's location in a project checkout."""
        return root / "data" / "raw" / self.path


class DataParams(_Strict):
    """How every dataset is prepared: the prepare stage depends on this whole section."""

    seed: int = Field(ge=0, description="the data seed: synthetic frames and splits, the same for every training seed")
    height: int = Field(ge=16, le=2048, description="training / evaluation image height (pixels)")
    width: int = Field(ge=16, le=2048, description="training / evaluation image width (pixels)")
    train_size: int = Field(ge=1, description="train frames of a generated (synthetic) dataset")
    train_scenes: int | None = Field(default=None, ge=1, description="distinct rooms in synthetic train splits; "
                                     "null: all (the knob of the paper's limited-scene-variety claim)")
    val_size: int = Field(ge=1, description="validation frames of a generated (synthetic) dataset")
    test_size: int = Field(ge=1, description="test frames of a generated (synthetic) dataset")
    min_depth: float = Field(gt=0, description="metres; depth below is marked invalid (0) in the shards")
    max_depth: float = Field(gt=0, description="metres; depth above is marked invalid (0) in the shards")
    chunk_frames: int = Field(ge=1, description="frames per HDF5 chunk: 1 keeps random access to one chunk")
    compression: Literal["none", "lzf", "gzip"] = Field(description="none reads fastest; lzf/gzip are smaller")
    sources: dict[str, SourceParams] = Field({}, description="real datasets: name -> reader and path under data/raw/")

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        return self


class ModelParams(_Strict):
    encoder: str = Field(description="a timm model name with features_only (paper: convnext_small / _base)")
    encoder_levels: int | None = Field(None, ge=1, description="timm feature levels kept, shallowest first; null: all")
    decoder_channels: list[int] = Field(min_length=1, max_length=5, description="decoder widths, one per stride "
                                        "level 1..max/2 of the kept encoder (resnet: one per encoder level)")
    scales: list[int] = Field(min_length=1, description="output scales trained on (0 = input resolution)")
    min_depth: float = Field(gt=0, description="metres; lower end of the network's output range")
    max_depth: float = Field(gt=0, description="metres; upper end of the network's output range")

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        if sorted(set(self.scales)) != self.scales or self.scales[0] != 0 or self.scales[-1] > 4:
            raise ValueError("scales must be increasing, unique, start at 0 and stay <= 4")
        return self


INIT_KINDS = ("scratch", "pretrained")


class InitParams(_Strict):
    kinds: list[Literal["scratch", "pretrained"]] = Field(min_length=1, description="starting weights to write")
    pretrained_path: str | None = Field(None, description="local encoder weights for 'pretrained'; never downloaded")

    @model_validator(mode="after")
    def _consistent(self) -> InitParams:
        if "pretrained" in self.kinds and not self.pretrained_path:
            raise ValueError("kinds contains 'pretrained' but pretrained_path is not set; point it at a local "
                             "encoder weights file or remove 'pretrained'")
        return self


class LossParams(_Strict):
    smooth_weight: float = Field(ge=0, description="smoothness weight (paper: 0.001)")
    scale_decay: float = Field(gt=0, description="smoothness weight divided by this per scale (paper: 2.3)")
    smoothness: Literal["plain", "edge_aware"] = Field(
        "plain", description="plain: the paper's second-order term on the depth map; edge_aware: on mean-normalised "
        "depth, discounted at image edges (monodepth2-style). One loss for every term of every training stage")


class AugmentParams(_Strict):
    brightness: float = Field(ge=0, le=1, description="colour jitter: brightness factor range")
    contrast: float = Field(ge=0, le=1, description="colour jitter: contrast factor range")
    saturation: float = Field(ge=0, le=1, description="colour jitter: saturation factor range")
    hue: float = Field(ge=0, le=0.5, description="colour jitter: hue shift range")
    flip_prob: float = Field(ge=0, le=1, description="probability of a horizontal flip")


class TaskAugmentParams(_Strict):
    mixup: bool = Field(description="mix the task with a second task after the inner steps")
    mixup_alpha: float = Field(gt=0, description="mixup weight lambda ~ Beta(alpha, alpha)")
    channel_shuffle: bool = Field(description="swap a fraction of bottleneck channels with the second task's")
    shuffle_fraction: float = Field(ge=0, le=1, description="fraction of bottleneck channels swapped")


class MetaSettings(_Strict):
    """One meta-initialisation's settings; `MetaParams` adds the named variants (ablations) on top."""

    steps: int = Field(ge=1, description="outer (meta) steps")
    tasks_per_step: int = Field(ge=1, description="batched Reptile: mean of this many task deltas per outer step")
    batch_size: int = Field(ge=1, description="one task = one mini-batch of this size")
    inner_steps: int = Field(ge=1, description="SGD steps per task (paper: L = 4)")
    inner_lr: float = Field(gt=0, description="inner SGD learning rate (paper: 1e-3)")
    outer_lr: float = Field(gt=0, description="outer (meta) learning rate (paper: 0.1)")
    outer_optimizer: Literal["sgd", "adam"] = Field(description="optimiser of the outer step")
    clip: Literal["none", "value", "norm"] = Field("none", description="inner-step gradient clipping: none, value "
                                                   "(each entry to +-clip_max) or norm (global norm to clip_max)")
    clip_max: float = Field(1.0, gt=0, description="the bound of meta.clip")
    inner_batches: Literal["same", "fresh"] = Field("same", description="same: one batch per task, freshly augmented "
                                                    "at every inner step (paper text); fresh: a new batch per step")
    skip_nonfinite_steps: bool = Field(False, description="true: skip (and log) a step with a NaN/inf loss")
    online_augment: bool = Field(description="fresh colour jitter + flip at every inner step")
    task_augment: TaskAugmentParams = Field(description="task-level augmentation: mixup, channel shuffle")
    log_every: int = Field(ge=1, description="outer steps between logged metrics")
    val_every: int = Field(50, ge=1, description="outer steps between validation losses in the curve")

    @property
    def steps_per_task(self) -> int:
        """Gradient steps one task takes: the inner steps, plus the task-augmentation step."""
        return self.inner_steps + (1 if self.task_augment.mixup or self.task_augment.channel_shuffle else 0)

    def gradient_steps(self, processes: int = 1) -> int:
        """The stage's budget in gradient steps (each on a batch of batch_size): what `sup` is matched to."""
        return self.steps * self.tasks_per_step * processes * self.steps_per_task


class MetaParams(_Strict):
    """The meta stage: one start, the settings, and the named variants (ablations) on top of them."""

    # One start for every variant, so dvc.yaml can name the dependency; variants: 'meta' with no overrides is the
    # paper's setting, other entries are ablations (e.g. meta_no_task_aug: {task_augment: {mixup: false}}).
    start: str = Field("scratch", description="the init kind meta-learning and sup start from (scratch, pretrained)")
    settings: MetaSettings = Field(description="one meta-initialisation's settings (the paper's, by default)")
    variants: dict[str, dict[str, Any]] = Field(min_length=1, description="name -> overrides of meta.settings")

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in v:
            if not re.match(r"^meta[a-z0-9_]*$", name):
                raise ValueError(f"variant name {name!r} must start with 'meta' and use [a-z0-9_]")
        return v

    @model_validator(mode="after")
    def _variants_valid(self) -> MetaParams:
        for name in self.variants:
            self.variant(name)  # raises with the variant's key named
        return self

    def variant(self, name: str) -> MetaSettings:
        """meta.settings with variant `name`'s overrides applied (nested dicts merge), validated."""
        if name not in self.variants:
            raise MetadepthError(f"meta.variants has no {name!r}; known: {sorted(self.variants)}")
        try:
            return MetaSettings.model_validate(merged(self.settings.model_dump(), self.variants[name] or {}))
        except ValidationError as err:
            raise ValueError(format_error(err, f"variants.{name}", MetaSettings)) from None


class SupervisedSettings(_Strict):
    """The supervised recipe shared by fine-tuning and `sup` (which takes its steps and batch from the meta stage)."""

    lr: float = Field(gt=0, description="Adam learning rate (paper: 5e-4)")
    lr_min: float = Field(ge=0, description="cosine annealing's final learning rate (paper: 1e-6)")
    weight_decay: float = Field(ge=0, description="Adam weight decay")
    clip_grad_norm: float | None = Field(default=None, gt=0, description="gradient norm cap; null: none")
    online_augment: bool = Field(description="colour jitter + flip on every batch")
    log_every: int = Field(ge=1, description="steps between logged metrics")
    val_every: int = Field(50, ge=1, description="steps between validation losses in the curve")

    @model_validator(mode="after")
    def _consistent(self) -> SupervisedSettings:
        if self.lr_min > self.lr:
            raise ValueError("lr_min must not exceed lr")
        return self


class FinetuneParams(_Strict):
    # A list of checkpoint names, not a name -> checkpoint mapping, so dvc.yaml's matrix can name the dependency.
    starts: list[str] = Field(min_length=1, description="start checkpoints (init.kinds, meta.variants, sup); each "
                              "writes ft_<start>")
    steps: int = Field(ge=1, description="fine-tuning steps")
    batch_size: int = Field(ge=1, description="mini-batch size")
    settings: SupervisedSettings = Field(description="optimiser, schedule, augmentation and logging")


class ProtocolParams(_Strict):
    min_depth: float = Field(gt=0, description="metres; evaluation lower cap (standard indoors: 1e-3)")
    max_depth: float = Field(gt=0, description="metres; evaluation upper cap (standard indoors: 10)")
    crop: Literal["none", "eigen"] = Field(description="eigen: the NYUv2 Eigen crop")

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolParams:
        if self.min_depth >= self.max_depth:
            raise ValueError("min_depth must be smaller than max_depth")
        return self


class EvaluateParams(ProtocolParams):
    models: list[str] = Field(min_length=1, description="checkpoints under data/checkpoints (and constant) "
                              "evaluated on every domain")
    protocols: dict[str, Literal["none", "median", "scale_shift"]] = Field(
        min_length=1, description="name -> per-image alignment, each in every metrics file: none = metric depth, "
        "median = per-image median scaling, scale_shift = least-squares scale and shift")
    batch_size: int = Field(ge=1, description="test images per forward pass")
    per_dataset: dict[str, dict[str, Any]] = Field({}, description="dataset -> overrides, e.g. nyuv2: {crop: eigen}")

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
            raise ValueError(format_error(err, f"per_dataset.{dataset}", ProtocolParams)) from None


class ClaimParams(_Strict):
    model: str = Field(description="the model the claim is about, e.g. meta")
    baseline: str = Field(description="what it is compared with, seed by seed, e.g. sup")


class ReportParams(_Strict):
    baseline: str = Field(description="the model every other row's relative RMSE change is measured against")
    qualitative_samples: int = Field(ge=1, le=16, description="test images in the qualitative figure")
    claims: dict[str, ClaimParams] = Field(description="name -> comparison: a verdict per protocol in the report and "
                                           "reports/metrics.json (not run when one of its models was not evaluated)")


class NumericsParams(_Strict):
    """How the training arithmetic is done: it changes the trained weights, so the training stages depend on it."""

    nproc_per_node: int = Field(1, ge=1, description=">1: training stages run under torchrun, one process per device")
    amp: Literal["auto", "off", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, off on CPU")
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="auto: on for GPU, off on CPU")
    # Off by default: no gain on the CPU default for a ~50 s compile (docs/performance.md); a GPU question.
    compile: bool = Field(False, description="torch.compile the model in meta_init, finetune and evaluate")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field("default", description="its mode")


class HostParams(_Strict):
    """How this machine runs the work; no stage depends on it: device and threads change float rounding only."""

    device: Literal["auto", "cpu", "cuda"] = Field(description="auto: cuda when a GPU is visible, else cpu")
    num_threads: int = Field(ge=0, description="torch intra-op threads; 0 = torch's default")
    num_workers: int = Field(ge=0, description="DataLoader worker processes")
    resume_every: int = Field(ge=1, description="training steps between resumable <name>.resume.pt snapshots")
    dist_backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on GPU, gloo on CPU")
    render_batch: int = Field(64, ge=1, description="frames the synthetic generator renders at once (bounds memory)")


class RuntimeParams(_Strict):
    numerics: NumericsParams = NumericsParams()
    host: HostParams


class TrackingParams(_Strict):
    """Where runs are recorded: no stage depends on it and it is not logged as a param (it changes no result)."""

    mlflow_uri: str | None = Field(None, description="null: sqlite:///mlflow.db; MLFLOW_TRACKING_URI overrides")
    experiment: str = Field("metadepth", min_length=1, description="MLflow experiment; METADEPTH_EXPERIMENT wins")
    dvc_remote: str | None = Field(None, description="`metadepth run --push` target; null: DVC's default remote")

    @field_validator("mlflow_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v and v != "databricks":
            raise ValueError(f"{v!r} is not a tracking URI; use e.g. sqlite:///mlflow.db or http://host:5000")
        return v


class Params(_Strict):
    # Every training stage runs once per seed (weights, data order, augmentation draws), outputs under seed<k>/.
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="training seeds, e.g. [0, 1, 2]; "
                                                     "the data seed is data.seed")
    domains: list[str] = Field(min_length=1, description="datasets prepared and evaluated (synthetic by default)")
    train_domain: str = Field(description="the one domain used for meta-initialisation and fine-tuning")
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

    @field_validator("domains")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.match(DOMAIN_NAME, name):
                raise ValueError(f"dataset name {name!r} must match {DOMAIN_NAME} (it becomes a folder under data/)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        for key, names in (("seeds", self.seeds), ("domains", self.domains), ("finetune.starts", self.finetune.starts)):
            if len(set(names)) != len(names):
                raise ValueError(f"{key}: {names} repeats an entry; each must be unique")
        if self.train_domain not in self.domains:
            raise ValueError(f"train_domain {self.train_domain!r} is not one of domains {self.domains}")
        if self.data.train_scenes is not None and self.train_domain in self.data.sources:
            raise ValueError(f"data.train_scenes applies to synthetic domains only, and train_domain "
                             f"{self.train_domain!r} is a real dataset (data.sources); set train_scenes: null")
        if self.meta.start not in self.init.kinds:
            raise ValueError(f"meta.start: {self.meta.start!r} is not in init.kinds {self.init.kinds}")
        starts = set(self.init.kinds) | set(self.meta.variants) | {"sup"}
        for start in self.finetune.starts:
            if start not in starts:
                raise ValueError(f"finetune.starts: {start!r} is not produced by the pipeline; use one of "
                                 f"{sorted(starts)} (init.kinds, meta.variants, sup)")
        known = starts | {f"ft_{name}" for name in self.finetune.starts} | {"constant"}
        for model in self.evaluate.models:
            if model not in known:
                raise ValueError(f"evaluate.models: {model!r} is not produced by the pipeline (known: {sorted(known)})")
        for name in self.evaluate.per_dataset:
            if name not in self.domains:
                raise ValueError(f"evaluate.per_dataset: {name!r} is not in domains {self.domains}")
        if self.report.baseline not in self.evaluate.models:
            raise ValueError(f"report.baseline {self.report.baseline!r} is not in evaluate.models")
        return self


# Keys the regrouping by stage moved (2026-12): an old params.yaml or `-S` gets the new place, not "unknown key".
MOVED = {"seed": "data.seed", "data.domains": "domains", "data.train_domain": "train_domain",
         "data.render_batch": "runtime.host.render_batch", "finetune.inits": "finetune.starts",
         **{f"{section}.{k}": f"{section}.{group}.{k}" for section, group, schema in (
             ("meta", "settings", MetaSettings), ("finetune", "settings", SupervisedSettings),
             ("runtime", "numerics", NumericsParams), ("runtime", "host", HostParams)) for k in schema.model_fields}}


def validate(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    if old := moved_key(raw, MOVED):
        raise MetadepthError(f"{source}: {old}: moved to {MOVED[old]} (params.yaml is grouped by the stages that "
                             "read it: docs/params.md)")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise MetadepthError(format_error(err, source, Params)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    return validate(read_raw(path), str(path))
