"""The Hybrid Router benchmark suite: `python -m bench` (or `make bench`); see BENCHMARKS.md.

Modules: `run` (orchestration), `servers` (gateway / fake upstream processes), `peer` (LiteLLM
Proxy in bench/.peer-venv), `load` (wrk + post.lua), `direct` (litellm.acompletion loop),
`micro` / `stages` / `inproc` (in-process timing), `profile` (py-spy), `report` (JSON and
BENCHMARKS.md), `machine`, `policy`, `texts`.
"""

__all__: list[str] = []
