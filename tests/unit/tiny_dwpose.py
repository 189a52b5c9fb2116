"""Tiny stand-ins for DWPose's two ONNX files, exported from torch in the test (no download), with outputs a test
can predict: the detector boxes the bright pixels of the frame, the pose model puts a fixed template in the box.

- detector: input (1, 3, 64, 64) BGR 0-255; raw YOLOX output (1, 84, 7) (strides 8/16/32, 2 classes). Row 80
  (stride 32, cell (0, 0)) holds the box around the pixels brighter than 128 (mean +- sqrt(3 var + 1/4), exact for
  a rectangle) with objectness sigmoid(100 (bright fraction - 0.02)), class person; row 81 a confident box of
  class 1 (must be ignored); the rest score 0.
- pose model: input (1, 3, 64, 48); SimCC outputs (1, 133, 96) and (1, 133, 128) peaking at TEMPLATE (crop pixels)
  with score 0.9 (feet 0.1: below the drawing threshold).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

DET_HW, POSE_HW = (64, 64), (64, 48)
FEET = range(17, 23)


def _template() -> np.ndarray:
    body = [(24, 10), (26, 9), (22, 9), (28, 10), (20, 10), (30, 18), (18, 18), (33, 26), (15, 26), (35, 33),
            (13, 33), (28, 36), (20, 36), (28, 46), (20, 46), (28, 56), (20, 56)]  # fmt: skip
    feet = [(29, 58), (30, 58), (28, 59), (19, 58), (18, 58), (20, 59)]
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = [(24 + round(3 * np.cos(a)), 11 + round(3 * np.sin(a))) for a in angles]

    def hand(wrist: tuple[int, int], direction: int) -> list[tuple[int, int]]:
        points = [wrist]
        for finger in range(5):
            points += [(wrist[0] + direction * (1 + k), wrist[1] + finger - 2 + k) for k in range(4)]
        return points

    points = body + feet + face + hand((35, 33), 1) + hand((13, 33), -1)
    return np.array(points, dtype=np.float64)


TEMPLATE = _template()  # (133, 2) x, y in the 48x64 crop
assert TEMPLATE.shape == (133, 2)


class _Detector(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "other", torch.tensor([1.5, 0.5, 0.0, 0.0, 0.99, 0.0, 0.99])
        )  # class 1: no person

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x.amax(dim=1)[0] > 128).float()  # (64, 64)
        count = mask.sum().clamp(min=1.0)
        ys = torch.arange(DET_HW[0], dtype=torch.float32)[:, None].expand(DET_HW)
        xs = torch.arange(DET_HW[1], dtype=torch.float32)[None, :].expand(DET_HW)
        cx, cy = (mask * xs).sum() / count, (mask * ys).sum() / count
        half_w = torch.sqrt(3 * (mask * (xs - cx) ** 2).sum() / count + 0.25)
        half_h = torch.sqrt(3 * (mask * (ys - cy) ** 2).sum() / count + 0.25)
        objectness = torch.sigmoid(100 * (mask.mean() - 0.02))
        person = torch.stack([cx / 32, cy / 32, torch.log(2 * half_w / 32), torch.log(2 * half_h / 32),
                              objectness, torch.ones(()), torch.zeros(())])  # fmt: skip
        other = self.other + 0 * objectness
        rows = torch.zeros(84, 7) + 0 * objectness
        rows = torch.cat([rows[:80], person[None], other[None], rows[82:]])
        return rows[None]


class _Pose(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        sx, sy = torch.zeros(133, POSE_HW[1] * 2), torch.zeros(133, POSE_HW[0] * 2)
        scores = torch.full((133,), 0.9)
        scores[list(FEET)] = 0.1
        for k, (u, v) in enumerate(TEMPLATE):
            sx[k, int(u * 2)] = scores[k]
            sy[k, int(v * 2)] = scores[k]
        self.register_buffer("sx", sx)
        self.register_buffer("sy", sy)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zero = 0 * x.mean()
        return self.sx[None] + zero, self.sy[None] + zero


def export(module: torch.nn.Module, shape: tuple[int, ...], path: Path, outputs: list[str]) -> Path:
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(shape),), buffer, input_names=["input"], output_names=outputs,
                      dynamo=False)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def write_tiny_dwpose(folder: Path) -> tuple[Path, Path]:
    """(detector.onnx, pose.onnx) in `folder`."""
    det = export(_Detector(), (1, 3, *DET_HW), folder / "det.onnx", ["dets"])
    pose = export(_Pose(), (1, 3, *POSE_HW), folder / "pose.onnx", ["simcc_x", "simcc_y"])
    return det, pose


def expected_keypoints(box: tuple[float, float, float, float]) -> np.ndarray:
    """TEMPLATE mapped into the image through an xyxy box as RTMPose does (padding 1.25, aspect 48:64)."""
    x1, y1, x2, y2 = box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    w, h = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    return TEMPLATE / np.array([POSE_HW[1], POSE_HW[0]]) * np.array([w, h]) + centre - np.array([w, h]) / 2


def dancer_video(num_frames: int = 5, height: int = 48, width: int = 64) -> tuple[np.ndarray, list[tuple]]:
    """A white rectangle moving right 1 px a frame, and its xyxy pixel-edge box per frame."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    boxes = []
    for t in range(num_frames):
        left, top, right, bottom = 20 + t, 8, 35 + t, 39  # inclusive pixel columns / rows
        frames[t, top : bottom + 1, left : right + 1] = 255
        boxes.append((left - 0.5, top - 0.5, right + 0.5, bottom + 0.5))
    return frames, boxes
