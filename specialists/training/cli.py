"""Command line: ``python -m specialists.training {train,build,select,eval}``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

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
    t.add_argument("--C", type=float, help="regularisation: tf-idf model (default 10), frozen head (default 1)")
    t.add_argument("--no-speed", action="store_true", help="skip latency/throughput measurement")
    t.add_argument(
        "--kind",
        choices=("tfidf", "transformer"),
        default="tfidf",
        help="tfidf (tier 1, default) or transformer (tier 2: fine-tunes all-MiniLM-L6-v2; needs --dev "
        "and the training extra: pip install torch==2.13.0, see README)",
    )
    t.add_argument("--sibling", type=Path,
                   help="transformer: the tf-idf specialist of the same task, to compare with and blend with")
    t.add_argument("--frozen", action="store_true",
                   help="transformer: keep the encoder's weights, fit a logistic-regression head on its embeddings "
                        "(many classes: minutes instead of epochs of fine-tuning)")
    b = sub.add_parser("build", help="rebuild the bundled specialists")
    b.add_argument("--data-root", type=Path)
    b.add_argument("--only", nargs="+")
    b.add_argument("--out", type=Path, default=REPO_ROOT / "specialists" / "bundled")
    b.add_argument(
        "--finetune-cache",
        type=Path,
        default=REPO_ROOT / ".cache" / "finetune",
        help="tier-2 checkpoints, reused when config and data are unchanged",
    )
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
    if args.kind == "transformer":
        return _train_transformer(args, load, source)
    config = TrainConfig(char_ngram=(2, 5) if args.char_ngrams else None, C=10.0 if args.C is None else args.C)
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


def _train_transformer(args: argparse.Namespace, load: Any, source: dict[str, Any]) -> int:
    from specialists.training.encoder_build import EncoderJob, build_encoder
    from specialists.training.finetune import FinetuneConfig

    if args.dev is None:
        print("--kind transformer needs --dev (epoch, int8/fp32 choice, temperature, thresholds)", file=sys.stderr)
        return 2
    train = load(args.train)
    job = EncoderJob(
        name=args.name,
        sibling=args.sibling.name if args.sibling else "",
        config=FinetuneConfig(frozen=args.frozen, head_c=1.0 if args.C is None else args.C),
        train=train,
        dev=load(args.dev),
        test=load(args.test),
        classes=sorted(set(train.labels)),
        source=source,
        description=f"Custom tier-2 specialist {args.name!r}.",
    )
    manifest = build_encoder(job, args.out, None, args.sibling, measure_speed=not args.no_speed)
    m = manifest["metrics"]
    print(f"{args.name}: accuracy {m['accuracy']:.4f} ECE {m['ece']:.4f} ({manifest['export']['chosen']}) -> {args.out}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from specialists.training.build import build
    from specialists.training.recipes import BUNDLED, TIER2, encoder_job_for, job_for

    root = default_data_root(args.data_root)
    if not root.is_dir():
        print(f"data root {root} not found (use --data-root or HYBRID_ROUTER_DATA)", file=sys.stderr)
        return 2
    names = args.only or [*BUNDLED, *TIER2]
    unknown = [n for n in names if n not in BUNDLED and n not in TIER2]
    if unknown:
        print(f"unknown specialist(s): {', '.join(unknown)}; known: {', '.join([*BUNDLED, *TIER2])}", file=sys.stderr)
        return 2
    for name in names:
        start = time.perf_counter()
        if name in TIER2:
            from specialists.training.encoder_build import build_encoder

            job = encoder_job_for(name, root)
            manifest = build_encoder(job, args.out / name, args.finetune_cache, args.out / job.sibling)
            m = manifest["metrics"]
            print(
                f"{name}: acc {m['accuracy']:.4f} ece {m['ece']:.4f} p50 {m.get('latency_p50_us')}us "
                f"{manifest['export']['chosen']} size {m['file_bytes']['model.onnx']} sha {manifest['version']} "
                f"({time.perf_counter() - start:.0f}s)",
                flush=True,
            )
            continue
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
