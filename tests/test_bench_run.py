"""The benchmark build end to end on the tiny profile: zoo, ground truth, selectors, report."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from zoosel.bench import groundtruth, nets, zoo
from zoosel.bench.data import BenchData, shots
from zoosel.bench.profiles import get_profile, load_config, resolve
from zoosel.bench.run import Bench
from zoosel.bench.train import Schedule, accuracy, fit
from zoosel.errors import UnknownNameError, UsageError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """A complete tiny build, shared by the tests of this module."""
    bench = Bench(root=tmp_path_factory.mktemp("bench"), profile=get_profile("tiny"),
                  progress=False, log=lambda msg: None)
    bench.run()
    return bench


def test_zoo_has_every_member_in_hub_layout(tiny: Bench) -> None:
    names = {m.name for m in zoo.plan(tiny.profile, tiny.sources)}
    assert names == {"resnet-generalist", "multibn-glyphs", "multibn-shapes", "resnet-glyphs",
                     "resnet-shapes", "resnet-glyphs-from-generalist",
                     "resnet-shapes-from-generalist"}
    assert set(tiny.members()) == names
    for name in names:
        folder = tiny.zoo_dir / name
        config = json.loads((folder / "config.json").read_text())
        assert config["architecture"] == "resnet18"
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pth"))
        meta = nets.member_meta(folder)
        assert 0.0 <= meta["source_accuracy"] <= 1.0
        model = nets.load(folder)
        assert model.num_classes == (20 if name == "resnet-generalist" else 10)


def test_multibn_members_share_everything_but_batch_norm_and_head(tiny: Bench) -> None:
    a = nets.load(tiny.zoo_dir / "multibn-glyphs").state_dict()
    b = nets.load(tiny.zoo_dir / "multibn-shapes").state_dict()
    assert a.keys() == b.keys()
    bn_keys = [k for k in a if k.startswith(("bn", "layer")) and ".bn" in k or k.startswith("bn1")]
    conv_keys = [k for k in a if "conv" in k and k.endswith("weight")]
    assert conv_keys and bn_keys
    for k in conv_keys:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], b[k]) for k in bn_keys if k.endswith("running_mean"))
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_multibn_training_only_moves_the_domain_in_use() -> None:
    arch = nets.get_arch("resnet")
    model = nets.create(arch, 3, 16, seed=0)
    multi = nets.MultiBN(model, {"a": 3, "b": 4})
    before_b = [t.detach().clone() for layer in multi.domains["b"]["bn"] for t in layer[:4]]
    images = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    fit(model, images, np.arange(8) % 3, Schedule(1, 0.1, batch_size=4), seed=0,
        parameters=multi.parameters(), before_step=lambda d: multi.use("a"),
        domains=np.zeros(8, dtype=int))
    after_b = [t.detach() for layer in multi.domains["b"]["bn"] for t in layer[:4]]
    assert all(torch.equal(x, y) for x, y in zip(before_b, after_b, strict=True))
    moved_a = [not torch.equal(layer[2], torch.zeros_like(layer[2]))
               for layer in multi.domains["a"]["bn"]]
    assert all(moved_a)  # domain a's running means were updated


def test_learning_rate_is_chosen_on_validation_and_every_run_is_stored(tiny: Bench) -> None:
    records = groundtruth.Store(tiny.root).records()
    profile = tiny.profile
    members, tasks = tiny.members(), tiny.tasks
    seed0 = [r for r in records if r["seed"] == 0]
    assert len(seed0) == len(members) * len(tasks) * len(profile.regimes) * len(profile.lrs)
    by_key: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in seed0:
        by_key[(r["member"], r["task"], r["regime"])].append(r)
    table = groundtruth.table(records)
    for (member, task, regime), runs in by_key.items():
        best_val = max(r["val_accuracy"] for r in runs)
        chosen = table[f"{task}/{regime}"]["lr"][member]
        chosen_run = next(r for r in runs if r["lr"] == chosen)
        assert chosen_run["val_accuracy"] == best_val
        # the test accuracy reported is that of the chosen rate (mean over its seeds)
        seeds = [r["test_accuracy"] for r in records if (r["member"], r["task"], r["regime"],
                 r["lr"]) == (member, task, regime, chosen)]
        assert table[f"{task}/{regime}"]["accuracy"][member] == pytest.approx(np.mean(seeds))
    noise = [r for r in records if r["seed"] > 0]
    assert {r["task"] for r in noise} == {tasks[0]}
    assert {r["regime"] for r in noise} == {"5-shot"}
    assert len(noise) == len(members) * (profile.noise_seeds - 1)


def test_regime_training_sets_are_k_shot_and_shared(tiny: Bench) -> None:
    data = BenchData(tiny.root, tiny.profile)
    pool = data.target("sprites", "pool")
    rows = data.regime_rows("sprites", "5-shot")
    assert np.bincount(pool.labels[rows]).tolist() == [5] * len(pool.classes)
    folder = data.regime_folder("sprites", "5-shot")
    files = sorted(p for p in folder.rglob("*.png"))
    assert len(files) == 5 * len(pool.classes)


def test_scores_and_costs_for_every_selector(tiny: Bench) -> None:
    record = json.loads((tiny.root / "scores" / "sprites__5-shot.json").read_text())
    members = set(tiny.members())
    for name in ("lfc", "logme", "leep", "linft", "domain_sim", "random"):
        assert set(record["scores"][name]) == members, name
        assert record["cost"][name] > 0
    assert record["num_samples"] == 5 * 8
    full = json.loads((tiny.root / "scores" / "sprites__full.json").read_text())
    ablation = json.loads((tiny.root / "scores" / "sprites__full-full-split.json").read_text())
    assert full["num_samples"] == ablation["num_samples"] == 10 * 8  # pool smaller than 25


def test_report_files_and_headline(tiny: Bench) -> None:
    report = tiny.root / "report"
    text = (report / "report.md").read_text()
    assert "## Headline" in text
    for name in ("lfc", "logme", "leep", "domain_sim", "random"):
        assert f"| {name} |" in text
    results = json.loads((report / "results.json").read_text())
    assert set(results["tasks"]) == {"beaded_glyphs", "sprites"}
    assert set(results["tasks"]["sprites"]) == {"5-shot", "full", "full (full-split)"}
    assert results["generalist"] == "resnet-generalist"
    assert "validity" in results
    pngs = list((report / "figures").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_scorer_versions_are_recorded_and_a_changed_version_is_scored_again(
        tiny: Bench) -> None:
    import zoosel

    installed = {n: zoosel.list_scorers()[n].version for n in tiny.profile.scorers}
    results = json.loads((tiny.root / "report" / "results.json").read_text())
    assert results["scorer_versions"] == installed
    path = tiny.root / "scores" / "sprites__5-shot.json"
    record = json.loads(path.read_text())
    assert record["versions"] == installed
    # the pair was scored with another logme: only it is to go, and scoring redoes it
    path.write_text(json.dumps({**record, "versions": {**installed, "logme": "0"}}))
    assert ("score", len(tiny.scoring_jobs()) - 1) == next(
        (step, done) for step, done, _, _ in tiny.status() if step == "score")
    stamps = {p: p.stat().st_mtime_ns for p in (tiny.root / "scores").glob("*.json")}
    tiny.score()
    again = json.loads(path.read_text())
    assert again["versions"] == installed and again["scores"] == record["scores"]
    assert [p for p, t in stamps.items() if p.stat().st_mtime_ns != t] == [path]
    # a result written before versions were recorded is kept as it is
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "versions"}))
    tiny.score()
    assert "versions" not in json.loads(path.read_text())
    path.write_text(json.dumps(record))


def test_a_second_run_does_no_work_and_an_interrupted_one_resumes(tiny: Bench) -> None:
    store = groundtruth.Store(tiny.root)
    lines = store.path.read_text().splitlines()
    weights = tiny.zoo_dir / "resnet-glyphs" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    tiny.run(steps=("zoo", "finetune", "score"))
    assert store.path.read_text().splitlines() == lines
    assert weights.stat().st_mtime_ns == stamp
    # an interruption: the last two runs lost, the one before cut mid-line
    kept = lines[:-3] + [lines[-3][: len(lines[-3]) // 2]]
    store.path.write_text("\n".join(kept) + "\n")
    tiny.finetune()
    after = store.records()
    assert len(after) == len(lines)
    assert {json.dumps(r, sort_keys=True) for r in after} >= {
        json.dumps(json.loads(x), sort_keys=True) for x in lines[:-3]}


def test_fine_tuning_learns_a_separable_task() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 20)
    images = np.zeros((40, 16, 16, 3), dtype=np.uint8)
    images[labels == 0, :8] = 255
    images[labels == 1, 8:] = 255
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    model = nets.create(nets.get_arch("resnet"), 2, 16, seed=0)
    assert accuracy(model, images, labels) <= 0.75
    fit(model, images, labels, Schedule(10, 0.05, batch_size=8), seed=0)
    assert accuracy(model, images, labels) == 1.0


def test_shots_are_per_class_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    a, b = shots(labels, 4, seed=1), shots(labels, 4, seed=2)
    assert np.bincount(labels[a]).tolist() == [4, 4, 4]
    assert not np.array_equal(a, b)
    assert np.array_equal(shots(labels, None, 0), np.arange(30))


def test_external_target_is_split_once_and_stratified(tmp_path: Path) -> None:
    from zoosel.testing.factories import write_image_folder

    folder = write_image_folder(tmp_path / "mydata", num_classes=3, per_class=12, size=20)
    bench = Bench(root=tmp_path / "b", profile=get_profile("tiny"), external_targets=[
        str(folder)], builtin_targets=False, progress=False, log=lambda m: None)
    assert bench.tasks == ["ext-mydata"]
    parts = {s: bench.data.target("ext-mydata", s) for s in ("pool", "val", "test")}
    sizes = {s: len(p.labels) for s, p in parts.items()}
    assert sum(sizes.values()) == 36 and min(sizes.values()) >= 3
    for part in parts.values():
        assert part.images.shape[1:] == (32, 32, 3)
        assert set(np.unique(part.labels)) == {0, 1, 2}


def test_config_and_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny'"):
        get_profile("tinny")
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"profile": "tiny", "epoch": 3}))
    with pytest.raises(UsageError, match="unknown keys epoch"):
        load_config(bad)
    assert resolve("tiny", {"lrs": [0.1]}).lrs == (0.1,)
    Bench(root=tmp_path / "b", profile=get_profile("tiny")).check_config()
    with pytest.raises(UsageError, match="other settings"):
        Bench(root=tmp_path / "b", profile=resolve("tiny", {"lrs": [0.1]})).check_config()


def test_cli_reports_usage_errors_without_traceback(tmp_path: Path) -> None:
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "report", "--profile", "huge",
                                 "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Unknown benchmark profile 'huge'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["bench", "finetune", "--tiny", "--dir", str(tmp_path / "e")])
    assert result.exit_code == 2 and "run `zoosel bench zoo` first" in result.output
    assert "standard" in runner.invoke(cli, ["bench", "profiles"]).output


def test_a_profile_without_named_sources_uses_every_shipped_domain(tmp_path: Path) -> None:
    from zoosel.bench.domains import SOURCE_DOMAINS

    data = BenchData(tmp_path, get_profile("standard"))
    assert data.source_names() == [d.name for d in SOURCE_DOMAINS]
    assert len(data.source_names()) >= 8


@pytest.mark.parametrize("name", ["tiny", "standard", "full", "diverse"])
def test_every_profile_is_complete(name: str) -> None:
    profile = get_profile(name)
    assert set(profile.epochs) == set(profile.regimes)
    assert profile.lrs and all(lr > 0 for lr in profile.lrs)
    for arch in profile.archs + profile.generalist_archs:
        nets.get_arch(arch)
    members = [m.name for m in zoo.plan(profile, ["glyphs", "shapes"])]
    assert len(members) == len(set(members))


def test_convnext_generalist_and_its_variants_build(tmp_path: Path) -> None:
    profile = resolve("tiny", {"archs": ["convnext"], "generalist_archs": ["convnext"],
                               "multibn": False, "sources": ["glyphs"]})
    bench = Bench(root=tmp_path, profile=profile, progress=False, log=lambda m: None)
    bench.build_zoo()
    assert set(bench.members()) == {"convnext-generalist", "convnext-glyphs",
                                    "convnext-glyphs-from-generalist"}
    meta = nets.member_meta(tmp_path / "zoo" / "convnext-glyphs-from-generalist")
    assert meta["init"] == "generalist" and meta["arch"] == "convnext"


def test_a_zoo_and_a_target_of_your_own(tiny: Bench, tmp_path: Path) -> None:
    """`models` and `targets` of a config: no zoo build, the user's folder as the task."""
    from zoosel.testing.factories import write_image_folder

    folder = write_image_folder(tmp_path / "mine", num_classes=3, per_class=16, size=24)
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({
        "profile": "tiny", "regimes": {"5-shot": 5}, "epochs": {"5-shot": 1}, "lrs": [0.01],
        "scorers": ["lfc", "logme"], "noise_targets": 0, "ablation": False,
        "builtin_targets": False, "targets": [str(folder)],
        "models": [str(tiny.zoo_dir / "resnet-glyphs"), str(tiny.zoo_dir / "multibn-shapes")],
        "generalist": str(tiny.zoo_dir / "resnet-glyphs"),
    }))
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    result = CliRunner().invoke(cli, ["bench", "run", "--config", str(config), "--quiet",
                                      "--dir", str(tmp_path / "build")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "build" / "zoo").exists()
    results = json.loads((tmp_path / "build" / "report" / "results.json").read_text())
    entry = results["tasks"]["ext-mine"]["5-shot"]
    assert set(entry["accuracy"]) == {"resnet-glyphs", "multibn-shapes"}
    assert set(entry["scores"]["lfc"]) == {"resnet-glyphs", "multibn-shapes"}
    assert results["generalist"] == "resnet-glyphs"


def _small(workers: int) -> object:
    return resolve("tiny", {
        "sources": ["glyphs"], "targets": ["sprites"], "generalist_archs": [],
        "multibn": False, "regimes": {"5-shot": 5}, "epochs": {"5-shot": 1},
        "lrs": [0.01, 0.001], "noise_targets": 0, "workers": workers})


def test_worker_processes_give_the_same_results_as_one_process(tmp_path: Path) -> None:
    runs = {}
    for workers in (1, 2):
        bench = Bench(root=tmp_path / str(workers), profile=_small(workers), progress=False,
                      log=lambda m: None)
        bench.build_zoo()
        bench.finetune()
        runs[workers] = sorted(
            (r["member"], r["task"], r["regime"], r["lr"], r["val_accuracy"], r["test_accuracy"])
            for r in groundtruth.Store(bench.root).records())
    assert len(runs[1]) == 2
    assert runs[1] == runs[2]


def test_a_failed_job_is_reported_and_the_others_are_kept(tmp_path: Path) -> None:
    from zoosel.bench.run import _pool_map, finetune_job
    from zoosel.errors import BenchJobError

    bench = Bench(root=tmp_path, profile=_small(2), progress=False, log=lambda m: None)
    bench.build_zoo()
    bench.data.target("sprites", "pool")
    good = groundtruth.Run("resnet-glyphs", "sprites", "5-shot", 0.01, 0)
    bad = groundtruth.Run("missing", "sprites", "5-shot", 0.01, 0)
    done = []
    with pytest.raises(BenchJobError, match="1 fine-tuning job"):
        for run, _record in _pool_map(
            finetune_job, [(tmp_path, bench.profile, bad, tmp_path / "zoo" / "missing"),
                           (tmp_path, bench.profile, good, tmp_path / "zoo" / "resnet-glyphs")],
            2, "fine-tuning", False,
        ):
            done.append(run)
    assert done == [good]


def test_a_member_whose_recipe_changed_is_retrained_and_its_results_redone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = resolve("tiny", {
        "sources": ["glyphs"], "targets": ["sprites"], "multibn": False,
        "regimes": {"5-shot": 5}, "epochs": {"5-shot": 1}, "lrs": [0.01], "noise_targets": 0,
        "ablation": False, "scorers": ["lfc"], "workers": 1})
    bench = Bench(root=tmp_path, profile=profile, progress=False, log=lambda m: None)
    bench.run(steps=("zoo", "finetune", "score"))
    names = ("resnet-generalist", "resnet-glyphs", "resnet-glyphs-from-generalist")
    before = {n: nets.member_meta(tmp_path / "zoo" / n) for n in names}
    assert all(len(before[n]["weights_sha256"]) == 64 and before[n]["recipe"] for n in names)
    lines = groundtruth.Store(tmp_path).path.read_text().splitlines()
    assert len(lines) == 3
    score_file = tmp_path / "scores" / "sprites__5-shot.json"
    scored = json.loads(score_file.read_text())["members_sha256"]
    assert scored == {n: before[n]["weights_sha256"] for n in names}

    # only the generalist's schedule changes: it and the member started from it are redone
    original = zoo.source_schedule
    monkeypatch.setattr(zoo, "source_schedule", lambda p, m: (
        replace(original(p, m), lr=0.02) if m.source == "all" else original(p, m)))
    logged: list[str] = []
    bench.log = logged.append
    assert [m.name for m in zoo.to_build(bench.zoo_dir, profile, zoo.plan(profile, ["glyphs"]))
            ] == ["resnet-generalist", "resnet-glyphs-from-generalist"]
    assert bench.status()[0] == (
        "zoo", 1, 3, "out of date: resnet-generalist, resnet-glyphs-from-generalist")
    bench.run(steps=("zoo", "finetune", "score"))
    after = {n: nets.member_meta(tmp_path / "zoo" / n) for n in names}
    assert after["resnet-glyphs"] == before["resnet-glyphs"]
    for n in ("resnet-generalist", "resnet-glyphs-from-generalist"):
        assert after[n]["weights_sha256"] != before[n]["weights_sha256"]
    assert any("recipe changed" in line and "resnet-generalist" in line for line in logged)

    store = groundtruth.Store(tmp_path, bench.digests())
    all_lines = store.path.read_text().splitlines()
    assert all_lines[:3] == lines and len(all_lines) == 5  # two runs redone, old lines kept
    current = {r["member"]: r["member_sha256"] for r in store.records()}
    assert current == {n: after[n]["weights_sha256"] for n in names}
    scored = json.loads(score_file.read_text())["members_sha256"]
    assert scored == current

    logged.clear()  # and nothing more to do
    bench.run(steps=("zoo", "finetune", "score"))
    assert any("3 zoo members built, 0 training jobs" in line for line in logged)
    assert len(store.path.read_text().splitlines()) == 5


@pytest.mark.parametrize("decay, warmup", [("step", 0.0), ("step", 0.25), ("cosine", 0.0),
                                           ("cosine", 0.1)])
def test_learning_rate_schedules(decay: str, warmup: float) -> None:
    from zoosel.bench.train import lr_factor

    total = 40
    factor = lr_factor(Schedule(4, 1.0, decay=decay, warmup=warmup), total)
    got = [factor(t) for t in range(total)]
    warm = round(warmup * total)
    assert got[:warm] == pytest.approx([(t + 1) / warm for t in range(warm)])
    if decay == "step" and not warmup:  # the fine-tuning protocol: torch's MultiStepLR
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        ref = torch.optim.lr_scheduler.MultiStepLR(opt, [20, 33], gamma=0.1)
        expected = []
        for _ in range(total):
            expected.append(opt.param_groups[0]["lr"])
            opt.step()
            ref.step()
        assert got == pytest.approx(expected)
    elif decay == "step":
        assert got[warm:] == pytest.approx([1.0] * (20 - warm) + [0.1] * 13 + [0.01] * 7)
    else:  # cosine from 1 at the end of the warm-up to 0 at the end
        assert got[warm] == pytest.approx(1.0)
        middle = warm + (total - warm) // 2
        assert got[middle] == pytest.approx(0.5, abs=1e-9 + 1 / (total - warm))
        assert got[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * (total - 1 - warm)
                                                          / (total - warm))))
        assert all(a >= b for a, b in zip(got[warm:], got[warm + 1:], strict=False))
    with pytest.raises(ValueError, match="decay"):
        lr_factor(Schedule(1, 1.0, decay="linear"), 10)


def test_device_is_checked_and_recorded(tmp_path: Path) -> None:
    from zoosel.bench.train import resolve_device
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    result = CliRunner().invoke(cli, ["bench", "zoo", "--tiny", "--dir", str(tmp_path),
                                      "--device", "tpu0", "--quiet"])
    assert result.exit_code == 2 and "unknown device" in result.output
    assert "Traceback" not in result.output
    if not torch.cuda.is_available():
        result = CliRunner().invoke(cli, ["bench", "zoo", "--tiny", "--dir", str(tmp_path),
                                          "--device", "cuda", "--quiet"])
        assert result.exit_code == 2 and "no CUDA device is visible" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_build_on_the_gpu_matches_the_cpu_closely(tmp_path: Path) -> None:
    results = {}
    for device in ("cpu", "cuda"):
        bench = Bench(root=tmp_path / device, profile=_small(1), progress=False,
                      log=lambda m: None, device=device)
        bench.build_zoo()
        bench.finetune()
        records = groundtruth.Store(bench.root).records()
        assert {r["device"] for r in records} == {device}
        assert nets.member_meta(bench.zoo_dir / "resnet-glyphs")["device"] == device
        results[device] = {(r["member"], r["lr"]): r["val_accuracy"] for r in records}
    assert results["cpu"].keys() == results["cuda"].keys()
    for key, value in results["cpu"].items():
        assert abs(results["cuda"][key] - value) <= 0.25, key


def test_cpu_builds_record_their_device(tiny: Bench) -> None:
    assert {r["device"] for r in groundtruth.Store(tiny.root).records()} == {"cpu"}
    assert all(nets.member_meta(p)["device"] == "cpu" for p in tiny.members().values())
    scored = json.loads(next((tiny.root / "scores").glob("*.json")).read_text())
    assert scored["device"] == "cpu"
    results = json.loads((tiny.root / "report" / "results.json").read_text())
    assert results["meta"]["devices"] == "cpu"


def test_status_says_how_far_each_step_is(tiny: Bench, tmp_path: Path) -> None:
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    lines = {step: (done, total) for step, done, total, _ in tiny.status()}
    runs = len(groundtruth.Store(tiny.root).records())
    assert lines["zoo"] == (7, 7) and lines["score"][0] == lines["score"][1] > 0
    assert lines["finetune: learning rates"][0] + lines["finetune: noise seeds"][0] == runs
    assert all(done == total for done, total in lines.values())

    bench = Bench(root=tmp_path / "partial", profile=_small(1), progress=False,
                  log=lambda m: None)
    bench.build_zoo()
    before = sorted(p.relative_to(bench.root) for p in bench.root.rglob("*"))
    lines = {step: (done, total, note) for step, done, total, note in bench.status()}
    assert lines["zoo"] == (1, 1, "")
    assert lines["finetune: learning rates"] == (0, 2, "")
    assert lines["score"][:2] == (0, 1) and lines["report"][:2] == (0, 1)
    assert sorted(p.relative_to(bench.root) for p in bench.root.rglob("*")) == before
    out = CliRunner().invoke(cli, ["bench", "status", "--tiny", "--dir", str(tmp_path / "no")])
    assert out.exit_code == 0 and "no build in" in out.output
    assert not (tmp_path / "no").exists()


def test_verify_redoes_work_and_catches_a_difference(tiny: Bench, tmp_path: Path) -> None:
    import shutil

    from zoosel.bench.verify import verify
    from zoosel.cli import bench_commands, cli  # noqa: F401  (registers `bench`)

    checks = verify(tiny, runs=3, members=1, seed=1)
    assert [c.kind for c in checks] == ["member", "run", "run", "run"]
    assert all(c.ok for c in checks), [c.detail for c in checks]
    assert "weights identical" in checks[0].detail

    copy = tmp_path / "copy"
    shutil.copytree(tiny.root, copy, ignore=shutil.ignore_patterns("cache", "report"))
    store = copy / groundtruth.FILE
    records = groundtruth.Store(copy).records()  # (a line cut by an earlier test dropped)
    for r in records:
        r["test_accuracy"] += 0.125
    store.write_text("".join(json.dumps(r) + "\n" for r in records))
    meta_file = copy / "zoo" / "resnet-shapes" / nets.MEMBER_FILE
    meta = json.loads(meta_file.read_text())
    meta["weights_sha256"] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    args = ["bench", "verify", "--tiny", "--dir", str(copy), "--quiet", "--device", "cpu"]
    out = CliRunner().invoke(cli, [*args, "--runs", "2", "--member", "resnet-shapes"])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("DIFFERS  member resnet-shapes: weights differ")
    assert sum(line.startswith("DIFFERS  run") for line in lines) == 2
    assert "0 of 3 redone pieces of work match." in out.output
    out = CliRunner().invoke(cli, [*args, "--member", "resnet-nope"])
    assert out.exit_code == 2 and "no built zoo member resnet-nope" in out.output
    out = CliRunner().invoke(cli, ["bench", "verify", "--tiny", "--dir", str(tmp_path / "x")])
    assert out.exit_code == 2 and "no fine-tuning results" in out.output
