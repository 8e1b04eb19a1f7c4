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


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summary_table(results: dict[str, Any]) -> str:
    """Markdown tables of the driver's results (``{model: {test set: evaluation}}``).

    The first: one row per (model, test set, selection mode): BoN@t with 95 % intervals, and
    at the last turn the "any of the searches" and public-test success rates and the
    verifier's AUC on the test candidates. The second, when the evaluations have them: the
    greedy multi-turn Pass@T and pass@k over sampled multi-turn trajectories.
    """
    lines, multi = [], []
    for name, by_test in results.items():
        for test, res in by_test.items():
            for mode, m in res["modes"].items():
                cells = [
                    f"{100 * b['mean']:.1f} [{100 * b['lo']:.1f}, {100 * b['hi']:.1f}]"
                    for b in m["bon"]
                ]
                extra = [
                    _pct((m.get("any_search") or [None])[-1]),
                    _pct((m.get("public_success") or [None])[-1]),
                    "–" if m.get("verifier_auc") is None else f"{m['verifier_auc']:.3f}",
                ]
                lines.append((name, test, mode, cells, extra))
            if "greedy" in res or "sampled" in res:
                greedy = res.get("greedy", {}).get("pass_at_k", {}).get("1")
                sampled = res.get("sampled", {}).get("pass_at_k", {})
                multi.append((name, test, greedy, sampled))
    t = max((len(c) for *_, c, _ in lines), default=0)
    head = (
        "| model | test set | selection | "
        + " | ".join(f"BoN@{i + 1}" for i in range(t))
        + f" | any search@{t} | public pass@{t} | verifier AUC |"
    )
    sep = "|" + "---|" * (t + 6)
    rows = [
        f"| {n} | {ts} | {m} | " + " | ".join(c) + " | " + " | ".join(x) + " |"
        for n, ts, m, c, x in lines
    ]
    out = [head, sep, *rows]
    if multi:
        ks = sorted({k for *_, s in multi for k in s}, key=int)
        out += [
            "",
            "| model | test set | greedy Pass@T | "
            + " | ".join(f"sampled pass@{k}" for k in ks)
            + " |",
            "|" + "---|" * (3 + len(ks)),
        ]
        for n, ts, g, s in multi:
            cells = [_pct(s[k]["mean"]) if k in s else "–" for k in ks]
            gcell = (
                "–"
                if g is None
                else f"{100 * g['mean']:.1f} [{100 * g['lo']:.1f}, {100 * g['hi']:.1f}]"
            )
            out.append(f"| {n} | {ts} | {gcell} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


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
