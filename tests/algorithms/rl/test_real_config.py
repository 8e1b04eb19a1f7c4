"""The RLEF 8B config lowers its policy and value train steps ahead of time on 8 fake
CPU devices (abstract models, no weights; as tests/test_real_configs.py does for μCode)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "rlef_codecontests_llama3p1_8b.py"

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import jax, jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from mucode_jax import sharding as sh
    from mucode_jax.algorithms.rl import losses as L
    from mucode_jax.algorithms.rl.config import check_rl_config
    from mucode_jax.algorithms.rl.trainer import batch_specs
    from mucode_jax.models.llama import Llama, LlamaConfig
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.training import optim, steps
    from mucode_jax.training.config import dtype_of
    from mucode_jax.training.state import TrainState, param_shardings, split_model
    from mucode_jax.training.state import train_state_shardings

    spec = importlib.util.spec_from_file_location("cfg", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    check_rl_config(c)
    r = c.rl
    mesh = sh.make_mesh(tuple(tuple(a) for a in c.mesh))
    rules = sh.DEFAULT_RULES
    mc = LlamaConfig.preset("llama3.1-8b", dtype=dtype_of(r.model.dtype),
                            param_dtype=dtype_of(r.model.param_dtype), remat=r.model.remat)
    pspec, vspec = batch_specs(r)
    steps.check_batch_divides(r.minibatch_size // r.grad_accum, mesh, rules)
    out = {"devices": jax.device_count()}
    for name, cls, spec_, make_loss, ocfg in (
        ("policy", Llama, pspec,
         lambda g: L.policy_loss_fn(g, clip_eps=r.clip_eps, kl_coef=r.kl_coef, kl=r.kl),
         r.policy_optim),
        ("value", Verifier, vspec, lambda g: L.value_loss_fn(g, clip=r.value_clip), r.value_optim),
    ):
        abstract = nnx.eval_shape(lambda: cls(mc, rngs=nnx.Rngs(0)))
        graphdef, abs_params = split_model(abstract)
        p_sh = param_shardings(abstract, mesh, rules)
        optimizer, schedule = optim.make_optimizer(ocfg, 1000)
        st_sh = train_state_shardings(optimizer, abs_params, p_sh, mesh)
        abs_state = TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params,
            opt_state=jax.eval_shape(optimizer.init, abs_params),
            rng=jax.eval_shape(lambda: jax.random.PRNGKey(0)),
        )
        abs_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abs_state, st_sh)
        b_sh = steps.batch_shardings(spec_, mesh, rules)
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh[k])
                 for k, v in spec_.items()}
        step = steps.make_train_step(make_loss(graphdef), optimizer, schedule)
        jitted = jax.jit(step, in_shardings=(st_sh, b_sh),
                         out_shardings=(st_sh, NamedSharding(mesh, P())), donate_argnums=(0,))
        with sh.use_mesh(mesh, rules):
            text = jitted.lower(abs_state, batch).as_text()
        out[name] = {"num_params": sum(x.size for x in jax.tree.leaves(abs_params)),
                     "shape": list(spec_["inputs"].shape), "hlo_has_sharding": "sharding" in text,
                     "batch_spec": list(b_sh["inputs"].spec)}
    print("RESULT " + json.dumps(out))
    """
)


def test_rlef_8b_config_lowers_on_eight_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CONFIG)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert out["devices"] == 8
    assert out["policy"]["num_params"] == 8_030_261_248
    assert 0.9 * 8_030_261_248 < out["value"]["num_params"] < 8_030_261_248
    for part in ("policy", "value"):
        assert out[part]["shape"] == [8, 8, 5119]
        assert out[part]["hlo_has_sharding"]
        assert out[part]["batch_spec"] == [None, "fsdp"]
