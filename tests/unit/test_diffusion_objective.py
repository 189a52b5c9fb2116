"""The shared diffusion objective and DDIM sampler against diffusers and closed forms."""

import pytest
import torch

from src.models.sampling import combine_guidance, denoise_loop
from src.trainers.diffusion import DiffusionLoss, DiffusionObjective, NoiseSchedule
from src.trainers.sample_draws import SampleDraws


def make(prediction_type="v_prediction", zsnr=True, **loss):
    schedule = NoiseSchedule(
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zsnr,
        timestep_spacing="trailing" if zsnr else "leading",
    )
    return DiffusionObjective(schedule, DiffusionLoss(**loss))


def test_noising_and_velocity_match_diffusers():
    obj = make()
    scheduler = obj.schedule.training_scheduler()
    x0 = torch.randn(3, 4, 2, 8, 8)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(obj.add_noise(x0, noise, t), scheduler.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(obj.target(x0, noise, t), scheduler.get_velocity(x0, noise, t), atol=1e-5, rtol=1e-5)
    assert torch.equal(make("epsilon", zsnr=False).target(x0, noise, t), noise)


def test_zero_terminal_snr():
    obj = make()
    assert obj.alphas_cumprod[-1] < 1e-6 and obj.snr[-1] < 1e-6
    assert make("epsilon", zsnr=False).alphas_cumprod[-1] > 1e-3


def test_zero_snr_requires_trailing_spacing():
    with pytest.raises(ValueError, match="trailing"):
        NoiseSchedule(rescale_betas_zero_snr=True, timestep_spacing="leading")
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule(prediction_type="flow")


def test_min_snr_weights():
    t = torch.tensor([10, 400, 999])
    v = make(snr_gamma=5.0)
    snr = v.snr[t]
    torch.testing.assert_close(v.loss_weights(t), torch.clamp(snr, max=5.0) / (snr + 1))
    e = make("epsilon", zsnr=False, snr_gamma=5.0)
    snr = e.snr[t]
    torch.testing.assert_close(e.loss_weights(t), torch.clamp(snr, max=5.0) / snr)
    assert torch.equal(make().loss_weights(t), torch.ones(3))


def test_noise_offset_is_constant_over_space_and_time():
    torch.manual_seed(0)
    obj = make(noise_offset=0.5)
    x = torch.zeros(2000, 2, 3, 4, 4)
    draws = SampleDraws(0, torch.arange(2000))
    with_offset = obj.sample_noise(x, draws)
    plain = make().sample_noise(x, draws)
    offset = with_offset - plain
    assert torch.allclose(offset, offset[:, :, :1, :1, :1].expand_as(offset), atol=1e-6)
    assert abs(float(offset[:, :, 0, 0, 0].std()) - 0.5) < 0.05


@pytest.mark.parametrize("prediction_type,zsnr", [("v_prediction", True), ("epsilon", False)])
def test_ddim_with_oracle_denoiser_follows_the_exact_trajectory(prediction_type, zsnr):
    """With a delta data distribution the ideal prediction is known in closed form; DDIM must land on x0."""
    obj = make(prediction_type, zsnr)
    x0 = torch.randn(2, 4, 3, 8, 8)
    ac = obj.alphas_cumprod.double()

    def oracle(x, t):
        a = ac[t].view(-1, 1, 1, 1, 1)
        eps = (x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        if prediction_type == "epsilon":
            return eps.float()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0.double()).float()

    scheduler = obj.schedule.sampling_scheduler()
    scheduler.set_timesteps(10)
    noise = torch.randn_like(x0)
    out = denoise_loop(lambda x, t, frames: oracle(x, t), noise, obj.schedule.ddim(10))
    # Deterministic DDIM keeps the oracle's noise direction: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps for all t,
    # ending at the schedule's first alpha (diffusers' set_alpha_to_one=False, as SD and LDM).
    a_first = ac[int(scheduler.timesteps[0])]
    eps = (noise.double() - a_first.sqrt() * x0.double()) / (1 - a_first).sqrt()
    a_end = ac[0]
    expected = a_end.sqrt() * x0.double() + (1 - a_end).sqrt() * eps
    torch.testing.assert_close(out.double(), expected, atol=2e-4, rtol=2e-4)
    assert (out - x0).abs().max() < 0.2


def test_loss_is_weighted_mse():
    obj = make(snr_gamma=5.0)
    pred, target = torch.randn(4, 3, 1, 4, 4), torch.randn(4, 3, 1, 4, 4)
    t = torch.tensor([1, 100, 500, 900])
    expected = ((pred - target) ** 2).flatten(1).mean(1) * obj.loss_weights(t)
    torch.testing.assert_close(obj.loss(pred, target, t), expected.mean())


def test_cfg_combine():
    cond, uncond = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    torch.testing.assert_close(combine_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(combine_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
    full = combine_guidance(cond, uncond, 5.0, rescale=1.0)
    torch.testing.assert_close(full.flatten(1).std(1), cond.flatten(1).std(1), atol=1e-4, rtol=1e-4)


def test_sample_prediction_targets_x0_with_min_snr_in_x0_units():
    obj = make("sample", snr_gamma=5.0)
    x0, noise = torch.randn(3, 4, 1, 4, 4), torch.randn(3, 4, 1, 4, 4)
    t = torch.tensor([10, 500, 999])
    assert torch.equal(obj.target(x0, noise, t), x0)
    torch.testing.assert_close(obj.loss_weights(t), torch.clamp(obj.snr[t], max=5.0))
    assert obj.loss_weights(torch.tensor([999])).item() < 1e-6  # zero-SNR step gets no weight under Min-SNR


@pytest.mark.parametrize("prediction_type", ["sample"])
def test_ddim_oracle_with_sample_prediction(prediction_type):
    obj = make(prediction_type, True)
    x0 = torch.randn(2, 4, 3, 8, 8)
    out = denoise_loop(lambda x, t, frames: x0.clone(), torch.randn_like(x0), obj.schedule.ddim(10))
    assert (out - x0).abs().max() < 0.2


def test_uniform_timesteps_cover_the_schedule():
    objective = DiffusionObjective(NoiseSchedule(), DiffusionLoss())
    t = objective.sample_timesteps(SampleDraws(0, torch.arange(20000)))
    assert t.min() == 0 and t.max() == 999
    assert abs(t.float().mean().item() - 499.5) < 10


def test_logit_normal_timesteps_shift_towards_high_noise():
    """t/T = sigmoid(N(1, 1)): median at T * sigmoid(1) ~ 731, still inside [0, T), reproducible per sample."""
    objective = DiffusionObjective(NoiseSchedule(), DiffusionLoss(timestep_sampling="logit_normal", logit_mean=1.0))
    draw = lambda: objective.sample_timesteps(SampleDraws(0, torch.arange(20000)))  # noqa: E731
    t = draw()
    assert torch.equal(t, draw())
    assert t.dtype == torch.long and 0 <= t.min() and t.max() <= 999
    assert abs(t.float().median().item() - 731) < 10
    assert (t >= 600).float().mean() > 0.7  # uniform: 0.4


def test_bad_timestep_sampling_is_a_clear_error():
    with pytest.raises(ValueError, match="timestep_sampling"):
        DiffusionLoss(timestep_sampling="beta")
    with pytest.raises(ValueError, match="logit_std"):
        DiffusionLoss(timestep_sampling="logit_normal", logit_std=0.0)
