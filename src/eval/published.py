"""Published numbers the benchmark report prints beside ours, per protocol (keys = conf/eval/*.yaml names).

Each row: method, metric values (names as in metrics.json), the source table, and whether the number was
checked in a primary source (`verified`) or comes from a recollection or slides (see shared research notes:
research/dynamicrafter.md section 4, research/animate_anyone.md section 4, research/metrics.md section 4).
"""

from __future__ import annotations

from typing import Any

PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "dynamicrafter_ucf101": [
        {"method": "DynamiCrafter", "values": {"fvd": 429.23, "kvd": 62.47, "pic": 0.6078},
         "source": "DynamiCrafter paper/slides, zero-shot UCF-101 (as quoted; not checked in the PDF)", "verified": False},
        {"method": "Pix2Gif", "values": {"fvd": 527.06, "pic": 0.6307},
         "source": "Pix2Gif (2024), DynamiCrafter's sampling", "verified": False},
        {"method": "I2VGen-XL (in Pix2Gif)", "values": {"fvd": 563.12, "pic": 0.6329},
         "source": "Pix2Gif (2024) comparison table", "verified": False},
        {"method": "DynamiCrafter-512 (user reproduction, fs=3)", "values": {"fvd": 434.60},
         "source": "thu-ml/cond-image-leakage issue #11", "verified": True},
    ],
    "dynamicrafter_msrvtt": [
        {"method": "DynamiCrafter", "values": {"fvd": 234.66, "kvd": 13.74, "pic": 0.5803},
         "source": "DynamiCrafter paper/slides, zero-shot MSR-VTT (as quoted; not checked in the PDF)", "verified": False},
        {"method": "Pix2Gif", "values": {"fvd": 271.63, "pic": 0.6135},
         "source": "Pix2Gif (2024), DynamiCrafter's sampling", "verified": False},
        {"method": "I2VGen-XL (in Pix2Gif)", "values": {"fvd": 278.62, "pic": 0.6018},
         "source": "Pix2Gif (2024) comparison table", "verified": False},
    ],
    "animate_anyone_ubc": [
        {"method": "MRAA", "values": {"ssim": 0.749, "lpips": 0.212, "fvd": 253.6},
         "source": "Animate Anyone Table 1 (recalled, unverified)", "verified": False},
        {"method": "TPSMM", "values": {"ssim": 0.746, "lpips": 0.213, "fvd": 247.5},
         "source": "Animate Anyone Table 1 (recalled, unverified)", "verified": False},
        {"method": "BDMM", "values": {"ssim": 0.918, "psnr": 24.07, "lpips": 0.048, "fvd": 148.3},
         "source": "Animate Anyone Table 1 (recalled, unverified)", "verified": False},
        {"method": "DreamPose", "values": {"ssim": 0.885, "lpips": 0.068, "fvd": 238.7},
         "source": "Animate Anyone Table 1 (recalled, unverified)", "verified": False},
        {"method": "DreamPose (no sample fine-tuning)", "values": {"ssim": 0.879, "psnr": 34.75, "lpips": 0.111, "fvd": 279.6},
         "source": "Animate Anyone Table 1 (recalled, unverified)", "verified": False},
        {"method": "Animate Anyone", "values": {"ssim": 0.931, "psnr": 38.49, "lpips": 0.044, "fvd": 81.6},
         "source": "Animate Anyone Table 1 (recalled, unverified; PSNR*)", "verified": False},
    ],
    "animate_anyone_tiktok": [
        {"method": "MRAA", "values": {"ssim": 0.672, "psnr": 29.39, "fvd": 284.82},
         "source": "Animate Anyone 2 (arXiv 2502.06145) Table 1 (LPIPS printed as 0.672, a likely typo, left out)",
         "verified": True},
        {"method": "DisCo", "values": {"ssim": 0.668, "psnr": 29.03, "lpips": 0.292, "fvd": 292.80},
         "source": "Animate Anyone 2 Table 1", "verified": True},
        {"method": "MagicAnimate", "values": {"ssim": 0.714, "psnr": 29.16, "lpips": 0.239, "fvd": 179.07},
         "source": "Animate Anyone 2 Table 1", "verified": True},
        {"method": "Animate Anyone", "values": {"ssim": 0.718, "psnr": 29.56, "lpips": 0.285, "fvd": 171.90},
         "source": "Animate Anyone 2 Table 1", "verified": True},
        {"method": "Champ*", "values": {"ssim": 0.802, "psnr": 29.91, "lpips": 0.234, "fvd": 160.82},
         "source": "Animate Anyone 2 Table 1 (* extra training video)", "verified": True},
        {"method": "UniAnimate*", "values": {"ssim": 0.811, "psnr": 30.77, "lpips": 0.231, "fvd": 148.06},
         "source": "Animate Anyone 2 Table 1 (* extra training video)", "verified": True},
        {"method": "Animate Anyone 2", "values": {"ssim": 0.778, "psnr": 29.82, "lpips": 0.248, "fvd": 158.97},
         "source": "Animate Anyone 2 Table 1", "verified": True},
    ],
    "rerender": [
        {"method": "vid2vid-zero", "values": {"fram_acc": 0.862, "tem_con": 0.975, "pixel_mse": 0.098},
         "source": "Rerender-A-Video Table 2 (key frames, K=5)", "verified": True},
        {"method": "FateZero", "values": {"fram_acc": 0.556, "tem_con": 0.979, "pixel_mse": 0.085},
         "source": "Rerender-A-Video Table 2", "verified": True},
        {"method": "Pix2Video", "values": {"fram_acc": 0.995, "tem_con": 0.953, "pixel_mse": 0.216},
         "source": "Rerender-A-Video Table 2", "verified": True},
        {"method": "Text2Video-Zero", "values": {"fram_acc": 0.963, "tem_con": 0.983, "pixel_mse": 0.084},
         "source": "Rerender-A-Video Table 2", "verified": True},
        {"method": "Rerender-A-Video", "values": {"fram_acc": 0.979, "tem_con": 0.983, "pixel_mse": 0.069},
         "source": "Rerender-A-Video Table 2", "verified": True},
    ],
}
# Caveat printed under each protocol's table: why our numbers may not be comparable one to one.
CAVEATS: dict[str, str] = {
    "dynamicrafter_ucf101": "FVD depends on clip sampling, resize and sample count; the paper's resolution is unverified.",
    "dynamicrafter_msrvtt": "FVD depends on clip sampling, resize and sample count; the paper's resolution is unverified.",
    "animate_anyone_ubc": "Published UBC values are recalled, not checked; PSNR* is the corrected float PSNR.",
    "animate_anyone_tiktok": "Published TikTok PSNR (~29) comes from DisCo's uint8-overflow PSNR; ours is the corrected value (~17 expected).",
    "rerender": "Pixel-MSE's flow model and scale are not stated in the paper; ours uses RAFT on [0, 1] RGB.",
}
