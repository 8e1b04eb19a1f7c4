"""Per-family analysis of toy searches: candidate kinds, verifier scores, how selection chose.

  python launch/analyze_search.py --config configs/demo.py \
      --search workdir/demo/artifacts/eval-<key>/search_lv.jsonl

Prints three markdown tables (`mucode_jax.data.toy_analysis`): the kinds of the candidates of
each family and turn (right, another reading, overfit to the shown test, no code, other — mostly
slipped constants), the mean verifier score of each kind (LV searches record the scores), and,
on the turns where some candidates are right and some are not, how often the selection picked a
right one against the mean fraction of right candidates (random selection's expectation).
``--split`` picks the config's problems: ``test`` (the evaluation's, default) or ``train`` (the
loop's rollouts). With ``--pairs`` (a verifier_data stage's pairs.jsonl, ``--search`` the
rollouts it read, ``--split=train``) it also counts the kinds of the pairs' rejected programs.
"""

import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "The driver config (configs/demo.py).")
_SEARCH = flags.DEFINE_string("search", None, "A search or rollout JSONL of toy problems.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Which problems of the config.")
_PAIRS = flags.DEFINE_string(
    "pairs", "", "A verifier_data pairs.jsonl drawn from --search (rollouts, --split=train)."
)
flags.mark_flags_as_required(["config", "search"])


def main(argv):
    del argv
    from mucode_jax import records
    from mucode_jax.algorithms.mucode import load_problem_set
    from mucode_jax.data import toy_analysis

    c = _CONFIG.value
    path = Path(_SEARCH.value)
    if not path.is_file():
        sys.exit(f"error: --search={str(path)!r} is not a file; give a search_<mode>.jsonl.")
    sets = [c.data.train] if _SPLIT.value == "train" else list(c.data.tests.values())
    problems = {p.id: p for cfg in sets if cfg.name == "toy" for p in load_problem_set(cfg)}
    if not problems:
        sys.exit(f"error: the config's {_SPLIT.value} problems are not toy problems.")
    try:
        trajectories = records.read_trajectories(path)
        report = toy_analysis.search_report(trajectories, problems)
        if _PAIRS.value:
            pairs = [json.loads(line) for line in Path(_PAIRS.value).read_text().splitlines()]
            kinds = toy_analysis.pair_report(pairs, trajectories, problems)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    print(toy_analysis.format_report(report))
    if _PAIRS.value:
        print(f"\nRejected programs of the {len(pairs)} verifier pairs:\n")
        print("| family | kind | pairs |\n|---|---|---|")
        for (family, kind), n in kinds.items():
            print(f"| {family} | {kind} | {n} |")


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
