"""`python -m bench`: run the benchmark suite (see BENCHMARKS.md).

    python -m bench            full run (~5 min): raw JSON to bench/results/, a dated section appended
                               to BENCHMARKS.md
    python -m bench --quick    smoke run (< 2 min): JSON to bench/results/*.tmp (gitignored), nothing
                               appended unless --record
"""

from __future__ import annotations

import argparse
import sys

from .report import append_benchmarks_md, evaluate_targets, render_markdown, write_results
from .run import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shortened run for smoke checks")
    parser.add_argument("--no-peer", action="store_true", help="skip LiteLLM Proxy (no ratios)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--upstream-latency-ms", type=float, default=0.0)
    parser.add_argument("--record", action="store_true", help="append to BENCHMARKS.md even for --quick")
    args = parser.parse_args(argv)
    opts = Options(quick=args.quick, peer=not args.no_peer, profile=not args.no_profile, pin=not args.no_pin,
                   upstream_latency_ms=args.upstream_latency_ms)
    results = run(opts)
    results["targets"] = evaluate_targets(results)
    results["command"] = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_results(results)
    section = render_markdown(results, path.name, results["command"].strip())
    print("\n" + section)
    print(f"raw results: {path}")
    if not args.quick or args.record:
        print(f"appended to {append_benchmarks_md(section)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
