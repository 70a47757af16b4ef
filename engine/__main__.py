"""Command line: ``python -m engine replicate`` re-runs the grit analysis (see engine.replicate)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from engine.replicate import main as replicate_main

    return replicate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
