"""Animate Anyone at any length: context windows through the shared loop on the tiny seeded model.

72 frames in 24-frame windows give 72 frames where one pass is refused by the motion modules' positional table;
the ReferenceNet runs once per run; with identity motion modules (zero output projection, so frames are
independent) windowed sampling equals one-pass sampling, which checks that each window reads its own frames'
pose features; eta > 0 stays finite on zero-terminal-SNR schedules.
"""

from __future__ import annotations

import pytest
import torch

from tests.unit.sampling_models import aa_inputs, tiny_animate_anyone


@pytest.fixture(scope="module")
def live():
    return tiny_animate_anyone(max_seq_length=32)


def test_72_frames_in_24_frame_windows_give_72_frames_with_one_reference_pass(live):
    reference, pose = aa_inputs(72)
    calls = []
    handle = live.net.reference_unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        video = live.animate(reference, pose, num_steps=2, guidance_scale=2.0, context_frames=24, context_overlap=4)
    finally:
        handle.remove()
    assert video.shape == (1, 3, 72, 16, 16)
    assert torch.isfinite(video).all()
    assert len(calls) == 1  # 4 windows x 2 steps x 2 guidance branches, one ReferenceNet pass
    with pytest.raises(ValueError, match="motion_max_seq_length"):
        live.animate(reference, pose, num_steps=1, context_frames=None)
    with pytest.raises(ValueError, match="context_frames=40 exceeds"):
        live.animate(reference, pose, num_steps=1, context_frames=40)


def test_windows_equal_one_pass_when_frames_are_independent():
    identity_motion = tiny_animate_anyone(max_seq_length=32, live_motion=False)
    reference, pose = aa_inputs(10)

    def run(**windows):
        generator = torch.Generator().manual_seed(0)
        return identity_motion.animate(reference, pose, num_steps=3, guidance_scale=2.0, generator=generator, **windows)

    whole = run(context_frames=10)
    torch.testing.assert_close(run(context_frames=4, context_overlap=2), whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(run(context_frames=3, context_overlap=0), whole, rtol=0, atol=1e-5)


def test_eta_one_on_zero_snr_is_finite_and_guidance_rescale_applies(live):
    """diffusers' DDIM took sqrt(1 - a_prev - sigma^2) of a rounding-negative number at the zero-SNR first step
    with eta 1 (NaN videos); the shared update clamps it at 0 as the LDM sampler does."""
    reference, pose = aa_inputs(4)
    noisy = live.animate(reference, pose, num_steps=3, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(noisy).all()
    plain = live.animate(reference, pose, num_steps=3, guidance_scale=3.0)
    rescaled = live.animate(reference, pose, num_steps=3, guidance_scale=3.0, guidance_rescale=0.7)
    assert not torch.allclose(plain, rescaled)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        live.animate(reference, pose, num_step=3)


def test_heldout_long_clips_report_seam_ratios(tmp_path, live):
    """src.trainers.heldout.evaluate_long_clips on a 12-frame clip in 8-frame windows: scores, the seam ratios of
    the windowed and one-pass videos and of the ground truth, and the side-by-side mp4."""
    from dataclasses import replace

    import numpy as np

    from src.data.heldout_clips import HeldoutClips
    from src.trainers.heldout import evaluate_long_clips

    rng = np.random.default_rng(0)
    video = {
        "key": "clip",
        "frames": (rng.random((14, 16, 16, 3)) * 255).astype(np.uint8),
        "pose": (rng.random((14, 16, 16, 3)) * 255).astype(np.uint8),
    }
    clips = HeldoutClips([video], num_frames=12, stride=1, size=(16, 16), reference_index=0, start_frame=1)
    original = live.sampling
    live.sampling = replace(original, num_steps=2, context_frames=8, context_overlap=2)
    try:
        result = evaluate_long_clips(live, clips, tmp_path)
        live.sampling = replace(live.sampling, context_frames=12)
        with pytest.raises(ValueError, match="one context window"):
            evaluate_long_clips(live, clips, tmp_path)
    finally:
        live.sampling = original
    assert result["boundaries"] == [4, 8]  # windows 0-7 and 4-11
    scores = result["scores"]
    assert {"ssim", "psnr", "seam_ratio", "seam_ratio_one_pass", "seam_ratio_ground_truth"} <= set(scores)
    assert all(np.isfinite(v) and v > 0 for k, v in scores.items() if k.startswith("seam"))
    assert (tmp_path / "clip_long.mp4").is_file()
