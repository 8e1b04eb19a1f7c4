"""Named protocols: which reading of μCode a driver config reproduces.

A protocol is a dict of dotted config keys -> values (`PROTOCOLS`). ``config.protocol``
names one; `apply_protocol` (run by `config.check_config`, before any stage) sets its values
over the defaults of `config.mucode_defaults`, and refuses a config that sets one of its keys
to something else: one sentence naming the key, the protocol's value and the way out
(``config.protocol="custom"``, which constrains nothing).

* ``official`` (the default): the official PyTorch scripts (github portal-cornell/muCode), as
  read in ``docs/mucode.md``'s "Official protocol" table. Its values are also the defaults
  of `mucode_defaults`, so applying it changes nothing and only checks.
* ``paper``: the paper's text where the scripts differ (y* by the learned verifier alone) and
  our earlier choices (packed-row SFT batches, the end-of-turn token trained, a 10 % verifier
  hold-out, clipping, no weight decay, HF's head init, decay to 0, π_i evaluated with R_i;
  the failed tests' Expected/Got feedback, the stripped prompt, fenced extraction, no stop on
  ``<|eom_id|>``).
* ``custom``: no constraint; every field as the config sets it.

To add a switch, add its key to every protocol that fixes it.
"""

from __future__ import annotations

from typing import Any

import ml_collections

_OFFICIAL_SEARCH = {
    "feedback.body": "official",
    "prompt_form": "official",
    "extraction": "official",
}
_OUR_SEARCH = {"feedback.body": "failed", "prompt_form": "stripped", "extraction": "fenced"}

# Switches that depend on the dataset are not protocol keys: they are per-split fields of
# ``config.data`` (public_tests, challenge_tests, preamble, generated_tests) and the executor's
# limits (official: 10 s per MBPP / HumanEval script; CodeContests keeps per-case CPU limits),
# set by each config file and listed in docs/mucode.md.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "official": {
        # y* = argmax R + 100 * label (src/preprocessing/create_merged_RS_data.py).
        "relabel.oracle_assisted": True,
        # TRL, packing off: 16 examples per optimizer step (bash/mucode.sh).
        "sft.data.batch_unit": "examples",
        # pad_token = eos_token masks <|eot_id|> out of the labels (src/generators/sft_trl.py).
        "sft.data.train_eos": False,
        # The verifier (src/verifiers/rm_bt.py; bash/mucode.sh trains it on every problem).
        "verifier.data.eval_fraction": 0.0,
        "verifier.optim.weight_decay": 0.01,
        "verifier.optim.clip_norm": 0.0,
        "verifier.optim.horizon": "steps_x_epochs",
        "verifier.score_init": "official",
        # π_i evaluated with the verifier of π_0..π_i (Multi-STaR: of π_i's rollouts).
        "eval.verifier": "official",
        # What the model is shown and how its answer is read (src/common/generate_rollouts_script.py,
        # src/env/benchmarks/*_wrapper.py): the raw stderr of the public-test run as feedback,
        # the first prompt character for character, the first ```python block as the program.
        **{f"{s}.search.{k}": v for s in ("rollout", "eval") for k, v in _OFFICIAL_SEARCH.items()},
        # SGLang also stops on <|eom_id|>.
        "sampling.stop_on_eom": True,
        # The multi-turn BoN search may select a program that already failed (best_of_n).
        "eval.search.skip_failed": False,
    },
    "paper": {
        "relabel.oracle_assisted": False,
        "sft.data.batch_unit": "rows",
        "sft.data.pack": True,
        "sft.data.train_eos": True,
        "verifier.data.eval_fraction": 0.1,
        "verifier.optim.weight_decay": 0.0,
        "verifier.optim.clip_norm": 1.0,
        "verifier.optim.horizon": "steps",
        "verifier.score_init": "initializer_range",
        "eval.verifier": "previous",
        **{f"{s}.search.{k}": v for s in ("rollout", "eval") for k, v in _OUR_SEARCH.items()},
        "sampling.stop_on_eom": False,
        "eval.search.skip_failed": False,
    },
    "custom": {},
}


def _node(c: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    *parents, leaf = key.split(".")
    for p in parents:
        c = c[p]
    return c, leaf


def get_key(c: ml_collections.ConfigDict, key: str) -> Any:
    node, leaf = _node(c, key)
    return node[leaf]


def apply_protocol(c: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    """Sets ``c.protocol``'s values in ``c`` where ``c`` still holds ``defaults``' value.

    Raises:
      ValueError: an unknown protocol, or a key the config set to another value than both
        the default and the protocol's.
    """
    name = c.get("protocol", "official")
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown config.protocol {name!r}; use one of {', '.join(PROTOCOLS)}.")
    for key, value in PROTOCOLS[name].items():
        current, default = get_key(c, key), get_key(defaults, key)
        if current == value:
            continue
        if current != default:
            raise ValueError(
                f"config.{key}={current!r} contradicts config.protocol={name!r}, which sets "
                f"{value!r}; drop that setting or set config.protocol='custom'."
            )
        node, leaf = _node(c, key)
        node[leaf] = value  # an existing field: allowed in a locked ConfigDict too


def describe(name: str) -> str:
    """The protocol's settings as one line for the log."""
    return ", ".join(f"{k}={v!r}" for k, v in PROTOCOLS[name].items()) or "(no constraint)"
