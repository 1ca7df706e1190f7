"""Foundation-model outcomes for offline simulation: what the foundation model would answer, and cost.

Input: labelled texts (JSONL ``{"text", "label"}``) and one source of foundation answers:

- a *replay* file, JSONL ``{"text", "answer", "prompt_tokens"?, "completion_tokens"?, "model"?}``:
  the recorded answer of a real model to each input, matched on the text (exactly, then with
  whitespace collapsed and case folded);
- an *assumed accuracy* ``A``: the foundation model is right with probability A, used as a
  deterministic expectation (each escalated row counts A of a correct answer), never sampled;
- *live* calls through `router.escalation.Escalator`, the server's own client.

Output: `FoundationOutcomes`, per row the expected correctness (1/0, or A; NaN = unknown) and the
prompt/completion tokens, and `Pricing`, USD per token from litellm's bundled price table read by
`router.pricing.PriceTable` (as the server prices calls; litellm itself is imported only for live).

Token counts the replay does not record are estimated: about 4 characters per token for the
classification prompt (the built-in system prompt with the label list, or the route's `prompt`)
plus the text, and the label's length for the completion.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from router.pricing import PriceTable

__all__ = [
    "DEFAULT_PRICE_MODEL",
    "FoundationOutcomes",
    "LabeledData",
    "Pricing",
    "ReplayError",
    "assumed_outcomes",
    "collect_live",
    "estimate_tokens",
    "load_labeled",
    "load_pricing",
    "load_replay",
    "replay_outcomes",
]

DEFAULT_PRICE_MODEL = "gpt-4o-mini"
_CHARS_PER_TOKEN = 4
_MESSAGE_OVERHEAD_TOKENS = 4
"""Per chat message (role and separators), as OpenAI's cookbook counts them."""


class ReplayError(Exception):
    """A data, replay or pricing input is unusable; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class LabeledData:
    texts: list[str]
    labels: list[str]
    path: str


@dataclass(frozen=True, slots=True)
class ReplayRow:
    answer: str
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None


@dataclass(frozen=True, slots=True)
class FoundationOutcomes:
    """Per input row: expected correctness of the foundation answer, and its token counts."""

    correct: npt.NDArray[np.float64]
    """1.0 right, 0.0 wrong, A for an assumed accuracy, NaN when unknown (e.g. missing in the replay)."""
    prompt_tokens: npt.NDArray[np.float64]
    completion_tokens: npt.NDArray[np.float64]
    source: str
    """One line saying where the answers come from and which assumptions were made."""
    missing: int = 0
    """Rows the replay (or the live run) has no answer for."""
    measured_tokens: int = 0
    """Rows whose token counts were recorded rather than estimated."""


@dataclass(frozen=True, slots=True)
class Pricing:
    model: str
    usd_per_prompt_token: float
    usd_per_completion_token: float
    note: str = ""

    def cost(self, prompt_tokens: npt.NDArray[np.float64],
             completion_tokens: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return prompt_tokens * self.usd_per_prompt_token + completion_tokens * self.usd_per_completion_token


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read ({exc})") from exc
    rows = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(f"{path}:{n}: not JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise ReplayError(f"{path}:{n}: expected a JSON object")
        rows.append((n, obj))
    return rows


def load_labeled(path: Path, limit: int | None = None) -> LabeledData:
    """Read ``{"text", "label"}`` lines (the first `limit` of them when given)."""
    texts, labels = [], []
    for n, obj in _jsonl(path):
        text, label = obj.get("text"), obj.get("label")
        if not isinstance(text, str) or not isinstance(label, str):
            raise ReplayError(f"{path}:{n}: needs string fields 'text' and 'label'")
        texts.append(text)
        labels.append(label)
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise ReplayError(f"{path}: no labelled rows")
    return LabeledData(texts, labels, str(path))


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def load_replay(path: Path) -> dict[str, ReplayRow]:
    """Recorded answers by text; later duplicates of a text win."""
    rows: dict[str, ReplayRow] = {}
    for n, obj in _jsonl(path):
        text, answer = obj.get("text"), obj.get("answer")
        if not isinstance(text, str) or not isinstance(answer, str):
            raise ReplayError(f"{path}:{n}: needs string fields 'text' and 'answer'")
        tokens = []
        for key in ("prompt_tokens", "completion_tokens"):
            value = obj.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ReplayError(f"{path}:{n}: {key} must be a non-negative integer")
            tokens.append(value)
        model = obj.get("model")
        rows[text] = ReplayRow(answer, tokens[0], tokens[1], model if isinstance(model, str) else None)
    if not rows:
        raise ReplayError(f"{path}: no replay rows")
    return rows


def estimate_tokens(texts: Sequence[str], labels: Sequence[str], prompt: str | None,
                    answers: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(prompt, completion) token estimates for classifying each text into `labels`."""
    # The same messages `Escalator.classify` sends; the system prompt text is its built-in one.
    from router.escalation import _CLASSIFY_SYSTEM

    joined = ", ".join(labels)
    if prompt is None:
        fixed = len(_CLASSIFY_SYSTEM.format(labels=joined)) / _CHARS_PER_TOKEN + 2 * _MESSAGE_OVERHEAD_TOKENS
    else:
        fixed = len(prompt.replace("{labels}", joined).replace("{input}", "")) / _CHARS_PER_TOKEN \
            + _MESSAGE_OVERHEAD_TOKENS
    prompt_tokens = np.array([math.ceil(fixed + len(t) / _CHARS_PER_TOKEN) for t in texts], dtype=np.float64)
    completion = np.array([max(1, math.ceil(len(a) / _CHARS_PER_TOKEN)) for a in answers], dtype=np.float64)
    return prompt_tokens, completion


def replay_outcomes(data: LabeledData, replay: Mapping[str, ReplayRow], class_labels: Sequence[str],
                    prompt: str | None, assumed_accuracy: float | None, source: str) -> FoundationOutcomes:
    """Match each labelled row to its recorded answer.

    Rule for rows without a recorded answer: with `assumed_accuracy` they count as right with that
    probability; without it their correctness is NaN and the simulation leaves them out (and
    says how many).
    """
    by_key = {_key(t): r for t, r in replay.items()}
    n = len(data.texts)
    correct = np.full(n, np.nan)
    prompt_est, completion_est = estimate_tokens(data.texts, class_labels, prompt, data.labels)
    prompt_tokens, completion_tokens = prompt_est.copy(), completion_est.copy()
    missing = measured = 0
    for i, (text, gold) in enumerate(zip(data.texts, data.labels)):
        row = replay.get(text) or by_key.get(_key(text))
        if row is None:
            missing += 1
            if assumed_accuracy is not None:
                correct[i] = assumed_accuracy
            continue
        correct[i] = 1.0 if row.answer == gold else 0.0
        if row.prompt_tokens is not None and row.completion_tokens is not None:
            prompt_tokens[i], completion_tokens[i] = row.prompt_tokens, row.completion_tokens
            measured += 1
        else:
            completion_tokens[i] = max(1, math.ceil(len(row.answer) / _CHARS_PER_TOKEN))
    models = sorted({r.model for r in replay.values() if r.model})
    text = f"replay {source}" + (f" ({', '.join(models)})" if models else "")
    if missing:
        rule = (f"counted at the assumed accuracy {assumed_accuracy:g}" if assumed_accuracy is not None
                else "left out of the simulation (pass --foundation-accuracy A to count them at A)")
        text += f"; {missing} of {n} inputs have no recorded answer: {rule}"
    return FoundationOutcomes(correct, prompt_tokens, completion_tokens, text, missing, measured)


def assumed_outcomes(data: LabeledData, class_labels: Sequence[str], prompt: str | None,
                     accuracy: float, completion_tokens: int | None = None) -> FoundationOutcomes:
    """The foundation model is right with probability `accuracy` (an expectation, not a sample)."""
    prompt_tokens, completion = estimate_tokens(data.texts, class_labels, prompt, data.labels)
    if completion_tokens is not None:
        completion = np.full(len(data.texts), float(completion_tokens))
    source = (f"ASSUMED foundation accuracy {accuracy:g} (no replay: every escalated input counts "
              f"{accuracy:g} of a correct answer; prompt tokens estimated from text length, completion "
              + (f"tokens assumed {completion_tokens} per call)" if completion_tokens is not None
                 else "tokens from the label length)"))
    return FoundationOutcomes(np.full(len(data.texts), accuracy), prompt_tokens, completion, source)


def collect_live(data: LabeledData, class_labels: Sequence[str], prompt: str | None, alias: str,
                 build_escalator: Callable[[], Any], concurrency: int) -> FoundationOutcomes:
    """Ask the route's alias for every row, `concurrency` calls at a time, through the server's client.

    Failed calls (timeouts, errors, answers outside the label set) count as missing and are
    reported; token counts are the provider's usage figures.
    """
    from router.errors import GatewayError

    n = len(data.texts)
    correct = np.full(n, np.nan)
    prompt_tokens, completion_tokens = estimate_tokens(data.texts, class_labels, prompt, data.labels)

    async def run() -> tuple[int, str]:
        escalator = build_escalator()
        if not escalator.available(alias):
            raise ReplayError(f"alias {alias!r} has no foundation model configured (set its `model` in "
                              "the policy or ROUTER_FOUNDATION__MODEL)")
        gate = asyncio.Semaphore(max(1, min(concurrency, escalator.clients[alias].spec.max_concurrency)))
        failures: list[str] = []
        models: set[str] = set()

        async def one(i: int) -> None:
            async with gate:
                try:
                    result = await escalator.classify(alias, class_labels, data.texts[i], prompt)
                except GatewayError as exc:
                    failures.append(type(exc).__name__)
                    return
            correct[i] = 1.0 if result.label == data.labels[i] else 0.0
            if result.usage.prompt_tokens or result.usage.completion_tokens:
                prompt_tokens[i] = result.usage.prompt_tokens
                completion_tokens[i] = result.usage.completion_tokens
            models.add(escalator.clients[result.alias].model or result.alias)

        await asyncio.gather(*(one(i) for i in range(n)))
        return len(failures), ", ".join(sorted(models)) or alias

    # litellm reads these at import; offline: the bundled price table, no network fetches.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    failed, models = asyncio.run(run())
    source = f"live calls to alias {alias!r} ({models}), {n} inputs"
    if failed:
        source += f"; {failed} calls failed: left out of the simulation"
    return FoundationOutcomes(correct, prompt_tokens, completion_tokens, source, failed, n - failed)


def load_pricing(model: str, explicit: bool, table: PriceTable | None = None) -> Pricing:
    """USD per token for `model` from litellm's bundled price table (the one the server uses).

    An explicit `--price-as` (or alias `price_as`) that the table lacks is an error; an alias's
    model that it lacks (self-hosted, fake) is priced as `DEFAULT_PRICE_MODEL`, and the note says so.
    """
    table = table if table is not None else PriceTable.load()
    price = table.get(model)
    if price is not None:
        return Pricing(model, price.input_per_token, price.output_per_token)
    if explicit:
        raise ReplayError(f"price model {model!r} is not in litellm's price table (--price-as to choose another)")
    fallback = table.get(DEFAULT_PRICE_MODEL)
    if fallback is None:
        raise ReplayError(f"litellm's price table has neither {model!r} nor {DEFAULT_PRICE_MODEL!r}")
    return Pricing(DEFAULT_PRICE_MODEL, fallback.input_per_token, fallback.output_per_token,
                   note=f"{model!r} is not in litellm's price table; priced as {DEFAULT_PRICE_MODEL}")
