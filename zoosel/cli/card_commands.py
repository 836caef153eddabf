"""``zoosel card push``: upload a ranking card and its JSON to a Hub repository."""

from __future__ import annotations

import click

from zoosel.cli import cli, friendly_errors


def upload_card(card: str, repo: str, *, repo_type: str = "dataset", no_pr: bool = False,
                dry_run: bool = False, metadata: bool = False) -> None:
    """Upload (or, with ``dry_run``, describe) the card at ``card`` and its JSON; with
    ``metadata``, also set the ``zoosel`` key of the repository's README.md metadata."""
    from zoosel.cards import plan_upload, push_card, redact

    plan = plan_upload(card, repo, repo_type=repo_type, create_pr=not no_pr, metadata=metadata)
    if dry_run:
        click.echo(redact(plan.describe(dry_run=True)))
        return
    click.echo(redact(plan.describe()), err=True)
    result = push_card(plan, say=lambda text: click.echo(redact(text), err=True))
    what = {
        "opened": "opened a pull request",
        "committed": "committed to main",
        "unchanged": f"nothing to upload: {plan.repo_type} {plan.repo_id} already has these "
                     "files unchanged on main",
        "already-open": "a pull request with this card is already open",
    }[result.outcome]
    click.echo(redact(f"{what}: {result.url}"))


@cli.group("card")
def card_group() -> None:
    """Share ranking cards (written by `zoosel select --card PATH`)."""


@card_group.command("push")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--repo", required=True, help="Hub repository to upload to, OWNER/NAME.")
@click.option("--repo-type", type=click.Choice(["dataset", "model", "space"]),
              default="dataset", show_default=True)
@click.option("--no-pr", is_flag=True, help="Commit to the main branch instead of opening a "
                                            "pull request.")
@click.option("--card-metadata", is_flag=True,
              help="Also set the `zoosel` key of the repository's README.md metadata to a "
                   "summary of the ranking, in the same commit; nothing else in it changes.")
@click.option("--dry-run", is_flag=True, help="Print what would be uploaded; upload nothing.")
@friendly_errors
def card_push(path: str, repo: str, repo_type: str, no_pr: bool, card_metadata: bool,
              dry_run: bool) -> None:
    """Upload the card PATH and its JSON (same name, .json) to a Hub repository, as a pull
    request unless --no-pr. The token comes from HF_TOKEN or `hf auth login`."""
    upload_card(path, repo, repo_type=repo_type, no_pr=no_pr, dry_run=dry_run,
                metadata=card_metadata)
