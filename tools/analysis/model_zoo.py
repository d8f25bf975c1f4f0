"""Write docs/model_zoo.md and the README's results table from metafile.yml.

    python tools/analysis/model_zoo.py [--metafile metafile.yml] [--check]

``metafile.yml`` (OpenMMLab's model-index format) is the one source of the model zoo's
numbers; this tool only lays them out, and writes each config's first lines (the
checkpoint it expects and how to make it) from the same entries
(:mod:`expedite_mm.analysis.model_zoo`). ``--check`` writes nothing and exits with 1 when a
shipped file differs from what the tool would write (``tests/tools/test_model_zoo.py`` runs it).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List

from expedite_mm.analysis.model_zoo import update

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metafile", default=osp.join(ROOT, "metafile.yml"))
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a shipped file differs")
    return parser.parse_args(argv)


def main(argv=None) -> List[str]:
    """Returns the files that differ(ed) from what the tool writes."""
    args = parse_args(argv)
    stale = update(ROOT, args.metafile, args.check)
    verb = "differ from metafile.yml (run tools/analysis/model_zoo.py)" if args.check else "written"
    print(f"{', '.join(stale)} {verb}" if stale else "up to date")
    return stale


if __name__ == "__main__":
    sys.exit(1 if main() and "--check" in sys.argv else 0)
