"""The real configurations build their model, shardings and train steps ahead of time.

On 8 fake CPU devices, in a subprocess (XLA_FLAGS must be set before JAX starts): for each of
`configs/mucode_mbpp_llama3p2_1b.py` and `configs/mucode_codecontests_llama3p1_8b.py`, the
generator and the verifier are built abstractly from the preset (`nnx.eval_shape`, no
weights), their parameter shardings come from the config's mesh and rules, and each train
step is lowered with `jax.jit(...).lower(...)` on `ShapeDtypeStruct`s of the config's batch
at its full sequence length (compiling is not needed to catch shape and sharding errors, and
would take minutes for the 8B on a CPU). Also pins the official hyperparameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "mbpp_1b": ("configs/mucode_mbpp_llama3p2_1b.py", "llama3.2-1b"),
    "codecontests_8b": ("configs/mucode_codecontests_llama3p1_8b.py", "llama3.1-8b"),
}

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import jax, jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from mucode_jax import sharding as sh
    from mucode_jax.models.llama import Llama
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.training import config as config_lib, loop, optim, steps
    from mucode_jax.training.state import TrainState, param_shardings, split_model
    from mucode_jax.training.state import train_state_shardings

    spec = importlib.util.spec_from_file_location("cfg", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    out = {"devices": jax.device_count()}
    for name, tc, verifier in (("sft", c.sft, False), ("verifier", c.verifier, True)):
        mesh, rules = loop.mesh_and_rules(tc)
        mc = config_lib.model_config(tc)
        cls = Verifier if verifier else Llama
        abstract = nnx.eval_shape(lambda: cls(mc, rngs=nnx.Rngs(0)))
        graphdef, abs_params = split_model(abstract)
        p_sh = param_shardings(abstract, mesh, rules)
        optimizer, schedule = optim.make_optimizer(tc.optim, 1000)
        st_sh = train_state_shardings(optimizer, abs_params, p_sh, mesh)
        abs_state = TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32),
            params=abs_params,
            opt_state=jax.eval_shape(optimizer.init, abs_params),
            rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)),
        )
        abs_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abs_state, st_sh
        )
        accum, micro, L = tc.grad_accum, tc.batch_size // tc.grad_accum, tc.data.max_length
        steps.check_batch_divides(micro, mesh, rules)
        if verifier:
            batch = {
                "tokens": jax.ShapeDtypeStruct((accum, micro, 2, L), jnp.int32),
                "mask": jax.ShapeDtypeStruct((accum, micro, 2, L), jnp.int32),
                "weights": jax.ShapeDtypeStruct((accum, micro), jnp.float32),
            }
            loss = steps.verifier_loss_fn(graphdef, tc.loss, tc.l2)
        else:
            batch = {k: jax.ShapeDtypeStruct((accum, micro, L), jnp.int32)
                     for k in ("inputs", "targets", "segment_ids", "positions")}
            batch["weights"] = jax.ShapeDtypeStruct((accum, micro, L), jnp.float32)
            loss = steps.sft_loss_fn(graphdef)
        b_sh = steps.batch_shardings(batch, mesh, rules)
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh[k])
                 for k, v in batch.items()}
        step = steps.make_train_step(loss, optimizer, schedule)
        jitted = jax.jit(
            step,
            in_shardings=(st_sh, b_sh),
            out_shardings=(st_sh, NamedSharding(mesh, P())),
            donate_argnums=(0,),
        )
        with sh.use_mesh(mesh, rules):
            lowered = jitted.lower(abs_state, batch)
        text = lowered.as_text()
        flat = {jax.tree_util.keystr(k): v.spec for k, v in
                jax.tree_util.tree_flatten_with_path(p_sh)[0]}
        out[name] = {
            "mesh": dict(mesh.shape),
            "num_params": sum(x.size for x in jax.tree.leaves(abs_params)),
            "specs": {k: [list(a) if isinstance(a, tuple) else a for a in s]
                      for k, s in flat.items()},
            "batch_spec": list(b_sh["weights"].spec),
            "hlo_has_sharding": "sharding" in text,
            "shape": [accum, micro, L],
        }
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def lowered(request):
    path, _ = CONFIGS[request.param]
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT / path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return request.param, json.loads(line[len("RESULT ") :])


def test_model_shardings_and_steps_lower(lowered):
    name, out = lowered
    assert out["devices"] == 8
    for part in ("sft", "verifier"):
        r = out[part]
        assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
        assert r["hlo_has_sharding"]
        specs = r["specs"]
        pre = "['backbone']" if part == "verifier" else ""
        # Live specs of the rules (trailing None dropped): embed [V, D] has D over fsdp, and
        # each layer's projections are split over fsdp on their embed axis (ZeRO-3-like).
        assert specs[pre + "['embed']"] == [None, "fsdp"]
        assert specs[pre + "['layers'][0]['attn']['q']"] == ["fsdp"]
        assert specs[pre + "['layers'][0]['mlp']['down']"] == [None, "fsdp"]
        big = [v for k, v in specs.items() if "norm" not in k]
        assert all("fsdp" in v for v in big), specs
        assert r["batch_spec"] == [None, "fsdp"]
    expected = {"mbpp_1b": 1_235_814_400, "codecontests_8b": 8_030_261_248}[name]
    assert out["sft"]["num_params"] == expected
    # The verifier drops the LM head (untied in the 8B) and adds a scalar head.
    assert 0.9 * expected < out["verifier"]["num_params"] <= expected + 4097
    assert out["sft"]["shape"] == [2, 8, 8192]
    assert out["verifier"]["shape"] == [8, 8, 2048]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_official_hyperparameters(name):
    import importlib.util

    path, preset = CONFIGS[name]
    spec = importlib.util.spec_from_file_location("cfg_" + name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    assert c.iterations == 2 and c.mode == "mucode" and not c.warm_start.enabled
    g, v = c.sft, c.verifier
    assert (g.optim.lr, g.num_epochs, g.batch_size, g.data.max_length) == (5e-7, 2, 16, 8192)
    assert (v.optim.lr, v.num_epochs, v.batch_size, v.data.max_length) == (1e-6, 2, 64, 2048)
    assert (v.optim.eps, v.optim.schedule, v.optim.warmup_steps) == (1e-5, "linear", 0)
    assert (v.loss, v.l2, v.data.pairs_per_problem) == ("bt", 1e-3, 32)
    assert g.model.preset == v.model.preset == preset
    s = c.rollout.search
    assert (s.num_searches, s.num_candidates, s.max_turns) == (15, 1, 3)
    assert (c.rollout.temperature, c.rollout.top_p, c.sampling.max_new_tokens) == (0.7, 1.0, 1000)
    assert c.eval.search.max_turns == 3 and c.eval.search.num_searches == 10
    assert c.protocol == "official" and c.relabel.oracle_assisted is True
    assert (g.data.batch_unit, g.data.pack, g.data.train_eos) == ("examples", False, False)
    assert (v.optim.weight_decay, v.optim.clip_norm, v.optim.horizon) == (
        0.01,
        0.0,
        "steps_x_epochs",
    )
    assert (v.data.eval_fraction, v.score_init, c.eval.verifier) == (0.0, "official", "official")
    from mucode_jax.algorithms.config import check_config

    c.base = "/ckpt/base"
    check_config(c)  # the official protocol holds as the file sets it
    want = {"mbpp_1b": {"mbpp", "humaneval", "mbpp_plus"}, "codecontests_8b": {"codecontests"}}
    assert set(c.data.tests) == want[name]
