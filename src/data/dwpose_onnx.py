"""DWPose's two ONNX models through onnxruntime: a YOLOX person detector and an RTMPose (SimCC) whole-body model.

Our own thin wrapper, not rtmlib: rtmlib 0.0.16 requires both `opencv-python` and `opencv-contrib-python`, which
would install a second and third `cv2` over this project's `opencv-python-headless` (OpenCV supports one per
environment; the GUI builds also need libGL). The pre/post-processing follows rtmlib 0.0.16's `YOLOX` and
`RTMPose` classes (the DWPose reference code), with DWPose's choices where the two differ:
- detector: the image letterboxed top-left into the model's (h, w) input (scale min(h/H, w/W), bilinear, padded
  with 114), BGR 0-255 float, NCHW; a raw (1, N, 5 + classes) output decoded on the stride 8/16/32 grids
  (xy = (o + grid) * stride, wh = exp(o) * stride, score = objectness * class score); only class 0 (person)
  above `score_threshold` (DWPose: 0.3; rtmlib's 0.7 default and its `det_mode='human'`, which keeps every class,
  are not used), then greedy NMS at IoU `nms_threshold` (0.45, rtmlib's +1-pixel box areas).
- pose model: each box padded by 1.25 and grown to the input's aspect ratio around its centre, warped (bilinear,
  no rotation) into the (h, w) input, BGR normalised with ImageNet mean/std on the 0-255 scale; SimCC outputs
  (1, K, w * 2) and (1, K, h * 2) decoded by argmax / split ratio 2 and mapped back through the box; a point's
  score is min(max_x, max_y) as DWPose and mmpose (rtmlib 0.0.16 averages the two), location -1 when <= 0.
Images are `h w c uint8` RGB here (converted to BGR for the models, as DWPose feeds them); boxes are xyxy pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

DWPOSE_PUBLISHED_AT = (
    "https://huggingface.co/yzd-v/DWPose (yolox_l.onnx: the detector; dw-ll_ucoco_384.onnx: the whole-body "
    "pose model)"
)
POSE_MEAN = (123.675, 116.28, 103.53)
POSE_STD = (58.395, 57.12, 57.375)
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
DETECTOR_STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114


def open_session(path: str | Path, key: str, device: str = "auto", threads: int = 0):
    """An onnxruntime session for `path`; a missing file names it, the config key `key` and where it is published.

    device: auto (CUDA when onnxruntime-gpu provides it, else CPU), cpu, cuda or cuda:N (an error without the CUDA
    provider: onnxruntime silently running on CPU is the known 100x slowdown). threads: intra-op threads, 0 = all.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(
            "DWPose runs on onnxruntime, which is not installed: pip install -e '.[poses]' (CPU) or "
            "pip install -e '.[poses-gpu]' (CUDA; not both)."
        ) from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}={path}: no such ONNX file. DWPose's files are published at {DWPOSE_PUBLISHED_AT}; download "
            f"them once and set {key}=PATH (nothing is downloaded at run time)."
        )
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device.startswith("cuda"):
        if not has_cuda:
            raise RuntimeError(
                f"{key}: device={device} but onnxruntime offers only {available}; install onnxruntime-gpu (instead "
                "of onnxruntime, not beside it) or use device=cpu."
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        providers: list = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"{key}: device must be auto, cpu, cuda or cuda:N, got {device!r}.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    log.info("loaded %s on %s", path, session.get_providers()[0])
    return session


def _input_hw(session, key: str) -> tuple[int, int]:
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(v, int) for v in shape[2:]):
        raise ValueError(f"{key}: expected a model with a fixed (1, 3, H, W) input, got {shape}.")
    return int(shape[2]), int(shape[3])


def _run(session, image: np.ndarray) -> list[np.ndarray]:
    """HWC float32 -> the model's outputs for a batch of one."""
    batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
    return session.run(None, {session.get_inputs()[0].name: batch})


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices of kept boxes (xyxy, areas with the +1 pixel convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou_threshold]
    return keep


class PersonDetector:
    """YOLOX (raw output, NMS outside the model) -> person boxes (N, 4) xyxy in the image's pixels."""

    def __init__(
        self, session, key: str = "det_model", score_threshold: float = 0.3, nms_threshold: float = 0.45
    ) -> None:
        self.session, self.key = session, key
        self.input_hw = _input_hw(session, key)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        grids, strides = [], []
        for stride in DETECTOR_STRIDES:
            gy, gx = np.mgrid[: self.input_hw[0] // stride, : self.input_hw[1] // stride]
            grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            strides.append(np.full((gx.size, 1), stride))
        self.grid, self.strides = np.concatenate(grids), np.concatenate(strides)

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """RGB image -> (the BGR model input, the scale from image to input pixels)."""
        bgr = image[..., ::-1]
        height, width = self.input_hw
        if image.shape[:2] == (height, width):
            return bgr.astype(np.float32), 1.0
        ratio = min(height / image.shape[0], width / image.shape[1])
        size = (int(image.shape[1] * ratio), int(image.shape[0] * ratio))
        padded = np.full((height, width, 3), LETTERBOX_FILL, dtype=np.uint8)
        padded[: size[1], : size[0]] = cv2.resize(
            np.ascontiguousarray(bgr), size, interpolation=cv2.INTER_LINEAR
        )
        return padded.astype(np.float32), ratio

    def __call__(self, image: np.ndarray) -> np.ndarray:
        model_input, ratio = self.letterbox(image)
        raw = _run(self.session, model_input)[0]
        if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] != len(self.grid) or raw.shape[2] < 6:
            raise ValueError(
                f"{self.key}: expected the raw YOLOX output (1, {len(self.grid)}, 5 + classes) for a "
                f"{self.input_hw} input, got {raw.shape} (models with NMS inside are not supported)."
            )
        pred = raw[0].astype(np.float64)
        centre = (pred[:, :2] + self.grid) * self.strides
        size = np.exp(pred[:, 2:4]) * self.strides
        scores = pred[:, 4] * pred[:, 5]  # objectness x person
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / ratio
        keep = scores > self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        return boxes[nms(boxes, scores, self.nms_threshold)] if len(boxes) else np.zeros((0, 4))


class SimccPoseModel:
    """RTMPose-style top-down model: (image, box) -> keypoints (K, 2) in the image's pixels and scores (K,)."""

    def __init__(self, session, key: str = "pose_model") -> None:
        self.session, self.key = session, key
        self.input_hw = _input_hw(session, key)

    def crop(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB image + xyxy box -> (the normalised BGR crop, the box centre, the box size (w, h) it covers)."""
        height, width = self.input_hw
        centre = (box[:2] + box[2:]) / 2
        scale = (box[2:] - box[:2]) * BOX_PADDING
        aspect = width / height
        scale = np.where(
            scale[0] > scale[1] * aspect, [scale[0], scale[0] / aspect], [scale[1] * aspect, scale[1]]
        )
        zoom = width / scale[0]
        warp = np.array(
            [[zoom, 0.0, width / 2 - zoom * centre[0]], [0.0, zoom, height / 2 - zoom * centre[1]]]
        )
        bgr = np.ascontiguousarray(image[..., ::-1])
        crop = cv2.warpAffine(bgr, warp, (width, height), flags=cv2.INTER_LINEAR)
        return (crop - np.array(POSE_MEAN)) / np.array(POSE_STD), centre, scale

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crop, centre, scale = self.crop(image, np.asarray(box, dtype=np.float64))
        outputs = _run(self.session, crop)
        if len(outputs) != 2 or outputs[0].ndim != 3 or outputs[0].shape[:2] != outputs[1].shape[:2]:
            raise ValueError(
                f"{self.key}: expected two SimCC outputs (1, K, {self.input_hw[1] * 2}) and "
                f"(1, K, {self.input_hw[0] * 2}), got {[o.shape for o in outputs]}."
            )
        simcc_x, simcc_y = outputs[0][0], outputs[1][0]
        locs = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=1).astype(np.float64)
        scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1)).astype(np.float64)
        locs[scores <= 0] = -1
        in_crop = locs / SIMCC_SPLIT_RATIO
        keypoints = in_crop / np.array([self.input_hw[1], self.input_hw[0]]) * scale + centre - scale / 2
        return keypoints, scores
