"""Gathering a build's ground truth, scores and costs into the report's results dict."""

from __future__ import annotations

import json
import os
import platform
from typing import TYPE_CHECKING, Any

from zoosel.bench import groundtruth, nets, selectors
from zoosel.bench.results_file import SCORER_VERSIONS, merge_versions

if TYPE_CHECKING:
    from zoosel.bench.run import Bench

PREDICTORS = ("linft", "linft_grad")
"""Scorers whose value is a predicted fine-tuned accuracy."""


def collect(bench: Bench) -> dict[str, Any]:
    """The results dict :func:`zoosel.bench.report.write_report` takes, for ``bench``."""
    import torch

    from zoosel import __version__

    records = bench.store().records()
    truth = groundtruth.table(records)
    tasks: dict[str, dict[str, Any]] = {}
    regimes: list[str] = []
    versions: list[dict[str, str] | None] = []
    for job in bench.scoring_jobs():
        path = bench.root / "scores" / f"{job.name}.json"
        gt = truth.get(f"{job.task}/{job.regime}")
        if gt is None or not path.is_file():
            continue
        scored = json.loads(path.read_text())
        versions.append(scored.get("versions"))
        scores = {name: {m: v for m, v in values.items() if m in gt["accuracy"]}
                  for name, values in scored["scores"].items()}
        entry: dict[str, Any] = {
            "accuracy": gt["accuracy"], "scores": scores, "cost": scored["cost"],
            "finetune_seconds": gt["finetune_seconds"], "lr": gt["lr"],
            "num_samples": scored.get("num_samples"),
        }
        if gt["seed_accuracies"]:
            entry["seed_accuracies"] = gt["seed_accuracies"]
        predicted = {name: scores[name] for name in PREDICTORS if scores.get(name)}
        if predicted:
            entry["predicted"] = predicted
        if scored.get("errors"):
            entry["errors"] = scored["errors"]
        tasks.setdefault(job.task, {})[job.label] = entry
        if job.label not in regimes:
            regimes.append(job.label)
    members = bench.members()
    zoo = []
    zoo_meta = []
    for name, path in sorted(members.items()):
        meta = nets.member_meta(path)
        zoo_meta.append(meta)
        zoo.append({"id": name, "arch": meta.get("arch", "?"),
                    "source_domain": meta.get("source", "?"), "init": meta.get("init", "?"),
                    "source_accuracy": meta.get("source_accuracy", float("nan")),
                    "build_seconds": meta.get("train_seconds", float("nan")),
                    "params": meta.get("num_params")})
    times_file = bench.root / "times.json"
    build = json.loads(times_file.read_text()) if times_file.is_file() else {}
    trained = [m["build_seconds"] for m in zoo if isinstance(m["build_seconds"], (int, float))]
    if trained:  # survives interruptions, unlike the step's wall time
        build["zoo training, sum over members (one thread each)"] = float(sum(trained))
    profile = bench.profile
    recorded = merge_versions(versions)
    return {
        **({SCORER_VERSIONS: recorded} if recorded else {}),
        "generalist": bench.generalist_name() or "",
        "tasks": tasks,
        "regimes": regimes,
        "ablations": [r for r in regimes if r not in profile.regimes],
        "key_selectors": [s for s in ("lfc", "lgc", "logme", "leep") if _has(tasks, s)] or None,
        "zoo": zoo,
        "build": build,
        "meta": {
            "profile": profile.name, "zoosel": __version__, "image size": profile.size,
            "zoo members": len(members), "targets": len(bench.tasks),
            "regimes": ", ".join(profile.regimes), "learning rates": list(profile.lrs),
            "selector sample": f"{profile.score_per_class} per class "
                               f"(ablation: {selectors.ABLATION})",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch "
                       f"{torch.__version__}, {platform.python_version()}",
            "timing": "fine-tuning and scoring each on one thread",
            "devices": ", ".join(sorted({str(r.get("device", "cpu")) for r in records}
                                        | {str(m.get("device", "cpu")) for m in zoo_meta})
                                 ) or "cpu",
        },
    }


def _has(tasks: dict[str, dict[str, Any]], scorer: str) -> bool:
    return any(scorer in r["scores"] for t in tasks.values() for r in t.values())
