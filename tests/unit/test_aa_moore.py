"""Moore-AnimateAnyone's release: strict loading (real-size manifest, meta device) and Moore's own outputs.

tests/data/moore_reference/reference.pt holds the outputs of Moore's model classes (run in a scratch
environment by make_reference.py beside it) on tiny float64 weights drawn by `moore_fake_weights`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.models.moore import MOORE_MOTION_MODULE_KWARGS, build_moore_net, load_moore_net
from src.models.motion import PerFrameGroupNorm
from src.models.weights import WeightLoadError
from tests.conftest import shared_data
from tests.unit.moore_fake_weights import fake_state_dict

# the issue asks for 1e-6; float64 on both sides gives about 1e-15 (a float32 rounding anywhere shows as ~1e-7)
TOL = 1e-10
DATA = Path(__file__).resolve().parents[1] / "data" / "moore_reference" / "reference.pt"
MANIFEST = shared_data("moore_animate_anyone_manifest")


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(DATA, weights_only=False)


@pytest.fixture(scope="module")
def release(reference: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_release(reference, tmp_path_factory.mktemp("moore"))


@pytest.fixture(scope="module")
def spatial_net(reference: dict, release: Path):
    """Stage 1 from the release (motion modules left out, as when fine-tuning stage 1)."""
    return load_moore_net(release, reference["unet_config"], reference["pose_guider"], with_motion_modules=False)


def _write_release(ref: dict, folder: Path, files=("reference_unet", "denoising_unet", "pose_guider", "motion_module")) -> Path:
    """Moore's four files with the reference's keys and the shared fake values (its pe tables copied in)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        shapes = ref["files"][name]
        state = fake_state_dict({k: s for k, s in shapes.items() if not k.endswith("pos_encoder.pe")})
        for key, shape in shapes.items():
            if key.endswith("pos_encoder.pe"):
                state[key] = ref["pos_encoder_pe"][shape[-1]].clone()
        torch.save(state, folder / f"{name}.pth")
    return folder


def _run(net, ref: dict, stage: str, clip_key: str = "clip_embeds", use_reference: bool = True) -> torch.Tensor:
    inputs = ref["inputs"]
    b = inputs["reference_latents"].shape[0]
    with torch.no_grad():
        return net(
            inputs[f"noisy_{stage}"],
            inputs["timesteps"],
            inputs[clip_key],
            inputs["reference_latents"],
            inputs[f"pose_{stage}"].double() / 255.0,
            use_reference=torch.full((b,), use_reference),
        )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_stage1_reproduces_moores_outputs(reference: dict, spatial_net) -> None:
    assert spatial_net.stage == "spatial" and next(spatial_net.parameters()).dtype == torch.float64
    assert _rel(_run(spatial_net, reference, "stage1"), reference["outputs"]["stage1"]) < TOL
    # Moore's unconditional forward: no reference for the batch, its own CLIP input
    uncond = _run(spatial_net, reference, "stage1", "uncond_clip_embeds", use_reference=False)
    assert _rel(uncond, reference["outputs"]["stage1_uncond"]) < TOL


def test_stage2_reproduces_moore_and_diffusers_across_frames_norm_does_not(reference: dict, release: Path) -> None:
    """Per-frame motion-module norm (default) gives Moore's stage 2; diffusers' own norm (the old behaviour) is off."""
    # our default motion-module kwargs are what make_reference.py read from Moore's inference_v2.yaml
    assert reference["motion_module_kwargs"] == MOORE_MOTION_MODULE_KWARGS
    net = load_moore_net(release, reference["unet_config"], reference["pose_guider"])
    assert net.stage == "temporal"
    assert _rel(_run(net, reference, "stage2"), reference["outputs"]["stage2"]) < TOL
    norms = [m for m in net.denoising_unet.modules() if isinstance(m, PerFrameGroupNorm)]
    assert len(norms) == 11  # down 2 + 2, mid 1, up 3 + 3
    for name, module in list(net.denoising_unet.named_modules()):
        if isinstance(module, PerFrameGroupNorm):
            parent = net.denoising_unet.get_submodule(name.rsplit(".", 1)[0])
            plain = torch.nn.GroupNorm(module.num_groups, module.num_channels, module.eps).double()
            plain.weight, plain.bias = module.weight, module.bias
            parent.norm = plain
    assert _rel(_run(net, reference, "stage2"), reference["outputs"]["stage2"]) > 1e-3


def test_fp16_bank_matches_moores_default_bank(reference: dict, spatial_net) -> None:
    spatial_net.bank.dtype = torch.float16
    try:
        out = _run(spatial_net, reference, "stage1")
    finally:
        spatial_net.bank.dtype = None
    assert _rel(out, reference["outputs"]["stage1_fp16_bank"]) < TOL
    assert _rel(out, reference["outputs"]["stage1"]) > 1e-6  # float16 rounding moves it by about 1e-4


def test_missing_and_unexpected_keys_are_named(reference: dict, tmp_path: Path) -> None:
    folder = _write_release(reference, tmp_path, files=("reference_unet", "denoising_unet", "pose_guider"))
    state = torch.load(folder / "reference_unet.pth")
    state["conv_out.weight"] = torch.zeros(4, 32, 3, 3, dtype=torch.float64)  # an SD UNet's head, which Moore's lacks
    del state["conv_in.bias"]
    torch.save(state, folder / "reference_unet.pth")
    with pytest.raises(WeightLoadError, match=r"reference_unet\.pth[\s\S]*missing keys: conv_in\.bias[\s\S]*unexpected keys: conv_out\.weight"):
        load_moore_net(folder, reference["unet_config"], reference["pose_guider"])


def _manifest_state(name: str) -> dict[str, torch.Tensor]:
    keys = json.loads((MANIFEST / f"{name}.json").read_text())["keys"]
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.mark.skipif(not MANIFEST.is_dir(), reason=f"manifest folder not found at {MANIFEST}")
def test_release_manifest_loads_strictly_into_the_real_size_config() -> None:
    """Fake files with exactly the keys and shapes of Moore's release load into the SD1.5-sized net (meta)."""
    states = {name: _manifest_state(name) for name in ("reference_unet", "denoising_unet", "pose_guider", "motion_module")}
    config = json.loads((MANIFEST / "sd15_unet_config.json").read_text())
    net = build_moore_net(
        states, config, {"conditioning_embedding_channels": 320, "block_out_channels": [16, 32, 96, 256]},
        MOORE_MOTION_MODULE_KWARGS,
    )
    assert net.stage == "temporal"
    ours = net.state_dict()
    motion = [k for k in ours if "motion_modules" in k]
    assert len(motion) == 588 - 42 + 21  # two pe copies per transformer block in Moore's file, one in ours
    assert sum(1 for k in ours if k.startswith("reference_unet.")) == 682
    assert sum(1 for k in ours if k.startswith("pose_guider.")) == 16
    # the spatial part of the denoising UNet holds exactly denoising_unet.pth's keys
    assert sum(1 for k in ours if k.startswith("denoising_unet.") and "motion_modules" not in k) == 686


def test_config_errors_name_the_key_to_fix(tmp_path: Path) -> None:
    from src.models.animate_anyone_init import build_animate_anyone_net
    from src.models.weights import MissingWeightFileError

    guider = {"in_channels": 3, "block_channels": [16, 32], "out_channels": 32, "injection": "conv_in"}
    with pytest.raises(ValueError, match="model.net.init='sd'"):
        build_animate_anyone_net(None, None, guider, init="sd")
    with pytest.raises(ValueError, match="injection=conv_in"):
        build_animate_anyone_net(None, None, {**guider, "injection": "latent"}, init="moore", moore_dir=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightFileError, match=r"reference_unet\.pth[\s\S]*model\.net\.moore_dir[\s\S]*patrolli"):
        build_animate_anyone_net(
            None, None, guider, init="moore", moore_dir=tmp_path, moore_unet_config=tmp_path / "config.json"
        )
