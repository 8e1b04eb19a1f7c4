"""Evaluation metrics, one meaning each, used by every report and test.

* ``pass@k`` — the unbiased estimator of Chen et al. (2021, Codex): from ``n >= k`` samples of
  which ``c`` are correct, the probability that at least one of ``k`` samples drawn without
  replacement is correct, ``1 - C(n-c, k) / C(n, k)``, averaged over problems.
* ``BoN@t`` (μCode's multi-turn Best-of-N) — the oracle label of the single program the search
  *submits* after ``t`` turns. The submitted program after ``t`` turns is the **last program the
  search produced (executed) up to turn t**: a search that stopped at turn ``s < t`` because its
  program passed the public tests still submits that program. We never take a max over turns
  (that would be an oracle choice, not what the search submits). Since an oracle-correct
  program passes the public tests, a search that continues past a turn had a wrong program
  there, so with early stopping BoN@t is non-decreasing in ``t``; a search run without early
  stopping can get worse with more turns, and BoN@t then shows it.
* ``pass n@k`` (Zheng et al. / AlphaCode) — from ``k`` samples submit at most ``n``, chosen by the
  public tests (programs that pass them first, ties broken at random): the probability that a
  submitted program is correct, computed exactly from ``N >= k`` samples.
* per-turn success curves and percentile-bootstrap confidence intervals over problems (and over
  repeated searches).

Labels are oracle labels: 1 if the program passes the public **and** private tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------------------------


def _check_counts(n: int, c: int, k: int, what: str = "pass@k") -> None:
    if k < 1:
        raise ValueError(f"{what} needs k >= 1, got k={k}.")
    if n < k:
        raise ValueError(
            f"{what} needs at least k samples per problem (got k={k}, n={n}); "
            "sample at least k programs per problem or lower k."
        )
    if not 0 <= c <= n:
        raise ValueError(f"The number of correct samples must be in [0, n={n}], got c={c}.")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``1 - C(n-c, k) / C(n, k)``.

    Computed in the numerically stable product form of the Codex paper,
    ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which never forms a binomial coefficient.

    Args:
      n: number of samples drawn for the problem.
      c: how many of them are correct.
      k: the budget, ``1 <= k <= n``.

    Raises:
      ValueError: if ``k > n``, ``k < 1`` or ``c`` is not in ``[0, n]``.
    """
    n, c, k = int(n), int(c), int(k)
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_per_problem(n: Any, c: Any, k: int) -> np.ndarray:
    """`pass_at_k` for each problem; ``n`` and ``c`` broadcast to shape [P]."""
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    if n_arr.ndim != 1:
        n_arr, c_arr = n_arr.reshape(-1), c_arr.reshape(-1)
    if n_arr.size == 0:
        raise ValueError("pass@k over no problems; pass one count per problem.")
    return np.array([pass_at_k(ni, ci, k) for ni, ci in zip(n_arr, c_arr)], dtype=np.float64)


def mean_pass_at_k(n: Any, c: Any, k: int) -> float:
    """pass@k averaged over problems. ``n``: samples per problem (scalar or [P]); ``c``: [P]."""
    return float(pass_at_k_per_problem(n, c, k).mean())


# ---------------------------------------------------------------------------------------------
# pass n@k
# ---------------------------------------------------------------------------------------------


def _log_factorials(n: int) -> list[float]:
    return [math.lgamma(i + 1) for i in range(n + 1)]


def pass_n_at_k(num_samples: int, num_public: int, num_correct: int, n: int, k: int) -> float:
    """pass n@k for one problem: submit ≤ n of k samples, ranked by the public tests.

    Exact expectation over the ``C(N, k)`` subsets of the ``N`` samples: with ``x`` correct and
    ``y`` public-passing-but-wrong programs in the subset, ``min(n, x + y)`` of the ``x + y``
    public-passing ones are submitted at random, and the draw succeeds unless all of them are
    wrong, probability ``C(y, s) / C(x + y, s)``. Programs failing the public tests are never
    correct, so submitting them (when fewer than n pass) cannot help. ``n >= k`` gives pass@k.

    Args:
      num_samples: N, the number of programs sampled for the problem.
      num_public: how many pass the public tests.
      num_correct: how many are correct (they all pass the public tests).
      n: the number of submissions allowed, ``n >= 1``.
      k: the number of samples drawn, ``1 <= k <= N``.

    Raises:
      ValueError: for inconsistent counts (``num_correct > num_public``: a correct program must
        pass the public tests, so count it there) or ``k > N``.
    """
    big_n, pub, cor, n, k = (int(v) for v in (num_samples, num_public, num_correct, n, k))
    _check_counts(big_n, cor, k, what="pass n@k")
    if n < 1:
        raise ValueError(f"pass n@k needs n >= 1 submissions, got n={n}.")
    if not cor <= pub <= big_n:
        raise ValueError(
            f"pass n@k needs num_correct <= num_public <= num_samples, got {cor}, {pub}, "
            f"{big_n}; an oracle-correct program passes the public tests, so count it in both."
        )
    wrong_public, failing = pub - cor, big_n - pub
    lf = _log_factorials(big_n)

    def log_comb(a: int, b: int) -> float:
        return lf[a] - lf[b] - lf[a - b] if 0 <= b <= a else -math.inf

    log_total = log_comb(big_n, k)
    result = 0.0
    for x in range(1, min(cor, k) + 1):  # x = 0 correct programs in the draw never succeeds.
        for y in range(0, min(wrong_public, k - x) + 1):
            rest = k - x - y
            if rest > failing:
                continue
            log_w = log_comb(cor, x) + log_comb(wrong_public, y) + log_comb(failing, rest)
            s = min(n, x + y)
            p_fail = math.exp(log_comb(y, s) - log_comb(x + y, s)) if s <= y else 0.0
            result += math.exp(log_w - log_total) * (1.0 - p_fail)
    return float(min(max(result, 0.0), 1.0))


def pass_n_at_k_from_labels(
    public_pass: Sequence[bool], correct: Sequence[bool], n: int, k: int
) -> float:
    """`pass_n_at_k` from per-sample labels of one problem (``public_pass``, ``correct``: [N])."""
    pub = np.asarray(public_pass, dtype=bool)
    cor = np.asarray(correct, dtype=bool)
    if pub.shape != cor.shape or pub.ndim != 1:
        raise ValueError(
            f"public_pass and correct must be two [N] label vectors, got shapes {pub.shape} and "
            f"{cor.shape}."
        )
    if np.any(cor & ~pub):
        raise ValueError(
            "A sample is labelled correct but failed the public tests; the oracle label is "
            "public AND private, so pass that combined label as `correct`."
        )
    return pass_n_at_k(pub.size, int(pub.sum()), int(cor.sum()), n, k)


# ---------------------------------------------------------------------------------------------
# Multi-turn: BoN@t and per-turn curves.
# ---------------------------------------------------------------------------------------------


def _is_scalar(x: Any) -> bool:
    return not isinstance(x, (Sequence, np.ndarray)) or (isinstance(x, np.ndarray) and x.ndim == 0)


def _pad_turns(turn_labels: Any, num_turns: int | None) -> np.ndarray:
    """Ragged nested lists or an array [..., P, T] -> float array [..., P, T], NaN = not run."""
    if isinstance(turn_labels, np.ndarray):
        arr = turn_labels.astype(np.float64)
        if arr.ndim < 2:
            raise ValueError(
                f"Turn labels must have shape [..., problems, turns], got shape {arr.shape}."
            )
    else:

        def depth(x: Any) -> int:
            return 0 if _is_scalar(x) else 1 + (depth(x[0]) if len(x) else 0)

        d = depth(turn_labels)
        if d < 2:
            raise ValueError(
                "Turn labels must be one list of per-turn labels per problem, e.g. [[0, 1], [1]]."
            )

        def max_len(x: Any, level: int) -> int:
            return len(x) if level == 1 else max((max_len(e, level - 1) for e in x), default=0)

        t_max = max_len(turn_labels, d)

        def fill(x: Any, level: int) -> np.ndarray:
            if level == 1:
                row = np.full(t_max, np.nan)
                row[: len(x)] = np.asarray(x, dtype=np.float64)
                return row
            return np.stack([fill(e, level - 1) for e in x])

        arr = fill(turn_labels, d)
    if arr.shape[-2] == 0 or arr.shape[-1] == 0:
        raise ValueError("No problems or no turns in the turn labels.")
    if num_turns is not None:
        if num_turns < arr.shape[-1]:
            raise ValueError(
                f"num_turns={num_turns} but some search ran {arr.shape[-1]} turns; "
                "pass num_turns >= the longest search."
            )
        pad = np.full(arr.shape[:-1] + (num_turns - arr.shape[-1],), np.nan)
        arr = np.concatenate([arr, pad], axis=-1)
    ran = ~np.isnan(arr)
    if not np.all(ran[..., 0]):
        raise ValueError(
            "A search has no program at turn 1; every search must execute at least one program "
            "(label a turn without code 0)."
        )
    if np.any(~ran[..., :-1] & ran[..., 1:]):
        raise ValueError(
            "Turn labels have a gap (a turn after a missing one); pad only at the end."
        )
    vals = arr[ran]
    if np.any((vals < 0) | (vals > 1)):
        raise ValueError("Turn labels must be oracle labels in [0, 1].")
    return arr


def submitted_labels(turn_labels: Any, num_turns: int | None = None) -> np.ndarray:
    """Label of the program a search submits after each turn: the last one it produced so far.

    Args:
      turn_labels: per search, the oracle label of the program it executed at each turn it
        ran: ragged nested lists ``[problem][turn]`` (or ``[search][problem][turn]``), or an
        array [..., P, T] with NaN for turns not run (the search had stopped).
      num_turns: T, when longer than the longest search (all searches stopped early).

    Returns:
      float array [..., P, T]: forward-filled labels.
    """
    arr = _pad_turns(turn_labels, num_turns)
    idx = np.where(~np.isnan(arr), np.arange(arr.shape[-1]), 0)
    idx = np.maximum.accumulate(idx, axis=-1)
    return np.take_along_axis(arr, idx, axis=-1)


def bon_at_t(turn_labels: Any, num_turns: int | None = None) -> np.ndarray:
    """Multi-turn BoN@t for t = 1..T: mean over problems of the submitted program's label.

    Feed the labels of the programs the search *selected and executed* at each turn (one per
    turn); with one sample per turn the same numbers are the multi-turn pass@1 curve.

    Returns:
      float array [..., T]; ``result[..., t - 1]`` is BoN@t. Leading axes (e.g. repeated
      searches) are kept; average them or pass per-problem values to `bootstrap_ci`.
    """
    return submitted_labels(turn_labels, num_turns).mean(axis=-2)


def per_turn_success(turn_labels: Any, num_turns: int | None = None) -> dict[str, np.ndarray]:
    """Per-turn success curves of multi-turn episodes (one per problem, or [search][problem]).

    Returns:
      A dict of float arrays [..., T]:
        ``"cumulative"``: success of the program submitted after t turns (= `bon_at_t`);
        ``"active"``: fraction of episodes that ran turn t;
        ``"conditional"``: accuracy of the turn-t programs among episodes that ran turn t
        (NaN when none did) — how often a retry fixes the code.
    """
    arr = _pad_turns(turn_labels, num_turns)
    ran = ~np.isnan(arr)
    active = ran.mean(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        conditional = np.where(ran, arr, 0.0).sum(axis=-2) / ran.sum(axis=-2)
    return {
        "cumulative": submitted_labels(arr).mean(axis=-2),
        "active": active,
        "conditional": conditional,
    }


# ---------------------------------------------------------------------------------------------
# Confidence intervals.
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Any,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    resample_searches: bool = False,
) -> tuple[float, float, float]:
    """Percentile-bootstrap confidence interval of a mean score.

    The unit of resampling is the problem (the samples of one problem are correlated, so
    resampling samples would understate the error). With S repeated searches (the official
    protocol runs 10) pass ``values`` of shape [S, P]: by default each problem's scores are
    averaged over the searches and the problems resampled, which already carries the
    search-to-search noise (the variance of a problem's average includes it). Resampling the
    searches as well (``resample_searches=True``, the two-stage bootstrap) counts that noise
    twice when searches are i.i.d. — in simulation a nominal 95 % interval covered 98–99.7 % —
    and is right only when runs differ systematically (e.g. each seed retrains the model).

    Args:
      values: per-problem scores [P] (e.g. 0/1 BoN@3 labels or per-problem pass@k), or
        [S, P] for S repeated searches.
      n_boot: bootstrap replicates.
      alpha: 1 - confidence level (0.05 → 95 % interval).
      seed: seed of the resampling, so reports are reproducible.
      resample_searches: also resample the S runs with replacement (see above).

    Returns:
      ``(mean, lo, hi)``: the mean over everything and the ``alpha/2``, ``1 - alpha/2``
      percentiles of the bootstrap means.

    Raises:
      ValueError: for empty input, NaNs, more than two axes, or ``alpha`` outside (0, 1).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.size == 0:
        raise ValueError(
            f"bootstrap_ci takes per-problem scores [P] or [searches, P], got shape {v.shape}."
        )
    if np.isnan(v).any():
        raise ValueError("bootstrap_ci got NaN scores; drop or fill them before computing a CI.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}.")
    mean = float(v.mean())
    if v.ndim == 2 and not resample_searches:
        v = v.mean(axis=0)
    if v.ndim == 1:
        v = v[None, :]
    s, p = v.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, (1 << 22) // (s * p))  # Bound memory to ~32 MB of gathered scores.
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        pi = rng.integers(0, p, size=(b, p))
        if s == 1:
            means[start : start + b] = v[0][pi].mean(axis=1)
        else:
            si = rng.integers(0, s, size=(b, s))
            means[start : start + b] = v[si[:, :, None], pi[:, None, :]].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def mean_and_ci(per_problem: Any, **kwargs: Any) -> dict[str, float]:
    """`bootstrap_ci` as a dict ``{"mean", "lo", "hi"}`` for logging."""
    mean, lo, hi = bootstrap_ci(per_problem, **kwargs)
    return {"mean": mean, "lo": lo, "hi": hi}
