"""Record the scorer versions of a committed build in its ``results.json``.

For results written before ``zoosel bench run`` recorded them: adds (or replaces) the one
top-level key ``scorer_versions`` and changes nothing else; the file is rewritten the way
``zoosel bench report`` writes it (and refused if that would change any other line).
Give only versions established for the build (see its BUILD.md)::

    python benchmarks/record_scorer_versions.py RESULTS.json sfda=1 nleep=0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoosel.bench.results_file import SCORER_VERSIONS, load_results, measured_scores


def _dump(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("versions", nargs="+", metavar="SCORE=VERSION")
    args = parser.parse_args(argv)
    text = args.results.read_text(encoding="utf-8")
    data = load_results(args.results)
    if _dump(data) != text:
        print(f"{args.results} is not formatted as zoosel writes it; not rewritten.",
              file=sys.stderr)
        return 1
    versions = dict(v.partition("=")[::2] for v in args.versions)
    unknown = sorted(set(versions) - measured_scores(data))
    if unknown or not all(versions.values()):
        print(f"not measured in {args.results} or no version: {', '.join(unknown)}",
              file=sys.stderr)
        return 1
    data[SCORER_VERSIONS] = dict(sorted(versions.items()))
    args.results.write_text(_dump(data), encoding="utf-8")
    print(f"{args.results}: {SCORER_VERSIONS} of {len(versions)} scores recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
