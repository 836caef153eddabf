"""The peers benchmark driver runs end to end on tiny sizes (so it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_peers_quick(tmp_path: Path) -> None:
    # an earlier run's table for another score is kept when a run covers a subset
    (tmp_path / "peers.json").write_text(json.dumps({"scores": {"other": {
        "title": "Other", "notes": "kept", "command": "c", "machine": "m", "load": "0",
        "records": []}}}))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--quick",
         "--scores", "logme", "--threads", "1", "--repeats", "1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "peers.json").read_text())
    assert set(data["scores"]) == {"logme", "other"}
    records = data["scores"]["logme"]["records"]
    assert [r["case"]["label"] for r in records] == ["quick N < D", "quick N > D"]
    for rec in records:
        assert rec["threads"] == 1 and rec["rows"][0]["impl"] == "zoosel"
        assert {"thuml", "transformer-ranker"} <= {r["impl"] for r in rec["rows"]}
        assert all(r["seconds"] > 0 for r in rec["rows"])
    wide, tall = records
    # N < D: the peers' evidence lacks -(D - k)/2 log alpha and is far off; N > D: close
    assert all(r["rel_diff"] > 0.5 for r in wide["rows"][1:3])
    assert all(r["rel_diff"] < 1e-5 for r in tall["rows"][1:])
    text = (tmp_path / "peers.md").read_text()
    assert "## LogME" in text and "## Other" in text
    assert "| quick N > D | 400 | 64 | 5 | 1 |" in text


def test_bench_peers_rejects_unknown_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--scores", "nope",
         "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode != 0 and "unknown scores" in proc.stderr


def test_bench_peers_render_gives_a_ratio_per_former_implementation() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_peers

    rows = [{"impl": "zoosel", "seconds": 2.0, "value": 1.0},
            {"impl": "reference", "seconds": 5.0, "value": 1.1, "rel_diff": 0.09},
            {"impl": "zoosel 0.1", "seconds": 8.0, "value": 1.0, "rel_diff": 0.0},
            {"impl": "zoosel v2", "seconds": 3.0, "value": 1.0, "rel_diff": 0.0}]
    case = {"n": 10, "d": 4, "c": 2, "label": "tiny"}
    results = {"scores": {"s": {"title": "S", "notes": "n", "command": "c", "machine": "m",
                                "load": "0", "records": [{"case": case, "threads": 1,
                                                          "rows": rows}]}}}
    lines = bench_peers.render(results).split("\n")
    head = next(line for line in lines if line.startswith("| case"))
    assert "| zoosel 0.1 / zoosel | zoosel v2 / zoosel |" in head
    row = next(line for line in lines if line.startswith("| tiny"))
    assert "| 2.50x | 4.00x | 1.50x |" in row  # fastest peer, then each former one
