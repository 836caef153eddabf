"""The plugin manager: built-in plugins and third-party ones, loaded alike.

Built-in plugins are declared as entry points in group ``zoosel`` in zoosel's own
package metadata, exactly as a third-party plugin declares its own. When zoosel
runs from a source tree without installed metadata, the same modules are
registered directly, under the same names.

A broken plugin never takes zoosel down: entry points are loaded one by one, and
one whose import (or registration) fails is reported on stderr, by name, and left
out. Registration hooks are called plugin by plugin (:func:`collect`), so a plugin
whose hook raises is reported and skipped while the others still register.

Set ``ZOOSEL_TRACE_PLUGINS=1`` to print every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import pluggy

from zoosel import hookspecs
from zoosel.errors import PluginError

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("hf", "zoosel.sources.hf_hub"),
    ("timm", "zoosel.sources.timm_registry"),
    ("local", "zoosel.sources.local"),
    ("hf_cache", "zoosel.sources.hf_cache"),
    ("lfc", "zoosel.scorers.lfc"),
    ("logme", "zoosel.scorers.logme"),
    ("leep", "zoosel.scorers.leep"),
    ("nce", "zoosel.scorers.nce"),
    ("rsa", "zoosel.scorers.rsa"),
    ("domain_sim", "zoosel.scorers.domain_similarity"),
    ("lgc", "zoosel.scorers.lgc"),
    ("linft", "zoosel.scorers.linft"),
    ("hscore", "zoosel.scorers.hscore"),
    ("gbc", "zoosel.scorers.gbc"),
    ("transrate", "zoosel.scorers.transrate"),
    ("feature_metrics", "zoosel.scorers.feature_metrics"),
    ("random_score", "zoosel.scorers.random_score"),
    ("nleep", "zoosel.scorers.nleep"),
    ("sfda", "zoosel.scorers.sfda"),
    ("pactran", "zoosel.scorers.pactran"),
    ("etran", "zoosel.scorers.etran"),
    ("ncti", "zoosel.scorers.ncti"),
    ("knn", "zoosel.scorers.knn"),
    ("linear_probe", "zoosel.scorers.linear_probe"),
    ("consensus", "zoosel.scorers.consensus"),
    ("formats", "zoosel.formats"),
    ("ci", "zoosel.ci"),
)

ENTRY_POINT_GROUP = "zoosel"

_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_warned: set[str] = set()


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, as ``zoosel plugins`` shows it."""

    name: str
    module: str
    package: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        names = [impl.plugin_name for impl in impls]
        print(f"[zoosel trace] {hook_name}({', '.join(kwargs)}) -> {names}", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        exc = outcome.exception
        status = f"raised {exc!r}" if exc else "ok"
        print(f"[zoosel trace] {hook_name} {status}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


class _Manager(pluggy.PluginManager):
    """pluggy's manager, remembering the distribution of each entry point zoosel loaded."""

    def __init__(self) -> None:
        super().__init__("zoosel")
        self._entry_point_dists: list[tuple[Any, importlib.metadata.Distribution]] = []

    def list_plugin_distinfo(self) -> list[tuple[Any, Any]]:
        return [*super().list_plugin_distinfo(), *self._entry_point_dists]


def _warn(key: str, message: str) -> None:
    """Print a plugin warning once per process (hooks are called many times a run)."""
    if key in _warned:
        return
    _warned.add(key)
    print(f"zoosel: warning: {message}", file=sys.stderr)
    if os.environ.get("ZOOSEL_DEBUG"):
        traceback.print_exc()


def _dist_label(dist: importlib.metadata.Distribution) -> str:
    try:
        return f"{dist.metadata['Name']} {dist.version}"
    except Exception:  # unreadable metadata: still name the plugin
        return "unknown package"


def _load_entrypoints(pm: _Manager) -> None:
    """Register every ``zoosel`` entry point, each on its own: a failing one is skipped."""
    for dist in importlib.metadata.distributions():
        try:
            entry_points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        except Exception as exc:
            _warn(f"dist:{_dist_label(dist)}", f"cannot read the entry points of "
                  f"{_dist_label(dist)}: {exc!r}; its plugins are skipped.")
            continue
        for ep in entry_points:
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                if pm.has_plugin(ep.name):
                    pm.unregister(name=ep.name)
                _warn(f"load:{ep.name}", f"plugin {ep.name!r} ({_dist_label(dist)}, "
                      f"{ep.value}) failed to load and is skipped: {exc!r}")
                continue
            pm._entry_point_dists.append((plugin, dist))


def _new_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = _Manager()
    pm.add_hookspecs(hookspecs)
    if load_entrypoints and not os.environ.get("ZOOSEL_NO_ENTRYPOINTS"):
        _load_entrypoints(pm)
    for name, module_name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module_name), name=name)
    if os.environ.get("ZOOSEL_TRACE_PLUGINS"):
        _trace(pm)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _new_manager()
        return _pm


def reset_plugin_manager() -> None:
    """Forget the plugin manager (tests; after installing a plugin at run time)."""
    global _pm
    with _lock:
        _pm = None
        _warned.clear()


def plugin_infos() -> list[PluginInfo]:
    """Every registered plugin with its distribution and version when known."""
    pm = get_plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    builtin_modules = {module for _, module in DEFAULT_PLUGINS}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        if dist is None and module in builtin_modules:
            from zoosel import __version__

            package, version = "zoosel", __version__
        elif dist is not None:
            package, version = dist.metadata["name"], dist.version
        else:
            package, version = None, None
        infos.append(PluginInfo(name, module, package, version, hooks, module in builtin_modules))
    return sorted(infos, key=lambda i: (not i.builtin, i.name))


def collect(hook_name: str, kind: str, key: str = "name") -> dict[str, Any]:
    """Call a ``register_*`` hook and return what plugins registered, by name.

    Each plugin's implementation is called on its own, in pluggy's order. One that
    raises is reported on stderr with its name and skipped, along with whatever it
    registered before raising; the others are unaffected. A registration zoosel
    refuses (no name, a duplicate name) is a :class:`PluginError`, raised.
    """
    pm = get_plugin_manager()
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    plain = [impl for impl in impls if not (impl.hookwrapper or impl.wrapper)]
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for impl in reversed(plain):  # pluggy calls the last registered first
        registration = _Registration(impl.plugin_name, kind, key, found, owners)
        others = [other.plugin for other in plain if other is not impl]
        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(register=registration)
        except Exception as exc:
            if any(exc is refused for refused in registration.refusals):
                raise
            _warn(f"{hook_name}:{impl.plugin_name}",
                  f"plugin {impl.plugin_name!r} failed in {hook_name} and is skipped: {exc!r}")
            continue
        found.update(registration.pending)
        owners.update(dict.fromkeys(registration.pending, impl.plugin_name))
    return found


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call every plugin's ``hook_name`` on its own; one that raises is reported by name
    and skipped (for hooks without a ``register`` callback, such as ``register_commands``)."""
    pm = get_plugin_manager()
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    for impl in reversed(impls):
        others = [other.plugin for other in impls if other is not impl]
        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
        except Exception as exc:
            _warn(f"{hook_name}:{impl.plugin_name}",
                  f"plugin {impl.plugin_name!r} failed in {hook_name} and is skipped: {exc!r}")


class _Registration:
    """The ``register`` callback one plugin receives: checks names, holds what it adds."""

    def __init__(self, plugin: str, kind: str, key: str, found: dict[str, Any],
                 owners: dict[str, str]) -> None:
        self.plugin, self.kind, self.key = plugin, kind, key
        self.found, self.owners = found, owners
        self.pending: dict[str, Any] = {}
        self.refusals: list[PluginError] = []

    def __call__(self, obj: Any) -> None:
        name = getattr(obj, self.key, None)
        if not isinstance(name, str) or not name:
            error = PluginError(f"Plugin {self.plugin!r} registered a {self.kind} without a "
                                f"name: {obj!r}")
        elif name in self.pending:
            error = PluginError(f"Plugin {self.plugin!r} registers two {self.kind}s named "
                                f"{name!r}.")
        elif name in self.found:
            error = PluginError(f"Two plugins register a {self.kind} named {name!r}: "
                                f"{self.owners[name]!r} and {self.plugin!r}.")
        else:
            self.pending[name] = obj
            return
        self.refusals.append(error)
        raise error
