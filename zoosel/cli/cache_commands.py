"""``zoosel cache ls`` and ``zoosel cache clear``."""

from __future__ import annotations

import click

from zoosel.cli import cli, friendly_errors


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@cli.group("cache")
def cache_group() -> None:
    """Inspect or empty the feature cache and the kept Hub listings."""


_dir_option = click.option("--cache-dir", help="Cache folder (default: $ZOOSEL_CACHE or "
                                                "~/.cache/zoosel).")


@cache_group.command("ls")
@_dir_option
@friendly_errors
def cache_ls(cache_dir: str | None) -> None:
    """List cache entries with their candidate, arrays and size, and the kept listings."""
    from zoosel.engine.cache import FeatureCache, default_cache_dir
    from zoosel.sources.listing_cache import ListingCache

    cache = FeatureCache(cache_dir or default_cache_dir())
    entries = cache.entries()
    for e in entries:
        click.echo(f"{e.key[:12]}  {_size(e.size):>10}  {e.candidate}  [{', '.join(e.arrays)}]")
    total = sum(e.size for e in entries)
    click.echo(f"{len(entries)} entries, {_size(total)} in {cache.root}")
    listings = ListingCache(cache_dir or default_cache_dir())
    click.echo(f"{len(listings.files())} Hub listings, {_size(listings.size())} in "
               f"{listings.root}")


@cache_group.command("clear")
@_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def cache_clear(cache_dir: str | None, yes: bool) -> None:
    """Delete every cache entry and every kept Hub listing."""
    from zoosel.engine.cache import FeatureCache, default_cache_dir
    from zoosel.sources.listing_cache import ListingCache

    cache = FeatureCache(cache_dir or default_cache_dir())
    listings = ListingCache(cache_dir or default_cache_dir())
    if not yes:
        click.confirm(f"Delete every entry under {cache.root} and {listings.root}?",
                      abort=True)
    click.echo(f"freed {_size(cache.clear() + listings.clear())}")
