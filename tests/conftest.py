"""Shared pytest configuration for zoosel's tests."""

from __future__ import annotations

# ============================================================================================
# Offline Hugging Face Hub
#
# huggingface_hub, datasets and transformers read HF_ENDPOINT, HF_HOME & co. once, when they are
# first imported. So this block runs at conftest import time, before any test module can import
# them: every Hub request of the test session goes to a local FakeHub (started by the `hub`
# fixture) and every cache lives in a fresh temporary directory. Nothing reaches the internet.
# ============================================================================================
import atexit
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from zoosel.testing.hub_server import FakeHub


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HF_HOME = tempfile.mkdtemp(prefix="zoosel-hf-home-")
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)

os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HOME=HF_HOME,
    HF_DATASETS_CACHE=os.path.join(HF_HOME, "datasets"),
    TORCH_HOME=os.path.join(HF_HOME, "torch"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    TOKENIZERS_PARALLELISM="false",
)
for _name in (
    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE", "TRANSFORMERS_CACHE", "HF_XET_CACHE",
):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def hub() -> Iterator[FakeHub]:
    """The session's FakeHub (``zoosel.testing.hub_server``) serving ``HF_ENDPOINT``.

    Shared by all tests: use repo ids unique to your test, and ``hub.reset_log()`` before
    asserting on ``hub.log``.
    """
    from zoosel.testing.hub_server import FakeHub

    with FakeHub(port=HUB_PORT) as server:
        yield server


# ============================================================================================
# zoosel's own feature cache also lives in the session's temporary directory.
os.environ["ZOOSEL_CACHE"] = os.path.join(HF_HOME, "zoosel")
# Tests change the FakeHub between listings: Hub listings are cached only when a test asks.
os.environ["ZOOSEL_LISTING_TTL"] = "0"
# Few confidence resamples by default: the machinery runs in every test, cheaply (tests of
# the confidence itself ask for their own number).
os.environ["ZOOSEL_CONFIDENCE"] = "5"


# ============================================================================================
# Shared fixtures


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a whole module (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``, so its module fixtures get it too): tiny
    tensors run faster that way, and a busy shared CPU slows them far less."""
    from zoosel.threads import serial

    with serial():
        yield


@pytest.fixture
def one_torch_thread_per_test() -> Iterator[None]:
    """One intra-op torch thread for each test; the count before it is restored even when
    the test changed it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The offline example (``zoosel example``): ``(zoo_dir, dataset_dir)``, built once.
    Read only: copy it before changing anything."""
    from zoosel.example import build_example

    return build_example(tmp_path_factory.mktemp("example"), progress=False)
