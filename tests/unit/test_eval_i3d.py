"""I3D: output shapes, the shortest clip, preprocessing, both loading paths (state dict and a scripted
stand-in for StyleGAN-V's TorchScript file), and the published FVD test vectors when real weights exist."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.eval.fvd import FrechetVideoDistance
from src.eval.i3d import (
    I3DFeatureExtractor,
    InceptionI3d,
    load_i3d_extractor,
    min_frames_for_i3d,
    preprocess_for_i3d,
    squash_tf1_bilinear,
)


@pytest.fixture(scope="module")
def random_i3d() -> InceptionI3d:
    torch.manual_seed(0)
    net = InceptionI3d()
    for module in net.modules():  # non-trivial BN statistics, so a wrong load would show
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_i3d_output_shape_and_min_frames(random_i3d, tmp_path):
    assert min_frames_for_i3d() == 9
    assert sum(p.numel() for p in random_i3d.parameters()) == pytest.approx(12.7e6, rel=0.01)
    # state dict path: TATS' file has no num_batches_tracked entries; strict load must still work
    state = {k: v for k, v in random_i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(state, path)
    extractor = load_i3d_extractor(path)
    assert isinstance(extractor.network, InceptionI3d) and not extractor.torchscript
    for key, value in random_i3d.state_dict().items():
        assert torch.equal(extractor.network.state_dict()[key], value), key
    videos = torch.randint(0, 256, (1, 9, 3, 40, 56), dtype=torch.uint8).float() / 255
    feats = extractor(videos)
    assert feats.shape == (1, 400) and torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="at least 9 frames"):
        extractor(videos[:, :8])


def test_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="Inception-I3D"):
        load_i3d_extractor(path)


class ScriptedI3DStandIn(nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt; refuses its internal resize/rescale."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ):
        if rescale or resize or not return_features:
            raise RuntimeError("the extractor must call rescale=False, resize=False, return_features=True")
        return self.proj(x.mean(dim=(2, 3, 4)))


@pytest.mark.filterwarnings("ignore:`torch.jit")  # the published file is TorchScript; loading it needs jit
def test_torchscript_loading_path(tmp_path):
    torch.manual_seed(1)
    stand_in = ScriptedI3DStandIn()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(stand_in), str(path))
    extractor = load_i3d_extractor(path)
    assert extractor.torchscript
    videos = torch.rand(2, 10, 3, 16, 24)
    expected = stand_in(preprocess_for_i3d(videos), rescale=False, resize=False, return_features=True)
    torch.testing.assert_close(extractor(videos), expected)


def test_preprocessing_resizes_every_frame_and_scales_to_unit_range():
    videos = torch.rand(2, 3, 3, 10, 30)
    out = preprocess_for_i3d(videos, "short_side_center_crop")
    assert out.shape == (2, 3, 3, 224, 224)
    # short side 10 -> 224, long side ceil(30 * 22.4) = 672, then the centre 224 columns
    wide = F.interpolate(videos[1, 2][None], size=(224, 672), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[1, :, 2], wide[0, :, :, 224:448] * 2 - 1)
    assert preprocess_for_i3d(videos).shape == (2, 3, 3, 224, 224)
    assert preprocess_for_i3d(torch.ones(1, 2, 3, 8, 8)).eq(1).all()
    assert preprocess_for_i3d(torch.zeros(1, 2, 3, 8, 8)).eq(-1).all()


def test_tf1_bilinear_matches_legacy_tensorflow_mapping():
    # TF1 resize_bilinear (align_corners=False, no half-pixel centers): source = dst * in / out
    row = torch.tensor([[[[0.0, 10.0]]]])  # 1x2 image
    out = squash_tf1_bilinear(row.expand(1, 1, 2, 2).contiguous(), 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))


def test_extractor_stays_in_eval_mode():
    extractor = I3DFeatureExtractor(InceptionI3d())
    extractor.train()
    assert not extractor.network.training


# --- published test vectors (need the real files; skipped otherwise) --------------------------------------
_WEIGHTS_DIR = Path(os.environ.get("I2V_WEIGHTS_DIR", "~/.cache/i2v-weights")).expanduser()
_STATE_DICT = Path(os.environ.get("I3D_WEIGHTS", _WEIGHTS_DIR / "i3d_pretrained_400.pt"))
_TORCHSCRIPT = Path(os.environ.get("I3D_TORCHSCRIPT", _WEIGHTS_DIR / "i3d_torchscript.pt"))


@pytest.mark.parametrize(
    "path,expected",
    [
        # JunyaoHu/common_metrics_on_video_quality (StyleGAN-V TorchScript): 151.2565, "may fluctuate around 1"
        pytest.param(_TORCHSCRIPT, 151.2565, id="torchscript"),
        # the TF-1.15 reference on the same videos: 151.39244 (TF-Hub weights, which the state dict converts)
        pytest.param(_STATE_DICT, 151.39244, id="state_dict"),
    ],
)
def test_published_fvd_zeros_vs_ones(path, expected):
    if not path.is_file():
        pytest.skip(
            f"real I3D weights not found at {path} (set I3D_WEIGHTS / I3D_TORCHSCRIPT or I2V_WEIGHTS_DIR)"
        )
    metric = FrechetVideoDistance("i3d", weights_path=path, num_frames=None)
    metric.update(torch.zeros(8, 30, 3, 64, 64), real=True)
    metric.update(torch.ones(8, 30, 3, 64, 64), real=False)
    assert float(metric.compute()) == pytest.approx(expected, abs=1.0)
