"""The shared denoising loop: hooks (latent before a step, x0, latent after), guidance branches, context windows
against hand computations, and the seam score."""

from __future__ import annotations

import pytest
import torch

from src.eval.animation_scores import boundary_inside_ratio
from src.models.dynamicrafter.schedule import DynamiCrafterSchedule
from src.models.sampling import ContextWindows, Guidance, SamplingHook, denoise_loop
from src.trainers.diffusion import NoiseSchedule


def half(x, t, frames):
    return 0.5 * x


class Recorder(SamplingHook):
    def __init__(self):
        self.seen = []

    def before_step(self, state, x):
        self.seen.append((state.index, state.fraction, state.timestep, state.direction))
        return x


class ShiftX0(SamplingHook):
    """Adds 1 to x0 from `fraction` on (a stand-in for Rerender's AdaIN / latent fusion of x0)."""

    def __init__(self, fraction):
        self.fraction = fraction

    def on_x0(self, state, x0):
        return x0 + 1.0 if state.fraction >= self.fraction else x0


def test_hooks_see_every_step_and_edit_x0_as_the_update_rule_says():
    schedule = DynamiCrafterSchedule().ddim(3, eta=0.0)
    noise = torch.randn(1, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    recorder = Recorder()
    plain = denoise_loop(half, noise, schedule, hooks=[recorder])
    assert [(s[0], s[1]) for s in recorder.seen] == [(0, 0.0), (1, 1 / 3), (2, 2 / 3)]
    assert [s[2] for s in recorder.seen] == schedule.timesteps
    assert recorder.seen[0][3] is None and all(torch.is_tensor(s[3]) for s in recorder.seen[1:])
    # x0 + 1 at the last step only: x_end = sqrt(a_end) (x0 + 1) + sqrt(1 - a_end) eps, eps unchanged
    shifted = denoise_loop(half, noise, schedule, hooks=[ShiftX0(2 / 3)])
    a_end = float(schedule.alphas_cumprod[0])
    torch.testing.assert_close(shifted - plain, torch.full_like(plain, a_end**0.5), rtol=0, atol=1e-5)


def test_before_and_after_step_hooks_replace_the_latent():
    schedule = DynamiCrafterSchedule().ddim(4, eta=0.0)
    noise = torch.randn(1, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    class Restart(SamplingHook):
        def before_step(self, state, x):
            return torch.zeros_like(x) if state.index == 0 else x

    class Freeze(SamplingHook):
        def after_step(self, state, x):
            return x if state.index < 2 else x * 0 + 7.0

    torch.testing.assert_close(
        denoise_loop(half, noise, schedule, hooks=[Restart()]), denoise_loop(half, torch.zeros_like(noise), schedule)
    )
    assert torch.all(denoise_loop(half, noise, schedule, hooks=[Freeze()]) == 7.0)


def test_a_late_start_equals_replacing_the_latent_at_that_step_and_keeps_the_step_numbering():
    """SDEdit: start_step=s from x_s is the full loop with x replaced by x_s before step s (as the official
    Rerender runs all steps and re-noises at step s), and hooks see the full schedule's indices."""
    schedule = DynamiCrafterSchedule().ddim(6, eta=0.0)
    g = torch.Generator().manual_seed(0)
    noise, x_s = torch.randn(1, 2, 1, 4, 4, generator=g), torch.randn(1, 2, 1, 4, 4, generator=g)

    class ReplaceAt(SamplingHook):
        def before_step(self, state, x):
            return x_s if state.index == 2 else x

    full = denoise_loop(half, noise, schedule, hooks=[ReplaceAt()])
    recorder = Recorder()
    late = denoise_loop(half, x_s, schedule, hooks=[recorder], start_step=2)
    torch.testing.assert_close(late, full, rtol=0, atol=0)
    assert [(s[0], s[1]) for s in recorder.seen] == [(i, i / 6) for i in range(2, 6)]
    with pytest.raises(ValueError, match="start_step=6 is outside"):
        denoise_loop(half, x_s, schedule, start_step=6)


def test_guidance_branches_are_stacked_cond_image_uncond():
    calls = []

    def model(x, t, frames):
        calls.append(x.shape[0])
        k = x.shape[0] // 2
        return torch.cat([torch.full_like(x[:1], float(i)) for i in range(k) for _ in range(2)])

    noise = torch.zeros(2, 1, 2, 2, 2)
    schedule = DynamiCrafterSchedule(prediction_type="sample", rescale_betas_zero_snr=True,
                                     timestep_spacing="uniform_trailing").ddim(1, eta=0.0)  # fmt: skip
    # x0 prediction, one step from zero noise: the output is sqrt(a_end) * guided x0
    a_end = float(schedule.alphas_cumprod[0]) ** 0.5
    out = denoise_loop(model, noise, schedule, Guidance(scale=3.0, image_scale=2.0))
    assert calls == [6]  # 3 branches x batch 2
    # cond = 0, image = 1, uncond = 2: u + 2 (i - u) + 3 (c - i) = 2 - 2 - 3 = -3
    torch.testing.assert_close(out, torch.full_like(out, -3.0 * a_end))
    calls.clear()
    denoise_loop(model, noise, schedule, Guidance(scale=1.0))
    assert calls == [2]  # no unconditional branch at scale 1


def test_context_windows_layout_and_averaging():
    windows = ContextWindows(frames=4, overlap=2)
    assert [w.tolist() for w in windows.windows(9)] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [5, 6, 7, 8]]
    assert [w.tolist() for w in ContextWindows(24, 4).windows(72)][-1] == list(range(48, 72))
    assert len(ContextWindows(24, 0).windows(72)) == 3
    assert [w.tolist() for w in windows.windows(3)] == [[0, 1, 2]]
    assert windows.boundaries(9) == [2, 4, 5, 6, 8]
    assert ContextWindows(4, 0).boundaries(8) == [4]
    with pytest.raises(ValueError, match="context_overlap"):
        ContextWindows(4, 4)
    # each window's prediction is its first frame index: the mean per frame is over the covering windows
    x = torch.zeros(1, 1, 9, 1, 1)
    out = windows.apply(lambda xw, frames: torch.full_like(xw, float(frames[0])), x)
    torch.testing.assert_close(out.flatten(), torch.tensor([0, 0, 1, 1, 3, 11 / 3, 4.5, 4.5, 5]))


def test_windows_covering_the_clip_once_equal_one_window_sampling_for_frame_independent_models():
    schedule = NoiseSchedule(prediction_type="v_prediction").ddim(5, eta=1.0)
    noise = torch.randn(2, 3, 8, 4, 4, generator=torch.Generator().manual_seed(0))

    def per_frame(x, t, frames):  # depends on the frame's own content and index only
        return torch.tanh(x) * (1 + frames.view(1, 1, -1, 1, 1).float() / 10)

    def run(windows):
        return denoise_loop(per_frame, noise, schedule, windows=windows, generator=torch.Generator().manual_seed(1))

    whole = run(None)
    assert torch.equal(run(ContextWindows(8)), whole)
    torch.testing.assert_close(run(ContextWindows(4, 0)), whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(run(ContextWindows(3, 1)), whole, rtol=0, atol=1e-6)


def test_boundary_inside_ratio_against_a_hand_computation():
    video = torch.zeros(1, 3, 5, 2, 2)
    for f, value in enumerate([0.0, 0.1, 0.2, 0.8, 0.9]):  # [-1, 1] scale: steps 0.05 inside, 0.3 at frame 3
        video[:, :, f] = value
    torch.testing.assert_close(boundary_inside_ratio(video, [3]), torch.tensor([0.3 / 0.05]))
    with pytest.raises(ValueError, match="boundaries"):
        boundary_inside_ratio(video, [])
