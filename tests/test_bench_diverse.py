"""The ``diverse`` benchmark profile: a ViT family and per-architecture fine-tuning
recipes, exercised at the tiny profile's sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoosel.bench import groundtruth, nets, zoo
from zoosel.bench.data import BenchData
from zoosel.bench.profiles import get_profile, resolve
from zoosel.bench.run import Bench


def test_existing_profiles_keep_their_key_and_diverse_has_three_families() -> None:
    for name in ("tiny", "standard", "full"):
        assert "finetune_recipes" not in get_profile(name).key()  # old builds stay valid
    diverse = get_profile("diverse")
    assert diverse.key()["finetune_recipes"] is True
    members = zoo.plan(diverse, [f"s{i}" for i in range(8)])
    assert {m.arch for m in members} == {"resnet", "convnext", "vit"}
    assert len(members) == 41 and len({m.name for m in members}) == 41


def test_diverse_fine_tunes_on_32_targets_the_original_eight_first() -> None:
    from zoosel.bench.domains import (
        EXTRA_TARGET_TASKS,
        FURTHER_TARGET_TASKS,
        MORE_TARGET_TASKS,
        TARGET_TASKS,
        get_domain,
    )

    diverse = get_profile("diverse")
    original = [d.name for d in TARGET_TASKS]
    later = [d.name for d in MORE_TARGET_TASKS + EXTRA_TARGET_TASKS + FURTHER_TARGET_TASKS]
    assert list(diverse.targets) == original + later
    assert len(set(diverse.targets)) == 32 and all(get_domain(t) for t in diverse.targets)
    # The extra seeds stay on the same two tasks; profiles naming no targets keep the 8.
    assert diverse.targets[: diverse.noise_targets] == ("beaded_glyphs", "outline_shapes")
    assert get_profile("standard").targets is None and get_profile("full").targets is None
    assert original[:2] == ["beaded_glyphs", "outline_shapes"] and len(original) == 8


def test_finetune_schedule_follows_the_profile() -> None:
    run = groundtruth.Run("vit-glyphs", "sprites", "5-shot", 0.01, 0)
    paper = groundtruth.finetune_schedule(get_profile("tiny"), run, "vit")
    assert paper.optimizer == "sgd" and paper.lr == 0.01 and paper.decay == "step"
    tiny = resolve("tiny", {"finetune_recipes": True})
    own = groundtruth.finetune_schedule(tiny, run, "vit")
    assert own.optimizer == "adamw" and own.lr == pytest.approx(0.001)
    assert own.weight_decay == 0.05 and own.decay == "cosine" and own.warmup == 0.1
    resnet = groundtruth.finetune_schedule(tiny, run, "resnet")
    assert resnet == paper  # the ResNet's recipe is the paper's


def test_a_vit_member_builds_fine_tunes_with_its_recipe_and_is_ranked(tmp_path: Path) -> None:
    import zoosel

    profile = resolve("tiny", {"archs": ["vit"], "generalist_archs": [], "multibn": False,
                               "sources": ["glyphs"], "targets": ["sprites"],
                               "regimes": {"5-shot": 5}, "epochs": {"5-shot": 2},
                               "lrs": [0.01], "noise_targets": 0,
                               "finetune_recipes": True})
    bench = Bench(root=tmp_path, profile=profile, progress=False, log=lambda m: None)
    bench.build_zoo()
    member = tmp_path / "zoo" / "vit-glyphs"
    meta = nets.member_meta(member)
    assert meta["arch"] == "vit" and meta["timm"] == "vit_tiny_patch16_224"
    assert 0.0 <= meta["source_accuracy"] <= 1.0
    bench.finetune()
    (record,) = bench.store().records()
    assert record["optimizer"] == "adamw" and record["applied_lr"] == pytest.approx(0.001)
    assert 0.0 <= record["test_accuracy"] <= 1.0
    folder = BenchData(tmp_path, profile).regime_folder("sprites", "5-shot")
    ranking = zoosel.rank(str(folder), models=[f"local:{member}"],
                          scorers=["lfc", "consensus"], per_class=None, progress=False,
                          use_cache=False)
    (result,) = ranking.results
    assert result.ok and result.num_params == meta["num_params"]
