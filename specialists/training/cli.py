"""Command line: ``python -m specialists.training {train,build,select,eval}``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from specialists.training.data import REPO_ROOT, Split, default_data_root, load_split
from specialists.training.train import TrainConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m specialists.training", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one specialist from labeled JSONL/CSV")
    t.add_argument("--name", required=True)
    t.add_argument("--train", required=True, type=Path)
    t.add_argument("--dev", type=Path)
    t.add_argument("--test", required=True, type=Path)
    t.add_argument("--format", choices=("jsonl", "csv"))
    t.add_argument("--text-field", default="text")
    t.add_argument("--label-field", default="label")
    t.add_argument("--oos-label")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--source-md", type=Path)
    t.add_argument("--char-ngrams", action="store_true", help="add char_wb 2-5 n-grams")
    t.add_argument("--C", type=float, default=10.0)
    t.add_argument("--no-speed", action="store_true", help="skip latency/throughput measurement")
    b = sub.add_parser("build", help="rebuild the bundled specialists")
    b.add_argument("--data-root", type=Path)
    b.add_argument("--only", nargs="+")
    b.add_argument("--out", type=Path, default=REPO_ROOT / "specialists" / "bundled")
    s = sub.add_parser("select", help="choose the bundled recipes on dev splits -> selection.json")
    s.add_argument("--data-root", type=Path)
    s.add_argument("--only", nargs="+")
    e = sub.add_parser("eval", help="evaluate specialists on their test splits, write plots")
    e.add_argument("--dir", type=Path, default=REPO_ROOT / "specialists" / "bundled")
    e.add_argument("--data-root", type=Path)
    e.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "eval")
    return p


def _train(args: argparse.Namespace) -> int:
    from specialists.training.build import Job, build
    from specialists.training.recipes import source_info

    def load(path: Path) -> Split:
        return load_split(path, args.format, args.text_field, args.label_field)

    source = {
        "dataset": str(args.train),
        "license": "see source",
        "citation": "see source",
        "splits": f"train={args.train} dev={args.dev} test={args.test}",
    }
    if args.source_md:
        source = source_info(args.source_md.parent, source["splits"], args.source_md) | {
            "source_md": str(args.source_md)
        }
    config = TrainConfig(char_ngram=(2, 5) if args.char_ngrams else None, C=args.C)
    job = Job(
        name=args.name,
        config=config,
        train=load(args.train),
        test=load(args.test),
        dev=load(args.dev) if args.dev else None,
        oos_label=args.oos_label,
        source=source,
        description=f"Custom specialist {args.name!r}.",
    )
    manifest = build(job, args.out, measure_speed=not args.no_speed)
    m = manifest["metrics"]
    print(
        f"{args.name}: accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} ECE {m['ece']:.4f} "
        f"parity {m['parity']['label_agreement']:.2%} -> {args.out}"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    from specialists.training.build import build
    from specialists.training.recipes import BUNDLED, job_for

    root = default_data_root(args.data_root)
    if not root.is_dir():
        print(f"data root {root} not found (use --data-root or HYBRID_ROUTER_DATA)", file=sys.stderr)
        return 2
    names = args.only or list(BUNDLED)
    unknown = [n for n in names if n not in BUNDLED]
    if unknown:
        print(f"unknown specialist(s): {', '.join(unknown)}; known: {', '.join(BUNDLED)}", file=sys.stderr)
        return 2
    for name in names:
        start = time.perf_counter()
        manifest = build(job_for(name, root), args.out / name)
        m = manifest["metrics"]
        print(
            f"{name}: acc {m['accuracy']:.4f} f1 {m['macro_f1']:.4f} ece {m['ece']:.4f} "
            f"p50 {m['latency_p50_us']}us batch {m['batch_texts_per_s']}/s "
            f"size {m['file_bytes']['model.onnx']} sha {manifest['version']} ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
    return 0


def _select(args: argparse.Namespace) -> int:
    from specialists.training.recipes import BUNDLED
    from specialists.training.select import write_selection

    root = default_data_root(args.data_root)
    if not root.is_dir():
        print(f"data root {root} not found (use --data-root or HYBRID_ROUTER_DATA)", file=sys.stderr)
        return 2
    names = args.only or list(BUNDLED)
    unknown = [n for n in names if n not in BUNDLED]
    if unknown:
        print(f"unknown specialist(s): {', '.join(unknown)}; known: {', '.join(BUNDLED)}", file=sys.stderr)
        return 2
    write_selection(names, root)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from specialists.training.report import evaluate_dir

    rows = evaluate_dir(args.dir, default_data_root(args.data_root), args.out)
    print(json.dumps({"written": str(args.out), "specialists": len(rows)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (also used by ``hybrid-router train|eval|specialists-build``)."""
    args = _parser().parse_args(argv)
    handler = {"train": _train, "build": _build, "select": _select, "eval": _eval}[args.command]
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
