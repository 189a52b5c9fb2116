"""DWPose whole-body poses of video frames: the detector + pose model (src.data.dwpose_onnx), one person per
frame, the keypoint file written beside each pose video, and its drawing with the one skeleton drawing.

Per frame (as Moore-AnimateAnyone's extraction): the frame is resized so its short side is `detect_resolution`
(rounded to multiples of 64; 0 keeps it), every detected person gets 133 COCO-WholeBody keypoints, and the person
with the highest mean OpenPose-18 score is kept. Keypoint files (`.npz`, source-video pixels, x y score):
`wholebody` (T, 133, 3) COCO-WholeBody order, `body` (T, 18, 3) OpenPose order (neck = mean of the shoulders,
score 1 when both are above 0.3, else 0, as DWPose), `hands` (T, 2, 21, 3) left then right, `face` (T, 68, 3),
`detected` (T,) bool, `people` (T,) detected persons, `size` (height, width), `fps`. A frame without a person
has all scores 0 (drawn black).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from src import atomic_io
from src.data.dwpose_onnx import PersonDetector, SimccPoseModel, open_session
from src.data.skeleton import SCORE_THRESHOLD, draw_openpose_video

NUM_WHOLEBODY = 133
NECK = -1  # marks the neck, which COCO-WholeBody does not have, in OPENPOSE_FROM_COCO
OPENPOSE_FROM_COCO = (0, NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE = slice(23, 91)
LEFT_HAND, RIGHT_HAND = slice(91, 112), slice(112, 133)
PARTS = ("body", "hands", "face")


@dataclass
class DWPoseConfig:
    """Where the two ONNX files are and how they run (the same fields in every entry point's config)."""

    det_model: str
    pose_model: str
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default (all cores)
    detect_resolution: int = 512  # short side the frame is resized to for both models (Moore: 512); 0 = as is
    det_score: float = 0.3  # person score (objectness x class) threshold, DWPose's
    nms: float = 0.45  # IoU threshold of the detector's NMS
    parts: list[str] = field(default_factory=lambda: list(PARTS))  # what the pose video draws

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(PARTS)
        if unknown or "body" not in self.parts:
            raise ValueError(f"parts must include body and be among {PARTS}, got {list(self.parts)}.")


def cli_key(name: str) -> str:
    return "--" + name.replace("_", "-")


def to_openpose(wholebody: np.ndarray) -> dict[str, np.ndarray]:
    """(..., 133, 3) COCO-WholeBody -> body (..., 18, 3), hands (..., 2, 21, 3), face (..., 68, 3)."""
    wb = np.asarray(wholebody, dtype=np.float32)
    shoulders = wb[..., [5, 6], :]
    neck = shoulders.mean(axis=-2)
    neck[..., 2] = (shoulders[..., 2] > SCORE_THRESHOLD).all(axis=-1)
    body = np.stack([neck if i == NECK else wb[..., i, :] for i in OPENPOSE_FROM_COCO], axis=-2)
    return {"body": body, "hands": np.stack([wb[..., LEFT_HAND, :], wb[..., RIGHT_HAND, :]], axis=-3),
            "face": wb[..., FACE, :]}  # fmt: skip


def detection_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(h, w) the frame is resized to: short side `resolution`, both rounded to multiples of 64 (as Moore)."""
    if resolution <= 0:
        return height, width
    k = resolution / min(height, width)
    return max(64, int(np.round(height * k / 64)) * 64), max(64, int(np.round(width * k / 64)) * 64)


class DWPose:
    """Frame (h w c uint8 RGB) -> (the kept person's (133, 3) keypoints or None, the number of persons)."""

    def __init__(self, config: DWPoseConfig, key: Callable[[str], str] = cli_key) -> None:
        self.config = config
        self.detector = PersonDetector(
            open_session(config.det_model, key("det_model"), config.device, config.threads),
            key("det_model"),
            score_threshold=config.det_score,
            nms_threshold=config.nms,
        )
        self.pose = SimccPoseModel(
            open_session(config.pose_model, key("pose_model"), config.device, config.threads),
            key("pose_model"),
        )

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, int]:
        height, width = frame.shape[:2]
        det_h, det_w = detection_size(height, width, self.config.detect_resolution)
        image = frame
        if (det_h, det_w) != (height, width):
            grow = det_h * det_w > height * width
            image = cv2.resize(
                frame, (det_w, det_h), interpolation=cv2.INTER_LANCZOS4 if grow else cv2.INTER_AREA
            )
        boxes = self.detector(image)
        if not len(boxes):
            return None, 0
        people = []
        for box in boxes:
            points, scores = self.pose(image, box)
            if points.shape[0] != NUM_WHOLEBODY:
                raise ValueError(
                    f"{self.pose.key}: expected {NUM_WHOLEBODY} whole-body keypoints, got {points.shape[0]}."
                )
            people.append(np.concatenate([points, scores[:, None]], axis=1))
        stacked = np.stack(people)
        best = int(to_openpose(stacked)["body"][..., 2].mean(axis=-1).argmax())
        person = stacked[best].copy()
        person[:, 0] *= width / det_w
        person[:, 1] *= height / det_h
        return person, len(people)


def keypoint_arrays(
    frames: list[np.ndarray | None], people: list[int], size: tuple[int, int], fps: float
) -> dict:
    """Per-frame results of DWPose -> the arrays of a keypoint file (module doc)."""
    wholebody = np.stack([np.zeros((NUM_WHOLEBODY, 3), np.float32) if f is None else f for f in frames])
    arrays = {"wholebody": wholebody.astype(np.float32), **to_openpose(wholebody)}
    arrays.update(
        detected=np.array([f is not None for f in frames]),
        people=np.asarray(people, dtype=np.int16),
        size=np.asarray(size, dtype=np.int64),
        fps=np.float64(fps),
    )
    return arrays


def save_keypoints(path: str | Path, arrays: dict) -> Path:
    """Write a keypoint file atomically (np.savez into the temporary name, then renamed)."""
    with atomic_io.atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def draw_pose_frames(arrays: dict, parts: list[str], start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames [start, stop) of a keypoint file drawn as the pose video (t, h, w, 3) uint8, with `parts`."""
    height, width = (int(v) for v in arrays["size"])
    window = slice(start, stop)
    return draw_openpose_video(
        arrays["body"][window],
        height,
        width,
        hands=arrays["hands"][window] if "hands" in parts else None,
        faces=arrays["face"][window] if "face" in parts else None,
    )
