"""The expert-iteration driver's config: its defaults and the check run before any stage.

`mucode_defaults` holds every field the driver reads, so a config file states only what
differs (``configs/demo.py``, ``configs/mucode_*.py``). `check_config` validates the whole
config up front: a typo such as ``--config.mode=foo`` fails at once with one sentence instead
of after minutes of warm-start training.
"""

from __future__ import annotations

import ml_collections

from mucode_jax import rollout
from mucode_jax.algorithms import protocol, relabel
from mucode_jax.data.problems import DATASETS, PREAMBLES, PUBLIC_TESTS
from mucode_jax.training.config import sft_defaults, verifier_defaults

DTYPES = ("float32", "bfloat16", "float16")
EVAL_VERIFIERS = ("official", "previous")


def _search(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_searches = 1
    c.num_candidates = 1
    c.max_turns = 3
    c.batch_size = 64
    # Official μCode: the raw stderr of the public-test script ("failed": our Expected/Got body).
    c.feedback = ml_collections.ConfigDict(dict(body="official", wrapper="mucode", max_chars=2000))
    c.prompt_form = "official"  # the official first prompt character for character ("stripped")
    c.extraction = "official"  # first ```python block, else raw text ("fenced": ours)
    c.update(kw)
    return c


def data_split(
    name: str, split: str, public_tests: str = "first", path: str = ""
) -> ml_collections.ConfigDict:
    """A problem set: dataset, split, first-``limit`` problems, local file (``"shared"``: the
    copy in ../shared/data; ``""``: the HF hub); and the official protocol's data switches
    (`mucode_jax.data.problems.load_problems`)."""
    return ml_collections.ConfigDict(
        dict(
            name=name,
            split=split,
            limit=0,
            path=path,
            public_tests=public_tests,  # MBPP: "all" (official mbpp_train) or "first"
            challenge_tests=False,  # MBPP challenge tests: the official code never runs them
            preamble="official",  # the official import block (HumanEval: + prompt header)
            generated_tests=False,  # CodeContests: official private tests = private_tests only
        )
    )


def executor_options(c: ml_collections.ConfigDict) -> dict:
    """`Executor` keyword arguments from ``config.executor``: workers, limits, script mode."""
    from mucode_jax.execution import Limits

    e = c.executor
    limits = Limits(
        cpu_seconds=float(e.get("cpu_seconds", 4.0)),
        wall_seconds=None if e.get("wall_seconds") is None else float(e.wall_seconds),
    )
    return dict(
        workers=e.workers or None, limits=limits, script=bool(e.get("run_as_script", False))
    )


def mucode_defaults() -> ml_collections.ConfigDict:
    """Every field of a driver config, with the official μCode settings where they exist."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # The reading of μCode the run reproduces (mucode_jax.algorithms.protocol): "official"
    # (the official scripts; these defaults), "paper" or "custom" (no constraint).
    c.protocol = "official"
    c.tokenizer = ""  # "toy" (built locally) or a tokenizer directory
    c.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
    c.mode = "mucode"  # the data mode: one of relabel.MODES
    c.baselines = ()  # further data modes run beside it
    c.iterations = 2  # the paper's
    c.base = ""  # HF directory of the base generator (unless warm_start.enabled)

    c.data = ml_collections.ConfigDict()
    c.data.train = data_split("mbpp", "train", "all")
    # Test sets, by name: every evaluated model is evaluated on each (official: MBPP test and
    # HumanEval(Pack), bash/mucode.sh; MBPP+ besides). path: a JSONL, "shared" (the copy in
    # ../shared/data) or "" (the HF hub).
    c.data.tests = ml_collections.ConfigDict()
    c.data.tests.mbpp = data_split("mbpp", "test")
    # HumanEval as official: HumanEvalPack's Python split (name="humaneval": openai_humaneval).
    c.data.tests.humaneval = data_split("humanevalpack", "")
    c.data.tests.mbpp_plus = data_split("mbpp_plus", "", path="shared")

    # The CPU demo's stand-in for a pretrained base: SFT on noisy toy solutions.
    c.warm_start = ml_collections.ConfigDict()
    c.warm_start.enabled = False
    c.warm_start.num_problems = 0  # 0: the driver's train problems; -1: every toy train problem
    # With num_problems != 0: leave out the statements of the driver's train problems, so the
    # loop's rollouts meet statements the warm start never saw (as a pretrained model meets
    # MBPP's train split) instead of solutions it memorised.
    c.warm_start.exclude_train = False
    c.warm_start.samples_per_problem = 1
    c.warm_start.p_correct = 0.5
    # Turns of each scripted warm-start conversation (`algorithms.warm_start`): after a failed
    # public test the script answers again with the same program (π_0 never uses feedback).
    c.warm_start.turns = 1
    c.warm_start.kind_weights = ml_collections.ConfigDict()  # toy.noisy_solution's; empty: uniform
    c.warm_start.sft = sft_defaults()

    c.sampling = ml_collections.ConfigDict()
    c.sampling.dtype = "bfloat16"
    c.sampling.max_new_tokens = 1000
    c.sampling.max_prompt_length = 4096
    c.sampling.max_batch_size = 64
    c.sampling.stop_on_eom = True  # also stop on <|eom_id|> (the official SGLang sampler does)

    # Rollouts: N = 15 trajectories per problem at temperature 0.7, 3 turns.
    c.rollout = ml_collections.ConfigDict()
    c.rollout.temperature = 0.7
    c.rollout.top_p = 1.0
    c.rollout.search = _search(num_searches=15)

    c.verifier = verifier_defaults()
    # Fields of relabel.RelabelConfig. Official: y* = argmax of R(x, y) + 100 * label
    # (create_merged_RS_data.py); False is the paper's reading, y* by R alone.
    c.relabel = ml_collections.ConfigDict(dict(oracle_assisted=True))
    c.sft = sft_defaults()

    # Evaluation: multi-turn BoN, N = 5 candidates per turn.
    c.eval = ml_collections.ConfigDict()
    c.eval.modes = ("lv", "random")
    c.eval.temperature = 0.7
    c.eval.top_p = 1.0
    c.eval.pass_k = (1, 5)
    c.eval.search = _search(num_candidates=5)
    c.eval.search.skip_failed = False  # official: a failed program may be selected again
    # Which verifier evaluates π_i: "official" (trained on the pairs of π_0..π_i; Multi-STaR:
    # on π_i's own rollouts) or "previous" (R_i, trained on π_0..π_{i-1}).
    c.eval.verifier = "official"
    # The paper's multi-turn metrics (one candidate per turn, stop only on a correct program):
    # greedy Pass@T (temperature 0, 1 trajectory; official pass_at_k.sh) and pass@k over
    # sampled trajectories (official: the 15 test rollouts at temperature 0.7; 0 disables).
    c.eval.greedy = True
    c.eval.sampled = ml_collections.ConfigDict(
        dict(num_trajectories=15, temperature=0.7, top_p=1.0, pass_k=(1, 5, 10))
    )

    # The official script runs: 10 s of wall-clock time each, as `python3 file.py` (its
    # `__main__` block runs). Ours: cpu_seconds=4.0, wall_seconds=None (3 x cpu + 2),
    # run_as_script=False. A reference solution's cost can still raise the CPU limit.
    c.executor = ml_collections.ConfigDict(
        dict(workers=0, cpu_seconds=10.0, wall_seconds=10.0, run_as_script=True)
    )  # workers 0: one per CPU

    # Data mode zheng_rft (Zheng et al.'s multi-turn RFT) runs on its own rollouts: N = 200
    # CoT-retry trajectories per problem, 3 turns, T = 1.0, top-p 0.95; then SFT at lr 2e-6,
    # cosine, 10 warm-up steps, annealing to 10 % of the peak (`algorithms.rft`).
    c.zheng_rft = ml_collections.ConfigDict()
    c.zheng_rft.temperature = 1.0
    c.zheng_rft.top_p = 0.95
    c.zheng_rft.search = _search(num_searches=200)
    c.zheng_rft.search.prompt = ml_collections.ConfigDict(dict(cot_retry=True))
    # Its generator SFT is config.sft with these optimiser fields replaced.
    c.zheng_rft.optim = ml_collections.ConfigDict(
        dict(lr=2e-6, schedule="cosine", warmup_steps=10, final_lr_fraction=0.1)
    )
    return c


def _fail(message: str) -> None:
    raise ValueError(message)


def check_config(c: ml_collections.ConfigDict) -> None:
    """Applies ``config.protocol`` (`protocol.apply_protocol`), then raises ValueError with
    one sentence for the first bad setting of a driver config."""
    protocol.apply_protocol(c, mucode_defaults())
    for mode in [c.mode, *c.baselines]:
        if mode not in relabel.MODES:
            _fail(
                f"Unknown data mode {mode!r}; set config.mode / config.baselines to modes of "
                f"{', '.join(relabel.MODES)}."
            )
    if int(c.iterations) < 1:
        _fail(f"config.iterations must be at least 1, got {c.iterations}.")
    if c.sampling.dtype not in DTYPES:
        _fail(f"config.sampling.dtype {c.sampling.dtype!r} is not one of {', '.join(DTYPES)}.")
    for name in ("rollout", "eval", *(m for m in relabel.OWN_SETTINGS if m in c)):
        try:
            rollout.SearchConfig(**c[name].search.to_dict(), seed=c.seed)
        except (TypeError, ValueError) as e:
            _fail(f"config.{name}.search is invalid: {e}")
    bad = [m for m in c.eval.modes if m not in rollout.SELECT_MODES]
    if bad:
        _fail(f"Unknown selection modes {bad} in config.eval.modes; use {rollout.SELECT_MODES}.")
    try:
        relabel.RelabelConfig(**c.relabel.to_dict())
    except (TypeError, ValueError) as e:
        _fail(f"config.relabel is invalid: {e}")
    if "test" in c.data:
        _fail(
            "config.data.test is now config.data.tests, a dict of named test sets; write "
            "config.data.tests = {'mbpp': config.data.test} (or name your set)."
        )
    if not c.data.tests:
        _fail("config.data.tests is empty; name at least one test set.")
    sets = [("train", c.data.train)] + [(f"tests.{k}", v) for k, v in c.data.tests.items()]
    for split, d in sets:
        if d.name != "toy" and d.name not in DATASETS:
            _fail(
                f"Unknown dataset {d.name!r} in config.data.{split}.name; use 'toy' or one of "
                f"{', '.join(DATASETS)}."
            )
        policy = d.get("public_tests", "first")
        if policy not in PUBLIC_TESTS:
            _fail(
                f"config.data.{split}.public_tests={policy!r} is unknown; use one of "
                f"{', '.join(PUBLIC_TESTS)}."
            )
        if policy != "first" and d.name not in ("mbpp", "mbpp_sanitized", "toy"):
            _fail(
                f"config.data.{split}.public_tests={policy!r} is for MBPP only; set it to "
                f"'first' for {d.name}."
            )
        if d.get("preamble", "none") not in PREAMBLES:
            _fail(
                f"config.data.{split}.preamble={d.preamble!r} is unknown; use one of "
                f"{', '.join(PREAMBLES)}."
            )
    try:
        executor_options(c)
    except (TypeError, ValueError) as e:
        _fail(f"config.executor is invalid: {e}")
    if c.eval.verifier not in EVAL_VERIFIERS:
        _fail(
            f"config.eval.verifier must be one of {', '.join(EVAL_VERIFIERS)}, got "
            f"{c.eval.verifier!r}."
        )
    s = c.eval.sampled
    if s.num_trajectories < 0 or any(
        k > s.num_trajectories for k in s.pass_k if s.num_trajectories
    ):
        _fail(
            f"config.eval.sampled.pass_k {tuple(s.pass_k)} needs k <= num_trajectories "
            f"({s.num_trajectories}); lower k or sample more trajectories (0 disables them)."
        )
    from mucode_jax.training.config import check_train_config

    stages = [("sft", c.sft), ("verifier", c.verifier)]
    if c.warm_start.enabled:
        stages.append(("warm_start.sft", c.warm_start.sft))
    for name, stage in stages:
        try:
            check_train_config(stage, f"config.{name}")
        except (KeyError, AttributeError) as e:
            _fail(f"config.{name} is missing a training field ({e}); start it from the defaults.")
        except ValueError as e:
            _fail(str(e))
    for split, d in sets:
        if d.get("limit") is not None and (not isinstance(d.limit, int) or d.limit < 0):
            _fail(f"config.data.{split}.limit must be an integer >= 0 (0: all), got {d.limit!r}.")
    if not c.warm_start.enabled and not c.base:
        _fail(
            "config.base is empty; point it at an HF generator directory or enable "
            "config.warm_start."
        )
    ws = c.warm_start
    if ws.enabled and ws.get("exclude_train", False) and not ws.num_problems:
        _fail(
            "config.warm_start.exclude_train leaves out the loop's train problems, but "
            "warm_start.num_problems=0 means exactly those; set num_problems (-1: every toy "
            "train problem) or exclude_train=False."
        )
