"""MODEL_CARD.md generation from a specialist's manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render_card", "write_card"]


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.2f}%"


def _model_lines(m: dict[str, Any]) -> list[str]:
    cfg = m["trained_with"]["config"]
    if m.get("kind") == "transformer":
        base, exp, tr = m["base_model"], m["export"], m["trained_with"]["training"]
        variants = ", ".join(
            f"{k}: dev accuracy {_pct(v['dev_accuracy'])}, {v['p50_ms_one_text']} ms p50 per text, "
            f"{v['bytes'] / 1e6:.1f} MB"
            for k, v in exp["variants"].items()
        )
        how = (
            f"- **Model:** {base['name']} ({base['license']}; {base['from']}), its weights unchanged (frozen), "
            f"mean pooling and a linear head fitted as a multinomial logistic regression (C={cfg['head_c']}) "
            f"on the train split's embeddings, max {cfg['max_tokens']} tokens, seed {cfg['seed']} (dev accuracy "
            f"{_pct(tr['dev_accuracy'])} in torch; {tr['train_seconds']} s with torch {tr['torch']} on the CPU)."
        ) if cfg.get("frozen") else (
            f"- **Model:** {base['name']} ({base['license']}; {base['from']}) fine-tuned with mean pooling and "
            f"a linear head: {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']} (head "
            f"{cfg['head_lr']}), warm-up {cfg['warmup']}, weight decay {cfg['weight_decay']}, max "
            f"{cfg['max_tokens']} tokens, seed {cfg['seed']}; best epoch on dev: {tr['best_epoch']} "
            f"(training {tr['train_seconds']} s with torch {tr['torch']} on the CPU)."
        )
        return [
            how,
            (
                f"- **Export:** ONNX opset {m['opset']}, **{exp['chosen']}** ({exp['rule']}; {variants}; int8 and "
                f"fp32 agree on {_pct(exp['dev_label_agreement_int8_fp32'])} of dev labels). Temperature "
                f"T={m['temperature']} fitted on {m['calibration'].removeprefix('temperature fitted on ')}, "
                "inside the graph."
            ),
            (
                "- **Runtime:** `specialists/encoder.py`: the `tokenizers` wheel (this `tokenizer.json`, padding "
                "off, truncation on) + onnxruntime (`input_ids`, `attention_mask` → `probabilities`), one "
                "intra-op thread; no torch. The session is created on first use."
            ),
            f"- **Tier-1 sibling:** `{m['sibling']}` (this model answers what the sibling is unsure of).",
            *_blend_lines(m.get("blend")),
        ]
    return [
        (
            "- **Model:** tf-idf n-grams ("
            + (f"word {tuple(cfg['word_ngram'])}" if cfg["word_ngram"][1] else "")
            + (f" + char_wb {tuple(cfg['char_ngram'])}" if cfg.get("char_ngram") else "")
            + (
                f" + word {tuple(cfg['prefix_ngram'])} over the first {cfg['prefix_chars']} characters"
                if cfg.get("prefix_chars")
                else ""
            )
            + (f" + marker matches of `{cfg['marker_pattern']}`" if cfg.get("marker_pattern") else "")
            + f", sublinear tf={cfg['sublinear_tf']}) → {'logistic regression' if cfg['model'] == 'lr' else 'linear SVM'}"
            f" (C={cfg['C']}, class_weight={cfg['class_weight']}), weights {cfg['weight_dtype']}, "
            f"{m['trained_with']['n_features']} features; temperature scaling T={m['temperature']} "
            f"fitted on {m['calibration']}."
        ),
        (
            "- **Runtime:** onnxruntime gather-and-sum graph (`ids`, `weights` → `probabilities`); featurizer in "
            "Python + numpy (`specialists/tokenizer.py`: n-gram lookup and counting in Python, tf-idf weighting "
            "and per-block l2 norm in numpy, once per batch in `predict`)."
        ),
    ]


def _blend_lines(blend: dict[str, Any] | None) -> list[str]:
    if not blend:
        return []
    bias = ("[" + ", ".join(f"{b:g}" for b in blend["bias"]) + "]" if len(blend["bias"]) <= 4
            else f"a bias per class ({len(blend['bias'])}, in manifest.json)")
    return [(
        f"- **Blend with the sibling** (`specialists/blend.py`): in a cascade after `{blend['sibling']}` "
        f"{blend['sibling_version']}, the answer is softmax({blend['w_sibling']:g} × log p_sibling + "
        f"{blend['w_self']:g} × log p_this + {bias}), fitted on {blend['fitted_on']}. After another "
        "specialist or another version of the sibling, this model answers alone."
    )]


def _sibling_lines(vs: dict[str, Any] | None) -> list[str]:
    if not vs:
        return []
    cas = vs["cascade"]
    rows = [
        ("tf-idf sibling alone", vs["sibling_accuracy"], vs["sibling_at_its_0.95_threshold"]),
        ("this model alone", vs["accuracy"], vs["tier2_at_its_0.95_threshold"]),
    ]
    lines = [
        "",
        f"## Against the tier-1 sibling `{vs['sibling']}` ({vs['sibling_version']}), test split",
        "",
        "| model | accuracy | threshold (dev / calibration 95% point) | answered at it | accuracy when answered |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_pct(acc)} | {sel['threshold']} | {_pct(sel['accepted'])} | "
        f"{_pct(sel['accuracy_when_accepted'])} |"
        for name, acc, sel in rows
    ]
    if vs.get("blended"):
        lines.append(f"| this model blended with the sibling (all rows) | {_pct(vs['blended_accuracy'])} | - | - | - |")
    tier2 = "this blended" if vs.get("blended") else "this"
    lines += [
        (
            f"| cascade (sibling ≥ {cas['thresholds'][0]}, else {tier2} ≥ {cas['thresholds'][1]}) | - | - | "
            f"{_pct(1 - cas['escalated_share'])} (tier 1 {_pct(cas['tier1_share'])}, tier 2 "
            f"{_pct(cas['tier2_share'])}) | {_pct(cas['accuracy_when_answered'])} |"
        ),
        "",
        "The rest of the cascade's inputs escalate to the foundation model (`hybrid-router simulate` prices it).",
    ]
    return lines


def render_card(m: dict[str, Any]) -> str:
    met = m["metrics"]
    src = m.get("source", {})
    transformer = m.get("kind") == "transformer"
    lines = [
        f"# Model card: `{m['name']}` specialist",
        "",
        m.get("description", ""),
        "",
        f"- **Version:** `{m['version']}` (sha256 of model.onnx: `{m['sha256']['model.onnx']}`)",
        f"- **Classes ({len(m['classes'])}):** "
        + ", ".join(f"`{c}`" for c in m["classes"][:40])
        + (" …" if len(m["classes"]) > 40 else ""),
        f"- **Out-of-scope label:** `{m['oos_label']}`"
        if m.get("oos_label")
        else "- **Out-of-scope label:** none",
        f"- **Input:** one text, truncated to {m['input']['max_chars']} characters.",
        *_model_lines(m),
        "",
        "## Data",
        "",
        f"- **Dataset:** {src.get('dataset', 'n/a')}",
        f"- **License:** {src.get('license', 'n/a')}",
        f"- **Citation:** {src.get('citation', 'n/a')}",
        f"- **Splits used:** {src.get('splits', 'n/a')}",
        f"- **Held-out protocol:** {src.get('protocol', 'not recorded')}",
        "",
        "## Metrics (test split, exported ONNX model)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test rows | {met['n']} |",
        f"| accuracy | {_pct(met['accuracy'])} |",
        f"| macro-F1 | {_pct(met['macro_f1'])} |",
        f"| ECE (15 bins) | {met['ece']:.4f} |",
        f"| mean confidence | {met['mean_confidence']:.4f} |",
    ]
    for a, share in met["risk_coverage"].items():
        lines.append(f"| coverage at {_pct(a)} accuracy (test curve) | {_pct(share)} |")
    for a, t in met.get("thresholds", {}).items():
        chk = met.get("threshold_check", {}).get(a, {})
        lines.append(
            f"| threshold for {_pct(a)} (calibration set) | {t} → test coverage "
            f"{_pct(chk.get('coverage'))}, accuracy {_pct(chk.get('accuracy'))} |"
        )
    if "oos" in met:
        for k, v in met["oos"].items():
            lines.append(f"| {k.replace('_', ' ')} | {v} |")
    par = met["parity"]
    lines += [
        (
            f"| parity {'predict_one vs batch' if transformer else 'vs sklearn'} | {_pct(par['label_agreement'])} "
            f"labels, max prob diff {par['max_abs_prob_diff']:.1e} ({par['n']} texts) |"
        ),
    ]
    if "latency_p50_us" in met:
        lines += [
            f"| predict_one latency p50 / p99 | {met['latency_p50_us']} µs / {met['latency_p99_us']} µs |",
            f"| batch throughput ({met['batch_size']}/batch) | {met['batch_texts_per_s']} texts/s |",
        ]
        if "lru_hit_p50_us" in met:
            lines.append(
                f"| predict_one p50 on a repeated text (LRU hit, `cache_size` > 0; not a cold figure) | "
                f"{met['lru_hit_p50_us']} µs |"
            )
    fb = met["file_bytes"]
    lines += [
        " / ".join(f"| {k}" if i == 0 else k for i, k in enumerate(fb)) + " | "
        + " / ".join(f"{v:,} B" for v in fb.values()) + " |",
        "",
        (
            "Speed measured on one core (intra-op threads 1) on a shared 2-core build machine, medians of 3 "
            "rounds; latencies are cold (no whole-text cache; per-word n-gram caches warm, as in steady state). "
            "`load_specialists(cache_size=N)` adds a per-specialist LRU of recent texts: its hit latency is "
            "listed separately and only applies to repeated inputs."
        ),
        "",
        "## Novelty and off-domain behaviour",
        "",
        f"`novelty` = {m['novelty']}.",
        "",
    ]
    nov = met.get("novelty_report", {})
    if nov:
        ind = nov["in_domain"]
        lines += [
            (
                f"Operating threshold = calibration-set threshold for {_pct(nov['operating_level'])} accuracy "
                f"(confidence ≥ {nov['operating_threshold']})."
            ),
            "",
            "| input | n | mean confidence | accepted at threshold | accuracy when accepted | mean novelty |",
            "|---|---|---|---|---|---|",
            (
                f"| in-domain test | {ind['n']} | {ind['mean_confidence']} | {_pct(ind['accepted_at_threshold'])} | "
                f"{_pct(ind['accuracy_at_threshold'])} | {ind['mean_novelty']} |"
            ),
        ]
        for k, v in nov.get("off_domain", {}).items():
            lines.append(
                f"| off-domain: {k} | {v['n']} | {v['mean_confidence']} | "
                f"{_pct(v['accepted_at_threshold'])} | (no labels: every answer is off-task) | "
                f"{v['mean_novelty']} |"
            )
        lines += [
            "",
            (
                "Off-domain texts are answered with one of this specialist's classes; confidence alone does not "
                "reliably reject them, so the gateway should also escalate on high novelty."
            ),
        ]
    lines += _sibling_lines(met.get("vs_sibling"))
    lines += [
        "",
        "## Intended use and limitations",
        "",
        "- A cheap first answer for the gateway; escalate to the LLM below the threshold or on high novelty.",
        (
            "- English only; a small encoder fine-tuned on one dataset: it reads word order and negation, but "
            "accuracy on text unlike the training data is likely lower. A few ms of CPU per text."
            if transformer
            else "- English only; bag-of-n-grams model (no word order beyond bigrams, no negation scope, no world "
            "knowledge). Accuracy on text unlike the training data is not measured and is likely much lower."
        ),
        "- Biases of the source dataset (domain, annotators, time period) carry over.",
        "",
        (
            "Rebuild: `python -m specialists.training build --only "
            + m["name"]
            + (
                "` (needs the training extra and `pip install torch==2.13.0`; seeds fixed: figures reproduce "
                "within 0.3 points, bytes may differ)."
                if transformer
                else "` (deterministic; the rebuilt model.onnx has the same sha256)."
            )
        ),
        "",
    ]
    return "\n".join(lines)


def write_card(out: Path, manifest: dict[str, Any]) -> None:
    (out / "MODEL_CARD.md").write_text(render_card(manifest), encoding="utf-8")
