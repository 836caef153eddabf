"""Runs that survive being killed: per-candidate results on disk, resumed without rework."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import zoosel
from zoosel.errors import UsageError
from zoosel.testing.factories import make_timm_model_dir, write_image_folder

NUM_MODELS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    for i in range(NUM_MODELS):  # one architecture: every candidate costs the same
        make_timm_model_dir(root / "zoo" / f"m{i}", arch="test_resnet", num_classes=5, seed=i)
    write_image_folder(root / "data", num_classes=3, per_class=8, size=32)
    return root


def _rank(root, run_dir, **kwargs):
    return zoosel.rank(str(root / "data"), local_dirs=[str(root / "zoo")], use_cache=False,
                       progress=False, scorers=["lfc", "logme"], run_dir=run_dir, **kwargs)


class Counter:
    """Counts the models' nn.Module calls, independently of zoosel's own bookkeeping
    (torchvision's transforms, shared by candidates of the same preprocessing, aside)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.nn.Module.__call__

        def counting(module, *args, **kwargs):
            if not type(module).__module__.startswith("torchvision"):
                self.calls += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "__call__", counting)


def test_killed_run_resumes_without_recomputing(setup, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        full = Counter(patch)
        reference = _rank(setup, tmp_path / "reference")
    run_dir = tmp_path / "run"
    # The child kills itself with SIGKILL right after its second candidate is recorded.
    script = (
        "import os, signal, zoosel\n"
        "done = []\n"
        "def on_result(r):\n"
        "    done.append(r)\n"
        "    if len(done) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"zoosel.rank({str(setup / 'data')!r}, local_dirs=[{str(setup / 'zoo')!r}], "
        f"use_cache=False, progress=False, scorers=['lfc', 'logme'], run_dir={str(run_dir)!r},"
        " on_result=on_result)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), timeout=300)
    assert proc.returncode == -signal.SIGKILL
    finished = list((run_dir / "candidates").glob("*.json"))
    assert len(finished) == 2
    for file in finished:
        json.loads(file.read_text())  # whole files only

    with monkeypatch.context() as patch:
        partial = Counter(patch)
        resumed = _rank(setup, run_dir)
    assert sum(r.resumed for r in resumed) == len(finished)
    # every candidate costs the same number of forward calls: only the rest ran
    remaining = NUM_MODELS - len(finished)
    assert partial.calls * NUM_MODELS == full.calls * remaining
    assert [r.candidate for r in resumed] == [r.candidate for r in reference]
    for got, want in zip(resumed, reference, strict=True):
        assert got.scores == pytest.approx(want.scores, rel=1e-9)


def test_other_settings_in_the_same_run_dir_are_refused(setup, tmp_path):
    _rank(setup, tmp_path / "run", per_class=5)
    with pytest.raises(UsageError, match="other settings"):
        _rank(setup, tmp_path / "run", per_class=6)
    again = _rank(setup, tmp_path / "run", per_class=6, fresh=True)
    assert not any(r.resumed for r in again)
