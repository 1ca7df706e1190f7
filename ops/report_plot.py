"""PNG of a threshold sweep: accuracy and foundation cost against the escalated share.

matplotlib belongs to the `train`/test extras, not to the serving image, so it is imported inside
`plot_sweep` only (with the non-interactive Agg backend).
"""

from __future__ import annotations

from pathlib import Path

from .simulate import Simulation, SweepPoint

__all__ = ["plot_sweep"]


def plot_sweep(sim: Simulation, path: Path, marks: dict[str, SweepPoint] | None = None) -> Path:
    """Write the plot; `marks` adds labelled operating points (e.g. a tuned threshold)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib (pip install 'hybrid-router[train]')") from exc

    xs = [100 * p.escalated_share for p in sim.points]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    ax.plot(xs, [100 * p.accuracy for p in sim.points], color="tab:blue", label="overall accuracy")
    ax.set_xlabel("escalated to the foundation model (% of requests)")
    ax.set_ylabel("accuracy (%)", color="tab:blue")
    ax.grid(alpha=0.3)
    cost_ax = ax.twinx()
    cost_ax.plot(xs, [100 * p.cost_fraction for p in sim.points], color="tab:orange", linestyle="--",
                 label="foundation cost (% of all-foundation)")
    cost_ax.set_ylabel("cost (% of sending everything to the foundation model)", color="tab:orange")
    cost_ax.set_ylim(0, 105)

    points = {f"policy min_confidence={sim.policy.min_confidence:g}": sim.policy, **(marks or {})}
    for (label, p), colour in zip(points.items(), ("tab:red", "tab:green", "tab:purple")):
        x = 100 * p.escalated_share
        ax.scatter([x], [100 * p.accuracy], color=colour, zorder=5, s=40,
                   label=f"{label}: {100 * p.accuracy:.1f}% acc, {100 * p.cost_fraction:.0f}% cost")
        cost_ax.scatter([x], [100 * p.cost_fraction], color=colour, zorder=5, s=40, marker="s")

    lines = ax.get_legend_handles_labels()
    cost_lines = cost_ax.get_legend_handles_labels()
    ax.legend(lines[0] + cost_lines[0], lines[1] + cost_lines[1], loc="best", fontsize=8)
    ax.set_title(f"{sim.route}: {sim.specialist}@{sim.specialist_version}, {sim.evaluated} rows\n"
                 f"foundation: {sim.foundation_source.split(';')[0][:100]}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
