"""Animate Anyone sampling: a reference image animated with a pose video, for any length.

`sample.reference=IMG sample.pose_video=POSE.mp4` (a skeleton video in the training convention) writes
`<out>/<reference>_<pose>.mp4`, `<out>/<reference>_<pose>_side_by_side.mp4` (pose | animation) and
`<out>/samples.json` (inputs, outputs, every setting). Longer pose videos are sampled in the model's context
windows (`sample.sampling.context_frames` / `context_overlap`). Layouts: reference `c h w` in [-1, 1], pose
`c t h w` in [0, 1], videos `c t h w` in [-1, 1], mp4 `t h w c` uint8.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from src import atomic_io
from src.inference.common import autocast, load_image, load_module, sampling_overrides

log = logging.getLogger(__name__)


def load_pose_video(
    path: Path, size: tuple[int, int], num_frames: int | None, stride: int
) -> tuple[torch.Tensor, float, list[int]]:
    """Pose mp4 -> (`3 t h w` in [0, 1] at `size`, the sampled frames' fps, their indices in the video).

    Frames 0, stride, 2*stride, ... (the first `num_frames` of them; all when None); shorter-side resize and
    center crop as the training data, with the pose kind of resampling (area / nearest, no blur)."""
    from src.data.caption_video_dataset import center_crop_box
    from src.data.transforms import crop_resize
    from src.data.video_io import decode_mp4, probe_mp4

    if not path.is_file():
        raise FileNotFoundError(
            f"sample.pose_video={path}: no such file (a skeleton video, e.g. written by python -m src.data.extract_poses)."
        )
    if stride < 1:
        raise ValueError(f"sample.pose_stride must be >= 1, got {stride}.")
    data = path.read_bytes()
    info = probe_mp4(data)
    indices = list(range(0, info.num_frames, stride))[: num_frames or None]
    if num_frames and len(indices) < num_frames:
        raise ValueError(
            f"sample.pose_video={path} has {info.num_frames} frames: {num_frames} at stride {stride} do not fit; "
            "lower sample.num_frames / sample.pose_stride or set sample.num_frames=null for the whole video."
        )
    frames = decode_mp4(data, indices)
    box = center_crop_box(frames.shape[1], frames.shape[2], size)
    pose = crop_resize(frames, box, tuple(size), kind="pose").permute(1, 0, 2, 3).contiguous()
    return pose, (info.fps or 8.0) / stride, indices


def read_keypoints(path: Path, key: str) -> tuple[np.ndarray, tuple[int, int]]:
    """A keypoints file -> (`body` array (.., 18, 2|3) in its image's pixels, that image's (height, width)).

    `.npz` with arrays `body` and `size` = (height, width) (what python -m src.data.extract_poses writes beside
    each pose video), or `.json` with "body" and "height"/"width"."""
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path}: no such keypoints file (.npz with body + size, or .json).")
    if path.suffix == ".npz":
        with np.load(path) as data:
            return np.asarray(data["body"], dtype=np.float64), tuple(int(v) for v in data["size"])
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return np.asarray(data["body"], dtype=np.float64), (int(data["height"]), int(data["width"]))
    raise ValueError(f"{key}={path}: keypoints must be a .npz (body, size) or a .json (body, height, width).")


def to_model_frame(points: np.ndarray, source: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y[, score]) in a `source` (h, w) image -> the same points after its center crop + resize to `size`."""
    from src.data.caption_video_dataset import center_crop_box

    box = center_crop_box(source[0], source[1], size)
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] - box.left + 0.5) * size[1] / box.width - 0.5
    out[..., 1] = (out[..., 1] - box.top + 0.5) * size[0] / box.height - 0.5
    return out


def retargeted_pose(
    sample: DictConfig,
    reference_kp: Path | None,
    driving_kp: Path,
    size: tuple[int, int],
    indices: list[int],
    parts: list[str] | tuple[str, ...] = ("body",),
) -> tuple[torch.Tensor | None, str]:
    """(the pose video redrawn from the driving keypoints rescaled to the reference's skeleton, "rescale"), or
    (None, "none") when sample.retarget says none or, unset, when the keypoints of either side are missing.
    Hands and face (`parts`, when the driving file has them) follow their wrist and nose."""
    from src.data.pose_retarget import (
        LEFT_WRIST,
        NOSE,
        RETARGET_MODES,
        RIGHT_WRIST,
        follow_body,
        rescale_pose,
    )
    from src.data.skeleton import draw_openpose_video

    mode = sample.retarget
    if mode is not None and mode not in RETARGET_MODES:
        raise ValueError(f"sample.retarget={mode!r} is not one of {RETARGET_MODES} (or null: rescale when possible).")
    available = reference_kp is not None and reference_kp.is_file() and driving_kp.is_file()
    if mode == "none" or (mode is None and not available):
        return None, "none"
    if not available:
        raise ValueError(
            "sample.retarget=rescale needs keypoints of both: sample.reference_keypoints=FILE (the reference image's "
            f"skeleton) and {driving_kp} (or sample.pose_keypoints=FILE); python -m src.data.extract_poses writes them."
        )
    ref_points, ref_size = read_keypoints(reference_kp, "sample.reference_keypoints")
    drv_points, drv_size = read_keypoints(driving_kp, "sample.pose_keypoints")
    if drv_points.ndim != 3 or max(indices) >= len(drv_points):
        raise ValueError(
            f"{driving_kp}: keypoints {drv_points.shape} do not cover pose frames up to {max(indices)}; they must be "
            "(T, 18, 2|3) with one entry per pose-video frame."
        )
    ref_points = ref_points[0] if ref_points.ndim == 3 else ref_points
    driving = to_model_frame(drv_points[indices], drv_size, size)
    moved = rescale_pose(to_model_frame(ref_points, ref_size, size), driving)
    extra: dict[str, np.ndarray] = {}
    if driving_kp.suffix == ".npz" and ({"hands", "face"} & set(parts)):
        with np.load(driving_kp) as data:
            if "hands" in parts and "hands" in data:
                hands = to_model_frame(data["hands"][indices], drv_size, size)
                extra["hands"] = np.stack([follow_body(driving, moved, hands[:, i], w)
                                           for i, w in enumerate((LEFT_WRIST, RIGHT_WRIST))], axis=1)  # fmt: skip
            if "face" in parts and "face" in data:
                extra["faces"] = follow_body(driving, moved, to_model_frame(data["face"][indices], drv_size, size), NOSE)
    frames = draw_openpose_video(moved, *size, **extra)
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(255.0), "rescale"


def extract_driving_poses(cfg: DictConfig, reference_path: Path, out: Path) -> tuple[Path, Path | None, list[str]]:
    """sample.driving_video -> (its pose video, the reference's keypoint file or None, the drawn parts), written
    under <out>/poses/ with the extractor of python -m src.data.extract_poses (sample.pose_extractor)."""
    from omegaconf import OmegaConf
    from PIL import Image

    from src.data.dwpose import DWPose, DWPoseConfig, keypoint_arrays, save_keypoints
    from src.data.extract_poses import extract_video

    sample = cfg.sample
    settings = OmegaConf.to_container(sample.pose_extractor, resolve=True)
    settings["parts"] = list(settings.get("parts") or cfg.data.get("pose_parts") or ("body", "hands", "face"))
    estimator = DWPose(DWPoseConfig(**settings), key=lambda name: f"sample.pose_extractor.{name}")
    driving = Path(sample.driving_video)
    if not driving.is_file():
        raise FileNotFoundError(f"sample.driving_video={driving}: no such file (a raw video of the motion, mp4).")
    pose_path = out / "poses" / f"{driving.stem}.mp4"
    record = extract_video(estimator, driving, pose_path, min_detected=0.0)
    if record["status"] != "done":
        raise ValueError(f"sample.driving_video={driving}: no poses extracted ({record['reason']}).")
    log.info("extracted %d driving poses (%d frames without a person) into %s", record["frames"],
             record["frames_without_person"], pose_path)  # fmt: skip
    if sample.reference_keypoints:
        return pose_path, Path(sample.reference_keypoints), settings["parts"]
    image = np.asarray(Image.open(reference_path).convert("RGB"))
    person, people = estimator(image)
    if person is None:
        log.warning("no person detected in sample.reference=%s: the driving skeleton is not retargeted", reference_path)
        return pose_path, None, settings["parts"]
    reference_kp = save_keypoints(
        out / "poses" / f"{reference_path.stem}_keypoints.npz", keypoint_arrays([person], [people], image.shape[:2], 0.0)
    )
    return pose_path, reference_kp, settings["parts"]


def run(cfg: DictConfig) -> list[dict]:
    """Animate sample.reference with sample.pose_video; returns the records written to samples.json."""
    from src.data.video_io import write_mp4
    from src.trainers.callbacks import side_by_side, to_uint8_frames

    sample = cfg.sample
    if sample.reference is None or (sample.pose_video is None) == (sample.get("driving_video") is None):
        raise ValueError(
            "Animate Anyone sampling needs sample.reference=IMAGE and one of sample.pose_video=POSE.mp4 (a skeleton "
            "video) or sample.driving_video=RAW.mp4 (poses extracted first)."
        )
    reference_path = Path(sample.reference)
    out = Path(sample.out)
    loaded = load_module(cfg, default_stage="temporal")
    module, device = loaded.module, loaded.device
    size = tuple(sample.size or loaded.stage_cfg.data.size)
    reference = load_image(reference_path, size, key="sample.reference")[None].to(device)
    reference_kp = Path(sample.reference_keypoints) if sample.reference_keypoints else None
    parts: list[str] = ["body"]
    if sample.get("driving_video") is not None:
        pose_path, reference_kp, parts = extract_driving_poses(cfg, reference_path, out)
    else:
        pose_path = Path(sample.pose_video)
    driving_kp = Path(sample.pose_keypoints) if sample.pose_keypoints else pose_path.with_suffix(".npz")
    pose, fps, indices = load_pose_video(pose_path, size, sample.num_frames, int(sample.pose_stride))
    redrawn, retarget = retargeted_pose(sample, reference_kp, driving_kp, size, indices, parts)
    pose = pose if redrawn is None else redrawn
    overrides = sampling_overrides(cfg)
    settings = asdict(module.sampling_config(**overrides))
    log.info("animating %s with %d pose frames (%s)", reference_path.name, pose.shape[1], settings)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    with torch.no_grad(), autocast(cfg, device):
        video = module.animate(reference, pose[None].to(device), generator=generator, progress=True, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{reference_path.stem}_{pose_path.stem}"
    frames = to_uint8_frames(video[0].float().cpu())
    target = write_mp4(out / f"{name}.mp4", frames, fps=fps)
    both = write_mp4(
        out / f"{name}_side_by_side.mp4", side_by_side(to_uint8_frames(pose, (0.0, 1.0)), frames), fps=fps
    )
    windows = module.context_windows(module.sampling_config(**overrides), pose.shape[1])
    record = {
        "reference": str(reference_path),
        "pose_video": str(pose_path),
        "driving_video": sample.get("driving_video"),
        "reference_keypoints": None if reference_kp is None else str(reference_kp),
        "video": str(target),
        "side_by_side": str(both),
        "num_frames": int(pose.shape[1]),
        "windows": None if windows is None else [w.tolist() for w in windows.windows(pose.shape[1])],
    }
    meta = {
        "experiment": cfg.run_name,
        "stage": loaded.stage,
        "weights": loaded.weights,
        # where the net's starting weights came from before sample.weights (model.net.init: pretrained | moore)
        "net_init": OmegaConf.select(loaded.stage_cfg, "model.net.init"),
        "size": list(size),
        "pose_stride": int(sample.pose_stride),
        "retarget": retarget,
        "fps": fps,
        "sampling": settings,
        "seed": int(cfg.seed),
    }
    atomic_io.write_json(out / "samples.json", {"settings": meta, "videos": [record]})
    return [record]
