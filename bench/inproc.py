"""In-process measurements, run as a pinned subprocess: specialist micro-benchmarks and stage pieces.

    python -m bench.inproc --policy POLICY [--quick]

Prints one JSON object after the marker ``INPROCJSON``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .micro import run_micro
from .policy import SPECIALIST_ROUTE
from .stages import time_pieces
from .texts import TEXTS

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 2_000 if args.quick else 10_000
    out = {
        "micro": run_micro(args.quick),
        "pieces_us": time_pieces(args.policy, SPECIALIST_ROUTE, TEXTS[2], n),
    }
    print("INPROCJSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
