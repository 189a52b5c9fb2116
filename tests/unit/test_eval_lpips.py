"""VideoLPIPS against the `lpips` package on the same (random) backbone weights, both protocols; strict
loading of the local backbone file."""

import lpips
import pytest
import torch
from torchvision import models

from src.eval.lpips_metric import VideoLPIPS
from src.eval.weights import MissingWeightFileError


def _random_state(net: str) -> dict[str, torch.Tensor]:
    """A random torchvision-format checkpoint, made fast: He-scaled conv weights, zero classifier."""
    with torch.device("meta"):
        model = models.alexnet(weights=None) if net == "alex" else models.vgg16(weights=None)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("features") and key.endswith("weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.startswith("features"):
            state[key] = 0.01 * torch.randn(value.shape, generator=gen)
        else:
            state[key] = torch.zeros(value.shape)
    return state


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("lpips_backbones")
    out = {}
    for net in ("alex", "vgg"):
        state = _random_state(net)
        torch.save(state, root / f"{net}.pth")
        out[net] = (root / f"{net}.pth", state)
    return out


_REFERENCES: dict[str, lpips.LPIPS] = {}


def _reference_lpips(net: str, state: dict[str, torch.Tensor]) -> lpips.LPIPS:
    """The `lpips` package with linear heads from its wheel and our random backbone copied in (cached)."""
    if net in _REFERENCES:
        return _REFERENCES[net]
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    for name, module in ref.net.named_children():  # slice1..slice5 hold features[i] under their index
        if name.startswith("slice"):
            for idx, layer in module.named_children():
                for pname, param in layer.named_parameters():
                    param.data.copy_(state[f"features.{idx}.{pname}"])
    _REFERENCES[net] = ref
    return ref


@pytest.mark.parametrize(
    "net,protocol,size",
    [("alex", "standard", 64), ("vgg", "standard", 32), ("vgg", "disco", 32)],
)
def test_matches_lpips_package(backbones, net, protocol, size):
    path, state = backbones[net]
    metric = VideoLPIPS(path, net=net, protocol=protocol)
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 2, 3, size, size, generator=gen)
    preds = (target + 0.2 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    metric.update(preds, target)
    ref = _reference_lpips(net, state)
    with torch.no_grad():
        # the package's normalize=True maps [0, 1] to [-1, 1]; DisCo fed ToTensor() [0, 1] images as they are
        per_frame = ref(preds.flatten(0, 1), target.flatten(0, 1), normalize=protocol == "standard")
    assert float(metric.compute()) == pytest.approx(float(per_frame.mean()), rel=1e-5)


def test_disco_protocol_defaults_to_vgg_and_differs_from_standard(backbones):
    path = backbones["vgg"][0]
    disco, standard = VideoLPIPS(path, protocol="disco"), VideoLPIPS(path, net="vgg")
    assert disco.net_name == "vgg"
    x, y = torch.rand(1, 1, 3, 32, 32), torch.rand(1, 1, 3, 32, 32)
    disco.update(x, y)
    standard.update(x, y)
    assert float(disco.compute()) != pytest.approx(float(standard.compute()), rel=1e-3)
    with pytest.raises(ValueError, match="LPIPS-VGG"):
        VideoLPIPS(path, net="alex", protocol="disco")


def test_backbone_file_is_required_and_loaded_strictly(tmp_path, backbones):
    with pytest.raises(MissingWeightFileError, match=r"eval\.lpips_backbone.*alexnet-owt-7be5be79"):
        VideoLPIPS(tmp_path / "missing.pth")
    vgg_path = backbones["vgg"][0]
    with pytest.raises(ValueError, match="not a torchvision alex checkpoint"):
        VideoLPIPS(vgg_path, net="alex")
