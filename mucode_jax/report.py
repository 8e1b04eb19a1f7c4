"""What a person reads: the summary table, the per-turn plot, progress bars, JSON files.

Used by the evaluation launcher and the expert-iteration driver alike.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON to a temporary file beside ``path`` and renames it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def plot_per_turn(results: dict[str, dict[str, Any]], path: str | os.PathLike) -> None:
    """BoN@t curves with their intervals, one line per (model, selection mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, res in results.items():
        for mode, m in res["modes"].items():
            ts = [b["t"] for b in m["bon"]]
            mean = [100 * b["mean"] for b in m["bon"]]
            lo = [100 * b["lo"] for b in m["bon"]]
            hi = [100 * b["hi"] for b in m["bon"]]
            label = f"{name} / {mode}" if len(results) > 1 else mode
            ax.plot(ts, mean, marker="o", label=label)
            ax.fill_between(ts, lo, hi, alpha=0.15)
    ax.set_xlabel("turn t")
    ax.set_ylabel("BoN@t (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(
        sorted({b["t"] for r in results.values() for m in r["modes"].values() for b in m["bon"]})
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per (model, selection mode), BoN@t with 95 % intervals."""
    lines = []
    for name, res in results.items():
        for mode, m in res["modes"].items():
            cells = [
                f"{100 * b['mean']:.1f} [{100 * b['lo']:.1f}, {100 * b['hi']:.1f}]"
                for b in m["bon"]
            ]
            lines.append((name, mode, cells))
    t = max((len(c) for _, _, c in lines), default=0)
    head = "| model | selection | " + " | ".join(f"BoN@{i + 1}" for i in range(t)) + " |"
    sep = "|" + "---|" * (t + 2)
    rows = [f"| {n} | {m} | " + " | ".join(c) + " |" for n, m, c in lines]
    return "\n".join([head, sep, *rows]) + "\n"


class SearchProgress:
    """A tqdm bar per selection mode over searches, with samples/s and an ETA."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.desc = ""

    def start(self, desc: str) -> None:
        self.close()
        self.desc = desc

    def __call__(self, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info["total"], desc=self.desc, unit="search", initial=0)
        self.bar.set_postfix(
            samples=info["samples"], samples_s=f"{info['samples_per_s']:.1f}", refresh=False
        )
        self.bar.update(info["done"] - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
