"""DynamiCrafter schedule and sampler: betas/targets vs independent formulas and the official buffer values,
DDIM timestep grids, the DDIM update (incl. the dynamic-rescale compensation) against a hand computation,
stochasticity, guidance combination, and `python -m src.sample` writing an mp4."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from src.models.dynamicrafter.schedule import DynamiCrafterSchedule, ddim_timesteps
from src.models.sampling import combine_guidance, denoise_loop, rescale_guidance
from tests.conftest import run_entry, shared_data

MANIFEST = shared_data("dynamicrafter_manifest")


def v_schedule(base: float | None = 0.7) -> DynamiCrafterSchedule:
    return DynamiCrafterSchedule(
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        dynamic_rescale_base=base,
        timestep_spacing="uniform_trailing",
    )


def test_ddim_grids_match_the_release():
    assert ddim_timesteps(1000, 50, "uniform") == list(range(981, 0, -20))
    assert ddim_timesteps(1000, 50, "uniform_trailing") == list(range(999, 0, -20))
    assert ddim_timesteps(1000, 4, "uniform_trailing") == [999, 749, 499, 249]
    with pytest.raises(ValueError, match="timestep_spacing"):
        ddim_timesteps(1000, 10, "leading")


def test_zero_snr_betas_terminal_alpha_bar_is_zero_and_matches_diffusers():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale

    schedule = v_schedule()
    eps = DynamiCrafterSchedule()
    assert float(schedule.alphas_cumprod[-1]) == 0.0
    assert float(eps.alphas_cumprod[-1]) > 1e-3
    # the first alpha_bar is kept by the rescale
    assert math.isclose(float(schedule.alphas_cumprod[0]), float(eps.alphas_cumprod[0]), rel_tol=1e-6)
    linear = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(eps.betas.double(), linear, rtol=1e-6, atol=0)
    torch.testing.assert_close(schedule.betas.double(), diffusers_rescale(linear), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "release, kwargs",
    [
        ("256", {}),
        ("512", dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, dynamic_rescale_base=0.7,
                     timestep_spacing="uniform_trailing")),
        ("1024", dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, dynamic_rescale_base=0.3,
                      timestep_spacing="uniform_trailing")),
    ],
)  # fmt: skip
def test_root_buffers_equal_the_official_values(release, kwargs):
    path = MANIFEST / f"dynamicrafter_{release}.json"
    if not path.is_file():
        pytest.skip("the DynamiCrafter manifest is not available")
    official = json.loads(path.read_text())["buffer_values"]
    ours = DynamiCrafterSchedule(**kwargs).official_root_buffers()
    assert set(ours) == set(official)
    for name, values in official.items():
        expected = torch.tensor(values, dtype=torch.float64)
        got = ours[name].double()
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(got)), name
        torch.testing.assert_close(got[finite], expected[finite], rtol=2e-5, atol=1e-6, msg=name)
    DynamiCrafterSchedule(**kwargs).check_official_root_buffers(
        {k: torch.tensor(v) for k, v in official.items()}, str(path)
    )


def test_schedule_mismatch_with_the_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="scale_arr|schedule buffers"):
        DynamiCrafterSchedule().check_official_root_buffers(v_schedule().official_root_buffers(), "ckpt")
    with pytest.raises(ValueError, match="scale_arr differs"):
        v_schedule(0.7).check_official_root_buffers(v_schedule(0.3).official_root_buffers(), "ckpt")


def test_dynamic_rescale_values_at_steps_0_200_400_and_beyond():
    schedule = v_schedule(0.7)
    scale = schedule.scale_arr
    assert float(scale[0]) == 1.0
    assert math.isclose(float(scale[200]), 1.0 - 0.3 * 200 / 399, rel_tol=1e-6)
    assert float(scale[399]) == pytest.approx(0.7) and float(scale[400]) == pytest.approx(0.7)
    assert float(scale[999]) == pytest.approx(0.7)
    latents = torch.ones(3, 2, 1, 1, 1)
    out = schedule.rescale_latents(latents, torch.tensor([0, 200, 700]))
    torch.testing.assert_close(out.flatten(0, 1)[::2, 0, 0, 0], scale[[0, 200, 700]])
    assert torch.equal(DynamiCrafterSchedule().rescale_latents(latents, torch.tensor([0, 1, 2])), latents)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_targets_and_inversions_against_independent_formulas(prediction_type):
    zero_snr = prediction_type != "epsilon"
    schedule = DynamiCrafterSchedule(
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_snr,
        timestep_spacing="uniform_trailing" if zero_snr else "uniform",
    )
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, 4, 4, generator=gen), torch.randn(4, 3, 2, 4, 4, generator=gen)
    t = torch.tensor([0, 10, 500, 998])
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    if zero_snr:
        s = np.sqrt(np.cumprod(1 - betas))
        s = (s - s[-1]) * s[0] / (s[0] - s[-1])
        alpha_bar = s**2
    else:
        alpha_bar = np.cumprod(1 - betas)
    a = torch.tensor(alpha_bar[t.numpy()], dtype=torch.float32).view(-1, 1, 1, 1, 1)
    noisy = schedule.add_noise(x0, noise, t)
    torch.testing.assert_close(noisy, a.sqrt() * x0 + (1 - a).sqrt() * noise, rtol=1e-5, atol=1e-5)
    expected_target = {"epsilon": noise, "sample": x0, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}
    target = schedule.target(x0, noise, t)
    torch.testing.assert_close(target, expected_target[prediction_type], rtol=1e-5, atol=1e-5)
    ddim = schedule.ddim(1)
    for i, step in enumerate(t.tolist()):
        state = ddim.states()[0]
        state.timestep, state.prev_timestep = step, None
        x0_hat, eps_hat = ddim.predict(noisy[i : i + 1], target[i : i + 1], state)
        torch.testing.assert_close(x0_hat, x0[i : i + 1], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(eps_hat, noise[i : i + 1], rtol=1e-3, atol=1e-3)


def test_ddim_update_with_dynamic_rescale_matches_a_hand_computation():
    schedule = v_schedule(0.7)
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 3, 2, 4, 4, generator=gen)
    v1, v2 = torch.randn(2, *x_t.shape, generator=gen)
    outputs = iter([v1, v2])
    result = denoise_loop(lambda x, t, frames: next(outputs), x_t, schedule.ddim(2, eta=0.0))

    a = schedule.alphas_cumprod.double()
    scale = schedule.scale_arr.double()
    x = x_t.double()
    # step 1: t = 999 -> 499, x0 compensated by scale[499] / scale[999]
    t, t_prev = 999, 499
    x0 = a[t].sqrt() * x - (1 - a[t]).sqrt() * v1.double()
    eps = a[t].sqrt() * v1.double() + (1 - a[t]).sqrt() * x
    x0 = x0 * scale[t_prev] / scale[t]
    x = a[t_prev].sqrt() * x0 + (1 - a[t_prev]).sqrt() * eps
    # step 2: t = 499 -> the end (alpha_bar[0]), no compensation at the last step
    t = 499
    x0 = a[t].sqrt() * x - (1 - a[t]).sqrt() * v2.double()
    eps = a[t].sqrt() * v2.double() + (1 - a[t]).sqrt() * x
    expected = a[0].sqrt() * x0 + (1 - a[0]).sqrt() * eps
    torch.testing.assert_close(result.double(), expected, rtol=1e-4, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_eta1_stochastic():
    schedule = DynamiCrafterSchedule()
    noise = torch.randn(1, 2, 2, 4, 4, generator=torch.Generator().manual_seed(0))

    def denoise(x, t):
        return 0.5 * x

    def run(eta, seed):
        return denoise_loop(
            lambda x, t, frames: denoise(x, t),
            noise,
            schedule.ddim(5, eta=eta),
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(0.0, 1), run(0.0, 2))
    assert torch.equal(run(1.0, 1), run(1.0, 1))
    assert not torch.allclose(run(1.0, 1), run(1.0, 2))


def test_guidance_joint_separate_and_rescale_against_hand_computation():
    gen = torch.Generator().manual_seed(0)
    cond, image_only, uncond = torch.randn(3, 2, 4, 3, 5, 5, generator=gen)
    joint = combine_guidance(cond, uncond, 7.5)
    torch.testing.assert_close(joint, uncond + 7.5 * (cond - uncond))
    separate = combine_guidance(cond, uncond, 7.5, image_only=image_only, image_scale=2.0)
    hand = uncond + 2.0 * (image_only - uncond) + 7.5 * (cond - image_only)
    torch.testing.assert_close(separate, hand)
    # with equal scales the separate form reduces to the joint one
    torch.testing.assert_close(
        combine_guidance(cond, uncond, 3.0, image_only=image_only, image_scale=3.0),
        combine_guidance(cond, uncond, 3.0),
    )
    # guidance rescale: 1.0 gives the conditional output's std per sample, 0.7 a 70/30 mix, 0 nothing
    full = rescale_guidance(joint, cond, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), cond.flatten(1).std(1))
    std_ratio = cond.flatten(1).std(1) / joint.flatten(1).std(1)
    mixed = rescale_guidance(joint, cond, 0.7)
    torch.testing.assert_close(mixed, 0.7 * joint * std_ratio.view(-1, 1, 1, 1, 1) + 0.3 * joint)
    assert torch.equal(rescale_guidance(joint, cond, 0.0), joint)


def test_sample_entry_point_writes_an_mp4(tmp_path):
    from PIL import Image

    from src.data.video_io import decode_mp4

    image = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out"
    run_entry(
        "src.sample",
        "experiment=dynamicrafter_demo",
        f"sample.image={image}",
        "sample.prompt=a red star moves left",
        f"sample.out={out}",
        "sample.sampling.num_steps=2",
        "sample.sampling.guidance_scale=2.0",
        timeout=300,
    )
    video = out / "cat.mp4"
    frames = decode_mp4(video.read_bytes())
    assert frames.shape == (8, 32, 32, 3)
    record = json.loads((out / "samples.json").read_text())
    assert record["videos"][0]["prompt"] == "a red star moves left"
    assert record["settings"]["sampling"]["num_steps"] == 2
