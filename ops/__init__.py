"""Hybrid Router's operator tools, apart from the serving path in `router/`.

The `hybrid-router` command (`ops.cli`) and what it runs offline: `simulate` and `tune` on
labeled data (`simulate`, `tune`, `replay`, `_offline`), the default thresholds (`defaults`), the
report (`report*`) and the learning loop (`distill`, `promote`, `loop_cli`). They import the
serving modules they reuse (policy, decision, pricing, settings); `router/` never imports them
(only its `__main__`, so that `python -m router` stays the whole command).
"""

__all__: list[str] = []
