"""`bench/device/wheels.py`: the wheels carried to a lent GPU machine are the project's dependency closure (as
installed here, with the target interpreter's markers) less what the machine's image has and less what is skipped;
nothing is fetched in these tests."""

from __future__ import annotations

from importlib import metadata

import pytest

from bench.device import wheels


class FakeDist:
    def __init__(self, version: str, requires: list[str]):
        self.version, self.requires = version, requires


GRAPH = {
    "root": FakeDist("1", ["a>=1", "old; python_version < '3.11'", "c[x]", "wandb", "torch"]),
    "a": FakeDist("2", ["torch>=2"]),
    "c": FakeDist("3", ["d; extra == 'x'", "e; extra == 'y'"]),
    "d": FakeDist("4", []),
    "wandb": FakeDist("5", ["sentry"]),
    "torch": FakeDist("2.11", ["nvidia-thing"]),
}


def fake_distribution(name):
    try:
        return GRAPH[name]
    except KeyError:
        raise metadata.PackageNotFoundError(name) from None


def test_closure_follows_markers_and_extras_and_stops_at_skipped_and_present(monkeypatch):
    monkeypatch.setattr(wheels.metadata, "distribution", fake_distribution)
    found = wheels.closure("root", skip=("wandb",), present=frozenset({"torch"}))
    # `old` is for Python < 3.11 (the machine has 3.12); `e` needs an extra nobody asked for; wandb is skipped and
    # with it `sentry`; torch is there already, so its own needs are the image's business
    assert found == {"root": "1", "a": "2", "c": "3", "d": "4", "torch": "2.11"}


def test_a_needed_distribution_missing_here_is_named(monkeypatch):
    with_gap = dict(GRAPH, a=FakeDist("2", ["ghost"]))
    monkeypatch.setattr(wheels.metadata, "distribution", lambda n: with_gap[n] if n in with_gap else fake_distribution(n))
    with pytest.raises(SystemExit, match="ghost"):
        wheels.closure("root", skip=("wandb",), present=frozenset({"torch"}))


def test_the_real_carry_set_has_what_the_image_lacks_and_nothing_it_has():
    carry = wheels.wanted()
    image = wheels.image_packages()
    assert {"torch", "torchvision", "numpy", "lightning", "transformers"} <= image
    assert not set(carry) & image and wheels.PROJECT not in carry and "wandb" not in carry
    # our direct needs that the image lacks, and what they bring (omegaconf -> antlr4, webdataset -> braceexpand)
    assert {"diffusers", "hydra-core", "omegaconf", "antlr4-python3-runtime", "deepspeed", "av", "webdataset",
            "braceexpand", "open-clip-torch"} <= set(carry)
