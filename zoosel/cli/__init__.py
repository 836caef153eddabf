"""The ``zoosel`` command line: parse, call :mod:`zoosel.api`, render. Nothing else."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from zoosel import __version__
from zoosel.errors import NoResultsError, ZooselError

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn zoosel's errors into a message and an exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NoResultsError as exc:
            if exc.ranking is not None and not kwargs.get("quiet"):
                from zoosel.formats import render_table

                click.echo(render_table(exc.ranking), err=True)
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except ZooselError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("Interrupted.", fg="red", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("ZOOSEL_DEBUG"):
                traceback.print_exc()
            else:
                click.secho(
                    f"Internal error: {type(exc).__name__}: {exc}\n"
                    "This is a bug in zoosel or a plugin; rerun with ZOOSEL_DEBUG=1 for the "
                    "traceback and report it.", fg="red", err=True,
                )
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zoosel")
def cli() -> None:
    """Rank a zoo of pre-trained models for your dataset, without fine-tuning them."""


def main() -> None:
    """Entry point of the ``zoosel`` script and ``python -m zoosel``."""
    from zoosel.cli import (  # noqa: F401  (built-in commands)
        bench_commands,
        cache_commands,
        card_commands,
        commands,
    )
    from zoosel.plugins import call_each

    call_each("register_commands", cli=cli)
    cli(prog_name="zoosel")
