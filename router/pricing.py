"""Foundation prices: litellm's bundled price table, read as data (no `import litellm`).

The table that ships with the pinned litellm (`model_prices_and_context_window_backup.json`) is
read once at start-up, so costs are reproducible, need no network, and are known before litellm
itself has finished loading. Prices are USD per token.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["Price", "PriceTable"]

_TABLE_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_token: float
    output_per_token: float
    cached_input_per_token: float
    supports_response_schema: bool

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, prompt_tokens)
        return ((prompt_tokens - cached) * self.input_per_token + cached * self.cached_input_per_token
                + completion_tokens * self.output_per_token)


class PriceTable:
    def __init__(self, entries: dict[str, Price]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        if path is None:
            spec = importlib.util.find_spec("litellm")  # locates the package without importing it
            if spec is None or not spec.submodule_search_locations:
                return cls({})
            path = Path(next(iter(spec.submodule_search_locations))) / _TABLE_FILE
        raw = orjson.loads(path.read_bytes())
        entries = {}
        for name, e in raw.items():
            if not isinstance(e, dict) or "input_cost_per_token" not in e:
                continue
            inp = float(e.get("input_cost_per_token") or 0.0)
            entries[name] = Price(inp, float(e.get("output_cost_per_token") or 0.0),
                                  float(e.get("cache_read_input_token_cost") or inp),
                                  bool(e.get("supports_response_schema")))
        return cls(entries)

    def get(self, model: str | None) -> Price | None:
        """The price of a litellm model string (`openai/gpt-4o-mini` or `gpt-4o-mini`)."""
        if not model:
            return None
        found = self._entries.get(model)
        if found is None and "/" in model:
            found = self._entries.get(model.split("/", 1)[1])
        return found

    def __len__(self) -> int:
        return len(self._entries)
