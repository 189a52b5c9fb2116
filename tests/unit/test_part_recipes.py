"""A frozen part's recipe (the latent cache's encoder key, known without building the part) and the deferred
parts a cached run builds only when used."""

from __future__ import annotations

import json
import os

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.data.part_recipes import DIGESTS_FILE, DigestMemo, part_fingerprints
from src.trainers.deferred_parts import DeferredParts


def weights_folder(root, payload: bytes):
    folder = root / "image_encoder"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 32}')
    (folder / "model.safetensors").write_bytes(payload)
    return folder


def model(folder, seed=0):
    return OmegaConf.create({
        "codec": {"_target_": "src.models.codecs.PixelShuffleCodec", "factor": 2},
        "image_encoder": {"_target_": "x.Encoder", "path": str(folder), "init_seed": seed,
                          "config_key": "model.image_encoder.path"},
        "checkpoint": None,
    })


def test_the_recipe_follows_the_weight_bytes_and_settings_not_paths_or_readmes(tmp_path):
    a = weights_folder(tmp_path / "a", b"weights-1")
    b = weights_folder(tmp_path / "b", b"weights-1")  # the same files copied elsewhere
    parts = ("codec", "image_encoder")
    first = part_fingerprints(model(a), parts)
    assert part_fingerprints(model(b), parts) == first
    (b / "README.md").write_text("a note")
    assert part_fingerprints(model(b), parts) == first
    (b / "model.safetensors").write_bytes(b"weights-2")
    changed = part_fingerprints(model(b), parts)
    assert changed["image_encoder"] != first["image_encoder"] and changed["codec"] == first["codec"]
    assert part_fingerprints(model(a, seed=1), parts)["image_encoder"] != first["image_encoder"]
    # a model-level source (DynamiCrafter's checkpoint overwrites every part) enters every part's recipe
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"release")
    with_source = model(a)
    with_source.checkpoint = str(ckpt)
    sourced = part_fingerprints(with_source, parts, sources=("checkpoint",))
    assert sourced["codec"] != first["codec"] and sourced["image_encoder"] != first["image_encoder"]


def test_a_missing_weight_path_is_named_with_its_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.image_encoder\.path=.*nowhere does not exist"):
        part_fingerprints(model(tmp_path / "nowhere"), ("image_encoder",))


def test_digests_are_remembered_in_the_cache_folder_by_path_size_and_mtime(tmp_path):
    folder = weights_folder(tmp_path / "w", b"weights-1")
    cache = tmp_path / "cache"
    cache.mkdir()
    first = part_fingerprints(model(folder), ("image_encoder",), memo=DigestMemo(cache))
    known = json.loads((cache / DIGESTS_FILE).read_text())
    assert len(known) == 2 and all(len(v["sha256"]) == 64 for v in known.values())
    # same size and mtime: the remembered digest is used without reading the file (so this edit goes unseen)
    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"weights-9")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert part_fingerprints(model(folder), ("image_encoder",), memo=DigestMemo(cache)) == first
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a touched file is read again
    assert part_fingerprints(model(folder), ("image_encoder",), memo=DigestMemo(cache)) != first


def test_deferred_parts_are_built_once_on_first_use_and_offloaded_to_the_host():
    calls = []

    def factory():
        calls.append(1)
        return nn.Linear(2, 2)

    parts = DeferredParts()
    parts.add("codec", factory)
    parts.wrap("codec", lambda m: m.weight.data.fill_(3.0))
    assert "codec" in parts and not parts.built and not calls
    codec = parts.get("codec", torch.device("cpu"), torch.float64)
    assert calls == [1] and codec.weight.dtype == torch.float64 and not codec.training
    assert not codec.weight.requires_grad and bool((codec.weight == 3).all())
    assert parts.get("codec", torch.device("cpu"), torch.float64) is codec and calls == [1]
    parts.offload()
    assert codec.weight.device.type == "cpu"
