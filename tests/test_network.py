import pytest
import timm
import torch

from models.network import DepthNet

SMALL_DECODER = (4, 8, 8, 16, 16)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def net() -> DepthNet:
    torch.manual_seed(0)
    return DepthNet("test_convnext", decoder_channels=SMALL_DECODER).eval()


@pytest.mark.parametrize("size", [(32, 48), (64, 96)])
def test_output_shapes_per_scale(net, size):
    h, w = size
    with torch.no_grad():
        out = net(torch.rand(2, 3, h, w))
    assert [tuple(d.shape) for d in out] == [(2, 1, h >> s, w >> s) for s in (0, 1, 2, 3)]


@pytest.mark.parametrize("size", [(33, 47), (17, 29), (50, 70), (5, 3)])
def test_any_input_size(net, size):
    h, w = size
    with torch.no_grad():
        out = net(torch.rand(1, 3, h, w))
    assert [tuple(d.shape[-2:]) for d in out] == [(max(1, h >> s), max(1, w >> s)) for s in (0, 1, 2, 3)]


def test_depth_is_positive_and_within_range():
    torch.manual_seed(0)
    model = DepthNet("test_convnext", decoder_channels=SMALL_DECODER, min_depth=0.5, max_depth=4.0).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 48))
        assert all(((d > 0.5) & (d < 4.0)).all() for d in out)
        # Saturating the heads must hit the bounds exactly: the range is the advertised metric range.
        for bias, bound in ((50.0, 4.0), (-50.0, 0.5)):
            for head in model.heads.values():
                head.weight.zero_()
                head.bias.fill_(bias)
            out = model(torch.rand(2, 3, 32, 48))
            assert all(torch.allclose(d, torch.full_like(d, bound)) for d in out)


def test_custom_scales_order_and_validation():
    model = DepthNet("test_convnext", decoder_channels=SMALL_DECODER, scales=(2, 0)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 48))
    assert [tuple(d.shape[-2:]) for d in out] == [(8, 12), (32, 48)]
    with pytest.raises(ValueError, match="decoder_channels"):
        DepthNet("test_convnext", decoder_channels=(4, 8, 16))
    with pytest.raises(ValueError, match="scales"):
        DepthNet("test_convnext", decoder_channels=SMALL_DECODER, scales=(0, 5))


def test_resnet18_five_levels_with_batchnorm():
    model = DepthNet("resnet18", decoder_channels=SMALL_DECODER)
    assert model.encoder.feature_info.reduction() == [2, 4, 8, 16, 32]
    # resnet has a stride-2 feature, so decoder level 1 must take a skip connection (convnext has none).
    assert 1 in model.skip_index and 0 not in model.skip_index
    before = model.encoder.bn1.running_mean.clone()
    out = model.train()(torch.rand(2, 3, 32, 48))
    assert [tuple(d.shape) for d in out] == [(2, 1, 32 >> s, 48 >> s) for s in (0, 1, 2, 3)]
    assert not torch.equal(before, model.encoder.bn1.running_mean)


def test_encoder_levels_drop_the_deepest_stage(tmp_path):
    full = DepthNet("resnet18", decoder_channels=SMALL_DECODER)
    model = DepthNet("resnet18", decoder_channels=SMALL_DECODER[:4], encoder_levels=4)
    assert model.encoder.feature_info.reduction() == [2, 4, 8, 16] and model.num_levels == 4
    # timm prunes the stage it no longer returns: its weights are not trained, stored or stepped by Adam.
    assert not any(k.startswith("layer4") for k in model.encoder.state_dict())
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters()) / 2
    out = model(torch.rand(2, 3, 48, 64))  # 48 is a multiple of 16, so nothing is padded
    assert [tuple(d.shape) for d in out] == [(2, 1, 48 >> s, 64 >> s) for s in (0, 1, 2, 3)]
    # Weights of the whole classification model still load: the dropped stage's entries are extra.
    path = tmp_path / "resnet18.pth"
    source = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(source, path)
    loaded = DepthNet("resnet18", pretrained_path=path, decoder_channels=SMALL_DECODER[:4], encoder_levels=4)
    assert torch.equal(loaded.encoder.state_dict()["layer3.0.conv1.weight"], source["layer3.0.conv1.weight"])
    with pytest.raises(ValueError, match="stride 16, so the decoder needs 4 decoder_channels"):
        DepthNet("resnet18", decoder_channels=SMALL_DECODER, encoder_levels=4)


def test_input_normalised_with_encoder_statistics():
    model = DepthNet("resnet18", decoder_channels=SMALL_DECODER).eval()
    mean = torch.tensor(model.encoder.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.encoder.pretrained_cfg["std"]).view(1, 3, 1, 1)
    assert not torch.allclose(mean, torch.full_like(mean, 0.5))  # ImageNet stats, not the identity
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        expected = model.encoder((x - mean) / std)
        got = model.encode(x)
    assert all(torch.allclose(a, b) for a, b in zip(got, expected, strict=True))


def test_bottleneck_fn_is_applied_to_deepest_feature(net):
    x = torch.rand(2, 3, 32, 48)
    seen = []

    def zero_bottleneck(feat):
        seen.append(feat.shape)
        return torch.zeros_like(feat)

    with torch.no_grad():
        plain = net(x)
        hooked = net(x, bottleneck_fn=zero_bottleneck)
        identity = net(x, bottleneck_fn=lambda f: f)
    assert seen == [torch.Size([2, net.encoder.feature_info.channels()[-1], 1, 2])]
    assert all(torch.equal(a, b) for a, b in zip(plain, identity, strict=True))
    assert not torch.allclose(plain[0], hooked[0])


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pretrained_path_loads_local_weights(tmp_path, wrap):
    torch.manual_seed(1)
    # A checkpoint of the plain classification model: keys like "stem.0.weight" plus a head to ignore.
    source = timm.create_model("test_convnext", pretrained=False)
    state = source.state_dict()
    assert any(k.startswith("head.") for k in state)
    path = tmp_path / "encoder.pth"
    torch.save(state if wrap is None else {wrap: state}, path)

    torch.manual_seed(2)
    model = DepthNet("test_convnext", pretrained_path=str(path), decoder_channels=SMALL_DECODER)
    assert torch.equal(model.encoder.state_dict()["stem_0.weight"], state["stem.0.weight"])
    assert torch.equal(
        model.encoder.state_dict()["stages_3.blocks.0.mlp.fc2.weight"], state["stages.3.blocks.0.mlp.fc2.weight"]
    )
    fresh = DepthNet("test_convnext", decoder_channels=SMALL_DECODER)
    assert not torch.equal(fresh.encoder.state_dict()["stem_0.weight"], state["stem.0.weight"])


def test_pretrained_path_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        DepthNet("test_convnext", pretrained_path=str(missing), decoder_channels=SMALL_DECODER)

    wrong = tmp_path / "other_arch.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), wrong)
    with pytest.raises(RuntimeError, match="other_arch.pth"):
        DepthNet("test_convnext", pretrained_path=str(wrong), decoder_channels=SMALL_DECODER)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth"):
        DepthNet("test_convnext", pretrained_path=str(garbage), decoder_channels=SMALL_DECODER)


def test_gradients_reach_encoder_and_all_heads():
    model = DepthNet("test_convnext", decoder_channels=SMALL_DECODER)
    out = model(torch.rand(2, 3, 32, 48))
    sum(d.mean() for d in out).backward()
    assert model.encoder.stem_0.weight.grad.abs().sum() > 0
    assert all(h.weight.grad.abs().sum() > 0 for h in model.heads.values())
