"""The init stage: starting weights as checkpoints, `scratch` (random, from the seed) or `pretrained`.

The random initialisation is a checkpoint of its own so the meta-learning stage and the scratch baseline provably
start from the same weights: the comparison the paper's headline number rests on. `pretrained` loads a local
encoder weights file (the paper's ImageNet initialisation); nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from tasks.checkpoints import build_model, save_checkpoint
from tasks.io import MetadepthError, require_file
from tasks.layout import Layout, training_seed
from tasks.params import Params
from tasks.training import TrainingResult, seed_everything


def run_init(params: Params, root: Path, kind: str, seed: int | None = None) -> TrainingResult:
    if kind not in params.init.kinds:
        raise MetadepthError(f"init kind {kind!r} is not in init.kinds {params.init.kinds}")
    pretrained = None
    if kind == "pretrained":
        pretrained = str(require_file(Path(params.init.pretrained_path).expanduser(),
                                      "init.pretrained_path must name a local encoder weights file"))
    seed = training_seed(params, seed)
    seed_everything(seed)  # the decoder (and a scratch encoder) draw their initial weights from the seed
    try:
        model = build_model(params.model.model_dump(), pretrained_path=pretrained)
    except ValueError as err:  # the model section does not fit the encoder (e.g. decoder_channels' length)
        raise MetadepthError(f"params.yaml: model: {err}") from None
    except (RuntimeError, FileNotFoundError) as err:
        raise MetadepthError(f"init.pretrained_path: {err}") from None
    out = Layout(root, seed).checkpoint(kind)
    # Stored model params never name the weights file: the weights are in the checkpoint, and a rebuild on
    # another machine must not look for the file.
    save_checkpoint(out, model, params.model.model_dump(), step=0, data_hash="",
                    info={"stage": "init", "kind": kind, "seed": seed})
    return TrainingResult(checkpoint=str(out.relative_to(root)), steps=0,
                          final={"parameters": sum(p.numel() for p in model.parameters())})
