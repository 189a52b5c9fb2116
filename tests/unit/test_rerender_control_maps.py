"""Rerender's ControlNet condition images (src/rerender/control_maps.py, hed.py): batched Canny and HED maps,
(N, 3, H, W) in [0, 1] in and out, and the HED annotator's strict load from a local file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.models.weights import WeightLoadError
from src.rerender.control_maps import ControlMapper, canny_map
from src.rerender.hed import HEDNet


def squares(n: int = 3, size: int = 32, contrast: float = 0.8) -> torch.Tensor:
    """Frames of a bright square on a dark ground, moving one pixel per frame, colour varying per frame."""
    frames = torch.full((n, 3, size, size), 0.1)
    for i in range(n):
        frames[i, :, 8 + i : 20 + i, 10:22] = (
            0.1 + contrast * torch.tensor([1.0, 0.5 + 0.2 * i, 0.3])[:, None, None]
        )
    return frames


def test_canny_is_opencv_on_the_8bit_rgb_frame_and_honours_the_thresholds() -> None:
    frames = squares()
    maps = ControlMapper("canny", canny_low=100, canny_high=200)(frames)
    assert maps.shape == frames.shape and maps.dtype == torch.float32
    assert set(maps.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(maps[:, 0], maps[:, 1]) and torch.equal(maps[:, 0], maps[:, 2])
    for i, frame in enumerate(frames):
        rgb = (frame.permute(1, 2, 0) * 255).round().byte().numpy()
        assert np.array_equal(maps[i, 0].numpy() * 255, cv2.Canny(rgb, 100, 200).astype(np.float32))
    assert maps[:, 0, 8 + np.arange(3), 15].sum() > 0  # the square's top edge is found in every frame
    faint = squares(contrast=0.1)  # a ~26-level step: Sobel ~104, weak only at the official 100/200
    assert canny_map(faint, 20, 40).sum() > 0 and canny_map(faint, 100, 200).sum() == 0


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    torch.manual_seed(0)
    net = HEDNet()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([40.0, 50.0, 60.0]).view(1, 3, 1, 1))
        for conv in net.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0, (2.0 / conv.weight[0].numel()) ** 0.5)
                conv.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("hed") / "ControlNetHED.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def reference_hed(rgb: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The annotator's recipe written out with functional ops and OpenCV's resize, one frame at a time."""
    h = rgb[None] * 255.0 - state["norm"]
    logits = []
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        if block > 1:
            h = F.max_pool2d(h, 2, 2)
        for i in range(convs):
            h = F.relu(
                F.conv2d(
                    h,
                    state[f"block{block}.convs.{i}.weight"],
                    state[f"block{block}.convs.{i}.bias"],
                    padding=1,
                )
            )
        logit = F.conv2d(h, state[f"block{block}.projection.weight"], state[f"block{block}.projection.bias"])
        logits.append(cv2.resize(logit[0, 0].numpy(), rgb.shape[:0:-1], interpolation=cv2.INTER_LINEAR))
    edge = 1 / (1 + np.exp(-np.mean(np.stack(logits, 2), axis=2).astype(np.float64)))
    return torch.from_numpy((edge * 255.0).clip(0, 255).astype(np.uint8).astype(np.float32) / 255.0)


def test_hed_maps_match_the_annotator_recipe_batched(hed_file) -> None:
    path, state = hed_file
    frames = squares(n=3, size=48)
    maps = ControlMapper("hed", hed_checkpoint=path, batch_size=2)(frames)  # 2 + 1 frames per forward
    assert maps.shape == frames.shape and 0 <= maps.min() and maps.max() <= 1
    assert torch.equal(maps[:, 0], maps[:, 2])
    # stored as 8-bit levels (truncated), as the official annotator stores them
    assert torch.equal(maps * 255, (maps * 255).round())
    for i, frame in enumerate(frames):
        diff = (maps[i, 0] - reference_hed(frame, state)).abs()
        # equal here; a different BLAS may flip a rare pixel by one level at a truncation boundary
        assert diff.max() <= 1 / 255 + 1e-6 and (diff > 0).float().mean() < 0.005
    assert maps.std() > 0.01  # the map varies with the picture


def test_hed_loads_strictly_and_names_the_config_key(hed_file, tmp_path) -> None:
    path, state = hed_file
    damaged = {k: v for k, v in state.items() if k != "block3.projection.bias"}
    torch.save(damaged, tmp_path / "ControlNetHED.pth")
    with pytest.raises(WeightLoadError, match=r"block3\.projection\.bias") as err:
        ControlMapper("hed", hed_checkpoint=tmp_path / "ControlNetHED.pth")
    assert "model.control_map.hed_checkpoint" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"model\.control_map\.hed_checkpoint"):
        ControlMapper("hed", hed_checkpoint=tmp_path / "absent.pth")
    ControlMapper("canny", hed_checkpoint=tmp_path / "absent.pth")  # read only for HED


def test_bad_control_settings_fail_early() -> None:
    with pytest.raises(ValueError, match="control_type"):
        ControlMapper("depth")
    with pytest.raises(ValueError, match="canny_low"):
        ControlMapper("canny", canny_low=250, canny_high=200)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ControlMapper("canny")(torch.zeros(3, 8, 8))
