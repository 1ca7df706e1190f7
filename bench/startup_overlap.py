"""Would importing litellm beside the app build shorten start-up? (issue 15, start-up goal)

    taskset -c 0 .venv/bin/python -m bench.startup_overlap seq    # build the app, then import litellm
    taskset -c 0 .venv/bin/python -m bench.startup_overlap both   # the import in a thread started first

Prints when each part is done and the total. Both parts are Python under one GIL, so the overlap
saves little (BENCHMARKS.md, issue 15 per goal).
"""

from __future__ import annotations

import os
import sys
import threading
import time


def main(mode: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    t0 = time.perf_counter()

    def load_litellm() -> None:
        started = time.perf_counter()
        import litellm  # noqa: F401

        print(f"  litellm imported at {time.perf_counter() - t0:.2f} s (took {time.perf_counter() - started:.2f} s)")

    thread = threading.Thread(target=load_litellm) if mode == "both" else None
    if thread is not None:
        thread.start()
    from router.app import create_app
    from router.settings import Settings

    create_app(Settings())
    print(f"  app built at {time.perf_counter() - t0:.2f} s")
    if thread is None:
        load_litellm()
    else:
        thread.join()
    print(f"{mode}: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    if sys.argv[1:] not in (["seq"], ["both"]):
        sys.exit(__doc__)
    main(sys.argv[1])
