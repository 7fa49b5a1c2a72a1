"""Encoder-decoder depth network: any timm backbone + a monodepth2-style multi-scale decoder.

The paper plugs its meta-initialisation into a standard single-image depth network (ConvNeXt encoder,
monodepth2 DepthDecoder). Everything about the encoder (number of feature levels, channels, strides,
input normalisation) is read from timm so the same class serves ConvNeXt (4 levels, strides 4..32),
ResNet (5 levels, strides 2..32) and the tiny `test_*` models used by the tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """3x3 conv + ELU, monodepth2's decoder unit.

    Zero padding instead of monodepth2's reflection padding: reflection fails on the 1-pixel-wide
    bottlenecks that small or odd-sized inputs produce, and the network must accept any input size.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.act = nn.ELU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


def _encoder_key_in_checkpoint(key: str, checkpoint: dict[str, Tensor]) -> str | None:
    """Name of the checkpoint entry holding encoder tensor `key`, or None.

    timm's features_only wrappers rename modules: FeatureListNet flattens top-level Sequentials
    (`stages.0` -> `stages_0`) and FeatureGetterNet nests the model under `model.`; a checkpoint saved
    from the plain classification model uses the original names.
    """
    candidates = (key, key.replace("_", ".", 1), key.removeprefix("model."))
    return next((c for c in candidates if c in checkpoint), None)


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load a local timm checkpoint into a features_only encoder.

    Every encoder tensor must be found with the right shape (otherwise the file is for another
    architecture and silently keeping random weights would be worse than failing). Extra entries
    (classifier head, final norm, layers past the last feature stage) are ignored because
    features_only models drop them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file not found: {path!r}")
    import timm  # here, not at the top: `import timm` pulls in torchvision and torch._dynamo (seconds)

    try:
        # Handles .safetensors and .pth, unwraps {"state_dict": ...}/{"model": ...}, strips "module.".
        checkpoint = timm.models.load_state_dict(path, use_ema=False)
    except Exception as err:
        raise RuntimeError(f"could not read encoder weights from {path!r}: {err}") from err
    if not isinstance(checkpoint, dict) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise RuntimeError(f"{path!r} does not contain a state dict of tensors")

    target = encoder.state_dict()
    loaded, missing, mismatched = {}, [], []
    for key, tensor in target.items():
        source = _encoder_key_in_checkpoint(key, checkpoint)
        if source is None:
            # BatchNorm step counters are bookkeeping, often absent from released weights.
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif checkpoint[source].shape != tensor.shape:
            mismatched.append(f"{key}: file {tuple(checkpoint[source].shape)} vs model {tuple(tensor.shape)}")
        else:
            loaded[key] = checkpoint[source]
    if missing or mismatched:
        raise RuntimeError(
            f"encoder weights in {path!r} are incompatible with the encoder: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(mismatched)} shape mismatches "
            f"(e.g. {mismatched[:3]})"
        )
    encoder.load_state_dict(loaded, strict=False)


class DepthNet(nn.Module):
    """Metric depth from an RGB image in [0, 1], at several decoder scales.

    Decoder level `l` works at stride 2**l; levels go from log2(max encoder stride) - 1 down to 0 (full
    resolution). Each level upsamples the previous one (nearest, x2) and concatenates the encoder feature
    of the same stride as a skip connection when the backbone has one (ConvNeXt has no stride-2 feature).
    """

    def __init__(
        self,
        encoder: str = "convnext_atto",
        pretrained_path: str | os.PathLike | None = None,
        decoder_channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        scales: tuple[int, ...] = (0, 1, 2, 3),
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        encoder_levels: int | None = None,
    ):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        import timm  # only where a network is built (see load_encoder_weights)

        # encoder_levels keeps only the shallowest timm feature levels: timm then drops the deeper stages
        # altogether, which at small inputs are the dearest part of a step (docs/findings-regime.md).
        out_indices = {} if encoder_levels is None else {"out_indices": tuple(range(encoder_levels))}
        self.encoder = timm.create_model(encoder, features_only=True, pretrained=False, **out_indices)
        if pretrained_path is not None:
            load_encoder_weights(self.encoder, pretrained_path)

        cfg = self.encoder.pretrained_cfg
        # The encoder expects the statistics it was (or would be) pretrained with; keeping them inside
        # the model lets every caller feed plain [0, 1] RGB. Non-persistent: they are derived, not learnt.
        self.register_buffer("rgb_mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)

        enc_channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        num_levels = round(math.log2(max(reductions)))
        if 2**num_levels != max(reductions):
            raise ValueError(f"encoder {encoder!r}: deepest stride {max(reductions)} is not a power of two")
        if len(decoder_channels) != num_levels:
            raise ValueError(
                f"encoder {encoder!r} has stride {max(reductions)}, so the decoder needs {num_levels} "
                f"decoder_channels (one per stride 1..{max(reductions) // 2}), got {len(decoder_channels)}"
            )
        if not scales or any(not 0 <= s < num_levels for s in scales):
            raise ValueError(f"scales must be in [0, {num_levels}), got {scales}")

        self.num_levels = num_levels
        self.scales = tuple(scales)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        # Skip connection for decoder level l: the (last) encoder feature at stride 2**l, if any.
        self.skip_index = {round(math.log2(r)): i for i, r in enumerate(reductions) if r < max(reductions)}

        # Indexed by level (0 = full resolution); the forward pass walks them deepest first.
        self.upconv_in = nn.ModuleList()
        self.upconv_out = nn.ModuleList()
        for level in range(num_levels):
            in_ch = enc_channels[-1] if level == num_levels - 1 else decoder_channels[level + 1]
            skip_ch = enc_channels[self.skip_index[level]] if level in self.skip_index else 0
            self.upconv_in.append(ConvBlock(in_ch, decoder_channels[level]))
            self.upconv_out.append(ConvBlock(decoder_channels[level] + skip_ch, decoder_channels[level]))
        self.heads = nn.ModuleDict(
            {str(s): nn.Conv2d(decoder_channels[s], 1, kernel_size=3, padding=1) for s in self.scales}
        )

    def encode(self, rgb: Tensor) -> list[Tensor]:
        """Encoder features (shallowest first) of the normalised, padded image.

        Public so task augmentation can fetch a partner batch's bottleneck with exactly the shape the
        forward pass will see. The image is replicate-padded (bottom/right) to a multiple of the deepest
        stride: every decoder level is then exactly twice the size of the one below and aligns with its
        skip feature whatever the backbone's rounding, and inputs smaller than the stride still work.
        Padding rather than resizing keeps real pixels where they are, so outputs crop back onto the gt.
        """
        stride = 2**self.num_levels
        pad_h, pad_w = -rgb.shape[-2] % stride, -rgb.shape[-1] % stride
        if pad_h or pad_w:
            rgb = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
        return self.encoder((rgb - self.rgb_mean) / self.rgb_std)

    def to_depth(self, logits: Tensor) -> Tensor:
        # Bounded, linear-in-depth output. The paper supervises metric depth with MSE, so a map that is
        # linear in depth keeps the loss gradient equally informative across the whole indoor range;
        # monodepth2's inverse-depth (disparity) parametrisation would scale d(depth)/d(logit) with
        # depth**2 (100x across 0.1-10 m) and let far pixels dominate. The sigmoid keeps predictions
        # strictly inside (min_depth, max_depth) so metrics and logs never see 0 or negative depth.
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(logits)

    def forward(self, rgb: Tensor, bottleneck_fn: Callable[[Tensor], Tensor] | None = None) -> list[Tensor]:
        """Depth maps ordered like `self.scales`; scale s has shape (B, 1, max(1, H >> s), max(1, W >> s)).

        Any input size works (see `encode`). `bottleneck_fn` rewrites the deepest encoder feature before
        decoding: the hook the paper's channel-shuffle task augmentation needs.
        """
        height, width = rgb.shape[-2:]
        features = self.encode(rgb)
        x = features[-1]
        if bottleneck_fn is not None:
            x = bottleneck_fn(x)

        stride = 2**self.num_levels
        padded_h, padded_w = x.shape[-2] * stride, x.shape[-1] * stride
        depths = {}
        for level in reversed(range(self.num_levels)):
            x = self.upconv_in[level](x)
            x = F.interpolate(x, size=(padded_h >> level, padded_w >> level), mode="nearest")
            if level in self.skip_index:
                x = torch.cat([x, features[self.skip_index[level]]], dim=1)
            x = self.upconv_out[level](x)
            if level in self.scales:
                logits = self.heads[str(level)](x)
                logits = logits[..., : max(1, height >> level), : max(1, width >> level)]
                depths[level] = self.to_depth(logits)
        return [depths[s] for s in self.scales]
