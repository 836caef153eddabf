"""The plugin packages under plugins/, installed and loaded through their entry points;
broken plugins; the plugin author's guide."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from click.testing import CliRunner

from zoosel import hookspecs
from zoosel.api import list_formats, list_scorers, list_sources
from zoosel.cli import cli
from zoosel.cli import commands as _commands  # noqa: F401  (registers the commands)
from zoosel.errors import PluginError
from zoosel.formats import OutputFormat
from zoosel.hookspecs import hookimpl
from zoosel.plugins import get_plugin_manager, reset_plugin_manager
from zoosel.testing.factories import make_timm_model_dir, write_image_folder
from zoosel.types import Need, Scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = {
    "zoosel-rankagg": (ROOT / "plugins" / "zoosel-rankagg", "zoosel_rankagg", "rankagg"),
    "zoosel-torchscript": (ROOT / "plugins" / "zoosel-torchscript", "zoosel_torchscript",
                           "torchscript"),
}


def _version(folder: Path) -> str:
    text = (folder / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"$', text, re.MULTILINE).group(1)


def _installed_from(package: str, folder: Path) -> bool:
    """Whether ``package`` is installed, at the version of ``folder``, from ``folder``."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    url = direct.get("url", "")
    return dist.version == _version(folder) and url.startswith("file://") and \
        Path(unquote(url[len("file://"):])).resolve() == folder.resolve()


def _activate(package: str, module: str) -> None:
    """Make a package installed after this interpreter started importable, as ``site``
    would have at start-up: run its ``.pth`` files."""
    importlib.invalidate_caches()
    if importlib.util.find_spec(module) is not None:
        return
    for file in importlib.metadata.distribution(package).files or ():
        if file.name.endswith(".pth"):
            pth = Path(file.locate())
            for line in pth.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith(("import ", "import\t")):
                    exec(line)  # what site.addpackage does with import lines
                elif str((pth.parent / line).resolve()) not in sys.path:
                    sys.path.append(str((pth.parent / line).resolve()))
    importlib.invalidate_caches()
    assert importlib.util.find_spec(module) is not None, f"{module} is not importable"


@pytest.fixture(scope="session")
def installed_plugins():
    """Both plugin packages installed (editable) into this environment, once."""
    missing = [folder for name, (folder, _, _) in PLUGIN_DIRS.items()
               if not _installed_from(name, folder)]
    if missing:
        args = [arg for folder in missing for arg in ("-e", str(folder))]
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", *args],
            capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    for name, (_, module, _) in PLUGIN_DIRS.items():
        _activate(name, module)
    reset_plugin_manager()
    yield {name: _version(folder) for name, (folder, _, _) in PLUGIN_DIRS.items()}
    reset_plugin_manager()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A three-model zoo, a 3-class image folder and a feature cache shared by the module."""
    root = tmp_path_factory.mktemp("tiny")
    data = write_image_folder(root / "data", num_classes=3, per_class=4, size=16)
    for name, arch, seed in (("resnet-a", "test_resnet", 0), ("resnet-b", "test_resnet", 1),
                             ("vit", "test_vit", 2)):
        make_timm_model_dir(root / "zoo" / name, arch=arch, num_classes=5, seed=seed)
    return root / "zoo", data, root / "cache"


def run(*args: str, code: int = 0, env: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)
    assert result.exit_code == code, result.output
    return result


# --- the plugin author's guide -----------------------------------------------------------


def _hookspec_signatures() -> dict[str, str]:
    """``{hook: "def hook(params) -> return"}`` exactly as written in zoosel/hookspecs.py."""
    tree = ast.parse(Path(hookspecs.__file__).read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) == "hookspec" for d in node.decorator_list):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            found[node.name] = f"def {node.name}({ast.unparse(node.args)}){returns}"
    return found


def test_every_hookspec_is_in_the_plugin_guide_with_its_exact_signature():
    signatures = _hookspec_signatures()
    runtime = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, "zoosel_spec")}
    assert signatures and set(signatures) == runtime
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for signature in signatures.values():
        assert signature in guide, f"docs/plugins.md lacks `{signature}`"
    assert "register_sources(register: Callable[[ModelSource], None]) -> None" in guide


def test_every_hook_is_called_or_implemented_by_a_test():
    sources = {p.name: p.read_text() for p in (ROOT / "tests").glob("*.py")}
    for name in _hookspec_signatures():
        pattern = re.compile(rf"(\bdef {name}\(|\.{name}\()")
        users = [file for file, text in sources.items() if pattern.search(text)]
        assert users, f"no test under tests/ calls or implements {name}"


def test_readme_links_the_plugin_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()


# --- the packages, through their entry points ----------------------------------------------


def test_plugins_command_shows_each_package_and_version(installed_plugins):
    infos = {p["name"]: p for p in json.loads(run("plugins", "--json").output)}
    for package, (_, module, name) in PLUGIN_DIRS.items():
        info = infos[name]
        assert (info["package"], info["version"]) == (package, installed_plugins[package])
        assert info["module"] == module and not info["builtin"]
    assert infos["rankagg"]["hooks"] == ["register_scorers"]
    assert infos["torchscript"]["hooks"] == ["register_sources"]
    # a fresh interpreter finds them through the installed metadata alone
    proc = subprocess.run([sys.executable, "-m", "zoosel", "plugins"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    for package, (_, _, name) in PLUGIN_DIRS.items():
        assert f"{package} {installed_plugins[package]}" in lines[name]
    assert "warning" not in proc.stderr


def test_rankagg_on_a_hand_worked_pool(installed_plugins):
    from zoosel_rankagg import aggregate, rank_positions

    pool = {
        "A": {"lfc": 0.3, "logme": -1.0},
        "B": {"lfc": 0.1, "logme": -0.5},
        "C": {"lfc": 0.2, "logme": -0.5},
    }
    # lfc: B < C < A -> positions 0, 1/2, 1; logme: A < B = C -> 0, then 3/4 each (ranks
    # 2 and 3 averaged to 2.5, i.e. (2.5 - 1) / 2)
    assert aggregate(pool) == pytest.approx({"A": 0.5, "B": 0.375, "C": 0.625})
    assert rank_positions({"x": 5.0}) == {"x": 1.0}
    assert rank_positions({"x": 1.0, "y": 1.0}) == {"x": 0.5, "y": 0.5}
    # a component missing for one candidate is ranked among the others only
    partial = aggregate({"A": {"lfc": 0.3, "logme": 1.0}, "B": {"lfc": 0.1}})
    assert partial == pytest.approx({"A": 1.0, "B": 0.0})


def test_rankagg_as_a_scorer_over_a_local_zoo(installed_plugins, tiny, tmp_path):
    zoo, data, cache = tiny
    scorer = list_scorers()["rankagg"]
    assert scorer.needs == frozenset({Need.FEATURES}) and scorer.pool_normalize is not None
    out = run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
              "--cache-dir", str(cache), "-s", "rankagg", "-s", "lfc",
              "-s", "logme", "--format", "json").output
    ranking = json.loads(out)
    assert ranking["pool_relative"] == ["rankagg"]
    rows = ranking["ranking"]
    assert len(rows) == 3
    names = set(rows[0]["components"]["rankagg"])
    assert {"lfc", "logme"} <= names  # and the other components that are registered
    for row in rows:
        parts = row["components"]["rankagg"]
        assert set(parts) == names
        assert parts["lfc"] == pytest.approx(row["scores"]["lfc"], rel=1e-9)
        assert parts["logme"] == pytest.approx(row["scores"]["logme"], rel=1e-9)

    def positions(name):  # 0, 1/2, 1 from worst to best; tied values share their mean
        from scipy.stats import rankdata

        values = [r["components"]["rankagg"][name] for r in rows]
        ranks = (rankdata(values, method="average") - 1) / (len(rows) - 1)
        return {r["candidate"]: float(q) for r, q in zip(rows, ranks, strict=True)}

    by_component = [positions(name) for name in sorted(names)]
    for row in rows:
        expected = sum(p[row["candidate"]] for p in by_component) / len(by_component)
        assert row["scores"]["rankagg"] == pytest.approx(expected)
    values = [r["scores"]["rankagg"] for r in rows]
    assert values == sorted(values, reverse=True)
    # one feature set (zoosel score) is no pool: asking for it says what to do instead
    import numpy as np

    feats = torch.randn(12, 6, generator=torch.Generator().manual_seed(0)).numpy()
    np.savez(tmp_path / "f.npz", features=feats, labels=np.arange(12) % 3)
    refused = run("score", "--features", str(tmp_path / "f.npz"), "-s", "rankagg", code=2)
    assert "rankagg compares candidates" in refused.output and "Traceback" not in refused.output


class _Extractor(torch.nn.Module):
    """Returns (features, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten())
        self.head = torch.nn.Linear(24, 7)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


class _FeaturesOnly(torch.nn.Module):
    """Returns features only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _export(module: torch.nn.Module, path: Path, *, trace: bool = False, **sidecar) -> Path:
    import warnings

    torch.manual_seed(0)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        scripted = (torch.jit.trace(module, torch.zeros(1, 3, 20, 20)) if trace
                    else torch.jit.script(module))
        torch.jit.save(scripted, str(path))
    config = {"input_size": 20, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], **sidecar}
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


def test_torchscript_models_in_select(installed_plugins, tiny, tmp_path):
    _, data, _ = tiny
    torch.manual_seed(0)
    with_head = _export(_Extractor(), tmp_path / "with_head.pt",
                        labels=[f"c{i}" for i in range(7)])
    features_only = _export(_FeaturesOnly(), tmp_path / "plain.pt", trace=True,
                            input_size=[18, 22], interpolation="bicubic", crop_pct=0.9)
    common = ["select", "--dataset", str(data), "-q", "--no-cache", "--format", "json",
              "-s", "lfc", "-s", "leep", "--model", f"torchscript:{with_head}",
              "--model", f"torchscript:{features_only}"]
    ranking = json.loads(run(*common, "--allow-pickle").output)
    assert not ranking["failed"]
    rows = {Path(r["candidate"].split(":", 1)[1].rsplit("@", 1)[0]).name: r
            for r in ranking["ranking"]}
    assert set(rows["with_head.pt"]["scores"]) == {"lfc", "leep"}
    assert set(rows["plain.pt"]["scores"]) == {"lfc"}  # no head: no source probabilities
    assert rows["with_head.pt"]["num_params"] == sum(
        p.numel() for p in _Extractor().parameters())
    # refused without --allow-pickle, with the reason
    refused = run(*common, code=1)
    assert "--allow-pickle" in refused.output and "TorchScript" in refused.output
    assert "Traceback" not in refused.output


def test_torchscript_revision_is_a_content_hash_and_sidecar_is_checked(installed_plugins,
                                                                        tmp_path):
    source = list_sources()["torchscript"]
    model = _export(_FeaturesOnly(), tmp_path / "m.pt", trace=True)
    first = source.resolve(str(model))
    assert first.revision and first.id.startswith(f"torchscript:{model.resolve()}@")
    assert source.resolve(str(model)).revision == first.revision
    model.with_suffix(".json").write_text(json.dumps(
        {"input_size": 20, "mean": [0.4, 0.4, 0.4], "std": [0.25, 0.25, 0.25]}))
    assert source.resolve(str(model)).revision != first.revision
    assert list(source.list_candidates(None)) == []
    from zoosel.errors import CandidateError

    model.with_suffix(".json").write_text(json.dumps({"input_size": 20, "mean": [0.5]}))
    with pytest.raises(CandidateError, match="'mean' must be a list of three numbers"):
        source.resolve(str(model))
    model.with_suffix(".json").unlink()
    with pytest.raises(CandidateError, match=r"needs a sidecar m\.json"):
        source.resolve(str(model))


# --- broken plugins ------------------------------------------------------------------------


def _broken_distribution(root: Path) -> Path:
    """A throwaway installed distribution whose entry point's module raises on import."""
    dist_info = root / "zoosel_broken_demo-0.3.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: zoosel-broken-demo\nVersion: 0.3.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[zoosel]\nbrokendemo = zoosel_broken_demo_mod\n")
    (root / "zoosel_broken_demo_mod.py").write_text(
        "raise RuntimeError('this plugin cannot be imported')\n")
    return root


def test_an_entry_point_that_fails_to_import_is_reported_and_skipped(tiny, tmp_path):
    zoo, data, cache = tiny
    root = _broken_distribution(tmp_path / "site")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    reset_plugin_manager()
    try:
        result = run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
                     "--cache-dir", str(cache), "-s", "lfc", "--format", "json")
        assert len(json.loads(result.stdout)["ranking"]) == 3
        assert "'brokendemo'" in result.stderr and "zoosel-broken-demo 0.3.0" in result.stderr
        assert "this plugin cannot be imported" in result.stderr
        assert result.stderr.count("'brokendemo'") == 1  # reported once, not per hook call
        assert get_plugin_manager().get_plugin("brokendemo") is None
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
        reset_plugin_manager()
    # the zoosel script itself survives it too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "zoosel", "plugins"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "'brokendemo'" in proc.stderr and "lfc" in proc.stdout


class _Exploding:
    """Registers a scorer, then raises: neither it nor its scorer may take the run down."""

    @hookimpl
    def register_scorers(self, register):
        register(Scorer("halfway", lambda inputs: 0.0, frozenset({Need.FEATURES}), "never"))
        raise RuntimeError("exploding plugin")


class _Quiet:
    @hookimpl
    def register_scorers(self, register):
        register(Scorer("quietnorm", lambda inputs: float(inputs.features.norm()),
                        frozenset({Need.FEATURES}), "feature norm"))


def test_a_plugin_whose_hook_raises_is_reported_and_skipped(tiny, tmp_path):
    zoo, data, cache = tiny
    pm = get_plugin_manager()
    pm.register(_Quiet(), name="quiet-plugin")
    pm.register(_Exploding(), name="exploding-plugin")  # called first: registered last
    try:
        scorers = list_scorers()
        assert "halfway" not in scorers
        assert {"lfc", "logme", "quietnorm"} <= set(scorers)
        result = run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
                     "--cache-dir", str(cache), "-s", "lfc", "-s", "quietnorm",
                     "--format", "json")
        rows = json.loads(result.stdout)["ranking"]
        assert len(rows) == 3 and all("quietnorm" in r["scores"] for r in rows)
        bad = run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
                  "--no-cache", "-s", "halfway", code=2)
        assert "Unknown scorer 'halfway'" in bad.output
    finally:
        pm.unregister(name="exploding-plugin")
        pm.unregister(name="quiet-plugin")
        reset_plugin_manager()
    # the warning names the plugin, once per process
    pm = get_plugin_manager()
    pm.register(_Exploding(), name="exploding-plugin")
    try:
        result = run("scorers")
        assert result.stderr.count("'exploding-plugin'") == 1
        assert "register_scorers" in result.stderr and "exploding plugin" in result.stderr
        assert "lfc" in result.stdout
    finally:
        pm.unregister(name="exploding-plugin")


def test_a_registration_zoosel_refuses_is_an_error_not_a_warning():
    class Nameless:
        @hookimpl
        def register_scorers(self, register):
            register(Scorer("", lambda inputs: 0.0, frozenset({Need.FEATURES}), "no name"))

    class Twice:
        @hookimpl
        def register_scorers(self, register):
            for _ in range(2):
                register(Scorer("twice", lambda inputs: 0.0, frozenset({Need.FEATURES}), "x"))

    pm = get_plugin_manager()
    for plugin, message in ((Nameless(), "Plugin 'odd' registered a scorer without a name"),
                            (Twice(), "Plugin 'odd' registers two scorers named 'twice'")):
        pm.register(plugin, name="odd")
        try:
            with pytest.raises(PluginError, match=message):
                list_scorers()
        finally:
            pm.unregister(name="odd")


class _IdsFormat:
    """A third-party output format: candidate ids, one per line."""

    @hookimpl
    def register_formats(self, register):
        register(OutputFormat("ids", lambda ranking: "".join(
            f"{r.candidate}\n" for r in ranking.results), (".ids",)))


def test_a_format_plugin(tiny, tmp_path):
    zoo, data, cache = tiny
    pm = get_plugin_manager()
    pm.register(_IdsFormat(), name="ids-format")
    try:
        assert "ids" in list_formats()
        out = run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
                  "--cache-dir", str(cache), "-s", "lfc", "--format", "ids").stdout
        assert len(out.splitlines()) == 3 and all(
            line.startswith("local:") for line in out.splitlines())
        run("select", "--dataset", str(data), "--local-dir", str(zoo), "-q",
            "--cache-dir", str(cache), "-s", "lfc", "-o", str(tmp_path / "r.ids"))
        assert (tmp_path / "r.ids").read_text() == out
    finally:
        pm.unregister(name="ids-format")
    assert "ids" not in list_formats()
