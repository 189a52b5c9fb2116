"""Bad overrides fail at compose time, naming the full key, the value, the expectation and a good override."""

from __future__ import annotations

import copy
import importlib

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from src.config import register_resolvers
from src.config_checks import ConfigError, check_config, find_problems
from tests.conftest import ROOT, run_entry

register_resolvers()

TRAIN = ("train", "train", ["experiment=animate_anyone_demo"])
TRAIN_FULL = ("train", "train", ["experiment=animate_anyone"])
TRAIN_DC = ("train", "train", ["experiment=dynamicrafter"])
SAMPLE = ("sample", "sample", ["experiment=dynamicrafter_demo", "sample.image=cat.png"])
SAMPLE_AA = ("sample", "sample", ["experiment=animate_anyone_demo", "sample.reference=a.png", "sample.pose_video=p.mp4"])
SAMPLE_RR = ("sample", "sample", ["experiment=rerender", "sample.video=in.mp4"])
EVAL = ("evaluate", "evaluate", ["eval=dynamicrafter_ucf101", "eval.generated_dir=/gen"])
EVAL_MODEL = ("evaluate", "evaluate", ["eval=animate_anyone_ubc", "eval.mode=model", "model=animate_anyone"])

# (entry point, base overrides), the bad override, the full key the message must name
BAD = [
    (TRAIN, "stages.spatial.trainer.max_steps=abc", "stages.spatial.trainer.max_steps"),
    (TRAIN, "stages.temporal.trainer.max_steps=0", "stages.temporal.trainer.max_steps"),
    (TRAIN, "stages.spatial.data.batch_size=-2", "stages.spatial.data.batch_size"),
    (TRAIN, "stages.temporal.data.num_frames=0", "stages.temporal.data.num_frames"),
    (TRAIN, "stages.temporal.data.num_frames=40", "stages.temporal.data.num_frames"),
    (TRAIN, "data.size=[60,64]", "data.size"),
    (TRAIN, "model.cond_drop_prob=1.5", "model.cond_drop_prob"),
    (TRAIN, "model.noise.prediction_type=velocity", "model.noise.prediction_type"),
    (TRAIN, "model.noise.timestep_spacing=uniform", "model.noise.timestep_spacing"),
    (TRAIN, "model.lr_decay=exponential", "model.lr_decay"),
    (TRAIN, "model.optimizer.lr=-1e-4", "model.optimizer.lr"),
    (TRAIN, "model.loss.timestep_sampling=beta", "model.loss.timestep_sampling"),
    (TRAIN, "performance.sdpa_backend=fast", "performance.sdpa_backend"),
    (TRAIN, "stage=warmup", "stage"),
    (TRAIN, "trainer.precision=bf32", "trainer.precision"),
    (TRAIN, "trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    (TRAIN, "data.num_workers=two", "data.num_workers"),
    (TRAIN, "model.cond_drop_prob=0.2", None),  # a sound override: no problem
    (TRAIN, "callbacks.ema.decay=1.2", "callbacks.ema.decay"),
    (TRAIN, "callbacks.nonfinite.action=ignore", "callbacks.nonfinite.action"),
    (TRAIN, "callbacks.skipped_samples.every_n_steps=0", "callbacks.skipped_samples.every_n_steps"),
    (TRAIN, "callbacks.preemption.check_every_n_steps=0", "callbacks.preemption.check_every_n_steps"),
    (TRAIN, "data.resampled=sometimes", "data.resampled"),
    (TRAIN_FULL, "stages.spatial.global_batch_size=30", "stages.spatial.global_batch_size"),
    (TRAIN_FULL, "stages.spatial.data.size=[500,500]", "stages.spatial.data.size"),
    (TRAIN_FULL, "model.net.pose_guider.injection=add", "model.net.pose_guider.injection"),
    (TRAIN_DC, "stages.finetune.data.num_frames=24", "stages.finetune.data.num_frames"),
    (TRAIN_DC, "model.uncond_prob=-0.05", "model.uncond_prob"),
    (TRAIN_DC, "stages.finetune.data.stride_range=[6,1]", "stages.finetune.data.stride_range"),
    (TRAIN_DC, "model.fs_condition=stride", "model.fs_condition"),
    (SAMPLE, "sample.batch_size=0", "sample.batch_size"),
    (SAMPLE, "sample.sampling.eta=2", "sample.sampling.eta"),
    (SAMPLE, "sample.device=gpu0", "sample.device"),
    (SAMPLE, "sample.stage=spatial", "sample.stage"),
    (SAMPLE, "sample.size=[30,30]", "sample.size"),
    (SAMPLE, "sample.num_frames=5", "sample.num_frames"),
    (SAMPLE, "sample.images=/imgs", "sample.images"),
    (SAMPLE, "sample.image=null", "sample.image"),
    (SAMPLE_AA, "sample.pose_video=null", "sample.pose_video"),  # neither a pose video nor a driving video
    (SAMPLE_AA, "sample.driving_video=d.mp4", "sample.driving_video"),  # both
    (SAMPLE_AA, "sample.pose_videos=/poses", "sample.pose_videos"),  # a folder and a file
    (SAMPLE_AA, "sample.name=stem", "sample.name"),
    (SAMPLE_RR, "sample.video=null", "sample.video"),
    (SAMPLE_RR, "model.windows.shape_fusion=[0.3,0.1]", "model.windows.shape_fusion"),
    (SAMPLE_RR, "model.denoising_strength=0", "model.denoising_strength"),
    (SAMPLE_RR, "model.pixel_fusion=hard", "model.pixel_fusion"),
    (SAMPLE_RR, "model.sampling.num_steps=0", "model.sampling.num_steps"),
    (("train", "train", ["experiment=dynamicrafter"]), "model.dropout_masks=fast", "model.dropout_masks"),
    (EVAL, "eval.mode=generate", "eval.mode"),
    (EVAL, "eval.num_shards=0", "eval.num_shards"),
    (EVAL, "eval.shard_index=8", "eval.shard_index"),
    (EVAL, "eval.clip.stride=0", "eval.clip.stride"),
    (EVAL, "eval.resize=crop", "eval.resize"),
    (EVAL, "eval.video_crf=70", "eval.video_crf"),
    (EVAL, "eval.batch_size=many", "eval.batch_size"),
    (EVAL, "eval.generated_dir=null", "eval.generated_dir"),
    (EVAL, "logger.wandb.mode=on", "logger.wandb.mode"),
    (EVAL, "eval.clip.start=middle", "eval.clip.start"),
    (EVAL, "eval.clip.num_frames=null", "eval.clip.num_frames"),  # start=random in this protocol needs a length
    (EVAL, "eval.subset.rule=best", "eval.subset.rule"),
    (EVAL, "eval.fvd_flavour=tats", "eval.fvd_flavour"),
    (EVAL_MODEL, "model.sampling.num_steps=0", "model.sampling.num_steps"),
    (SAMPLE_RR, "model.controlnet.control_type=depth", "model.controlnet.control_type"),
    (SAMPLE_RR, "model.control_map.control_type=canny", "model.control_map.control_type"),
    (SAMPLE_RR, "model.sd.checkpoint=null", "model.sd.checkpoint"),
    (SAMPLE_RR, "model.sd.dtype=fp8", "model.sd.dtype"),
    (SAMPLE_RR, "model.control_map.canny_low=300", "model.control_map.canny_low"),
    (SAMPLE_RR, "model.controlnet.control_type=canny", None),  # the maps follow the ControlNet's kind
]


@pytest.fixture(scope="module")
def composer():
    """compose(config_name, overrides): each base composed once by Hydra, then key=value overrides merged on a
    copy (parsed as Hydra parses them), so the table stays fast; the entry-point test below uses Hydra itself."""
    bases = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):

        def composed(name: str, overrides: list[str]) -> DictConfig:
            base = [o for o in overrides if "=" in o and (o.split("=")[0] in GROUPS)]
            values = [o for o in overrides if o not in base]
            key = (name, tuple(base))
            if key not in bases:
                bases[key] = compose(config_name=name, overrides=base)
            cfg = copy.deepcopy(bases[key])
            for override in values:
                OmegaConf.update(cfg, *parse_override(override), force_add=True)
            return cfg

        yield composed


GROUPS = ("experiment", "eval", "model")


def parse_override(override: str) -> tuple[str, object]:
    """`key=value` -> (key, value) with Hydra's own override parser (so `abc`, `[60,64]`, `null` parse alike)."""
    parsed = OverridesParser.create().parse_override(override)
    return parsed.key_or_group, parsed.value()


def test_every_shipped_experiment_and_protocol_passes(composer) -> None:
    for experiment in ("animate_anyone", "animate_anyone_demo", "dynamicrafter", "dynamicrafter_512",
                       "dynamicrafter_1024", "dynamicrafter_demo"):
        assert find_problems(composer("train", [f"experiment={experiment}"]), "train") == []
    for experiment, inputs in (("animate_anyone", ["sample.reference=a.png", "sample.pose_video=p.mp4"]),
                               ("animate_anyone", ["sample.reference=a.png", "sample.driving_video=d.mp4"]),
                               ("dynamicrafter_demo", ["sample.image=a.png"])):
        assert find_problems(composer("sample", [f"experiment={experiment}", *inputs]), "sample") == []
    for base in (SAMPLE, SAMPLE_RR):
        assert find_problems(composer("sample", base[2]), "sample") == []
    assert find_problems(composer("sample", ["experiment=rerender_demo"]), "sample") == []
    for protocol in ("animate_anyone_ubc", "animate_anyone_tiktok", "dynamicrafter_ucf101", "dynamicrafter_msrvtt",
                     "rerender"):
        cfg = composer("evaluate", [f"eval={protocol}", "eval.generated_dir=/gen"])
        assert find_problems(cfg, "evaluate") == []


@pytest.mark.parametrize(("base", "bad", "key"), BAD, ids=[row[1] for row in BAD])
def test_bad_override_names_the_full_key_and_a_fix(composer, base, bad, key) -> None:
    entry, config_name, overrides = base
    cfg = composer(config_name, [*overrides, bad])
    if key is None:
        check_config(cfg, entry)
        return
    with pytest.raises(ConfigError) as err:
        check_config(cfg, entry)
    message = str(err.value)
    assert f"  - {key}=" in message, message
    assert "expected" in message and f"e.g. {key}=" in message
    (problem,) = find_problems(cfg, entry)  # only the bad value is reported
    fixed = composer(config_name, [*overrides, bad, f"{problem.key}={problem.example}"])
    assert find_problems(fixed, entry) == [], f"the suggested {problem.key}={problem.example} does not fix it"


@pytest.mark.parametrize(
    ("module", "base", "bad", "key"),
    [
        ("src.train", TRAIN_FULL, "stages.spatial.trainer.max_steps=abc", "stages.spatial.trainer.max_steps"),
        ("src.sample", SAMPLE, "sample.sampling.eta=2", "sample.sampling.eta"),
        ("src.evaluate", EVAL, "eval.shard_index=9", "eval.shard_index"),
    ],
)
def test_entry_point_mains_exit_with_status_2(composer, capsys, module, base, bad, key) -> None:
    """Each entry point's main checks first (a bad config raises SystemExit(2) with the message on stderr)."""
    main = importlib.import_module(module).main
    _, config_name, overrides = base
    with pytest.raises(SystemExit) as exit_info:
        main(composer(config_name, [*overrides, bad]))  # hydra.main passes a given config straight through
    assert exit_info.value.code == 2
    assert f"{key}=" in capsys.readouterr().err


def test_the_issue_example_fails_in_seconds_through_the_real_command(tmp_path) -> None:
    """`stages.spatial.trainer.max_steps=abc` used to seed, open W&B and die inside Lightning."""
    run_dir = tmp_path / "run"
    proc = run_entry("src.train", "experiment=animate_anyone", "stages.spatial.trainer.max_steps=abc",
                     f"hydra.run.dir={run_dir}", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "stages.spatial.trainer.max_steps='abc': expected a positive integer" in proc.stderr
    assert "nothing was built" in proc.stderr
    assert {p.name for p in run_dir.glob("*")} <= {".hydra", "train.log"}  # no stage dirs, no checkpoints, no W&B
