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
from tests.conftest import ROOT
from tests.unit.hed_seeded import annotator_picture, seeded_hed_state


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
    state = seeded_hed_state()
    path = tmp_path_factory.mktemp("hed") / "ControlNetHED.pth"
    torch.save(state, path)
    return path, state


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


def test_hed_map_equals_the_official_annotator_output(tmp_path) -> None:
    """tests/data/hed_reference: the annotator's own code (controlnet_aux.hed, run in a scratch environment by
    make_reference.py on the same seeded weights; our state dict loaded strictly into its class) on a 64x128
    picture. Ours, batched on tensors, gives the same 8-bit map."""
    reference = np.load(ROOT / "tests" / "data" / "hed_reference" / "official_hed_map.npy")
    torch.save(seeded_hed_state(), tmp_path / "ControlNetHED.pth")
    picture = torch.from_numpy(annotator_picture()).permute(2, 0, 1).float() / 255
    ours = ControlMapper("hed", hed_checkpoint=tmp_path / "ControlNetHED.pth")(picture[None])[0]
    assert ours.shape == (3, *reference.shape) and torch.equal(ours[0], ours[2])
    levels = (ours[0] * 255).round().to(torch.int16).numpy()
    diff = np.abs(levels - reference.astype(np.int16))
    # a different BLAS may put a rare pixel one level across a truncation boundary
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (diff.max(), (diff > 0).mean())
