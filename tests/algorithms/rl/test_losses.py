"""RLEF's advantages, PPO / GRPO losses and KL estimators against PyTorch references written
here (float64 torch vs float32 JAX)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mucode_jax.algorithms.rl import group_advantages, turn_advantages
from mucode_jax.algorithms.rl import losses as L


def torch_gae(r, v, m, gamma, lam):
    r, v, m = (torch.tensor(x, dtype=torch.float64) for x in (r, v, m))
    e, k = r.shape
    adv = torch.zeros(e, k, dtype=torch.float64)
    for i in range(e):
        n = int(m[i].sum())
        last = 0.0
        for t in reversed(range(n)):
            nv = v[i, t + 1] if t + 1 < n else 0.0
            delta = r[i, t] + gamma * nv - v[i, t]
            last = delta + gamma * lam * last
            adv[i, t] = last
    ret = (adv + v) * m
    return adv.numpy(), ret.numpy()


def _episodes(seed=0, e=7, k=3):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(e, k)).astype(np.float32)
    v = rng.normal(size=(e, k)).astype(np.float32)
    lens = rng.integers(1, k + 1, size=e)
    m = (np.arange(k)[None] < lens[:, None]).astype(np.float32)
    return r, v, m


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95), (1.0, 0.5)])
def test_turn_advantages_match_torch_gae(gamma, lam):
    r, v, m = _episodes()
    adv, ret = turn_advantages(r, v, m, gamma=gamma, lam=lam)
    ref_adv, ref_ret = torch_gae(r, v, m, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref_ret, atol=1e-5)
    assert np.all(np.asarray(adv)[m == 0] == 0)


def test_monte_carlo_advantage_is_reward_to_go_minus_value():
    r, v, m = _episodes(1)
    adv, _ = turn_advantages(r, v, m)  # γ = λ = 1
    rtg = np.flip(np.cumsum(np.flip(r * m, 1), 1), 1)
    np.testing.assert_allclose(np.asarray(adv), (rtg - v) * m, atol=1e-5)
    # A value after the last valid turn must not leak in.
    v2 = v.copy()
    v2[m == 0] = 100.0
    np.testing.assert_allclose(np.asarray(turn_advantages(r, v2, m)[0]), np.asarray(adv))


def test_turn_advantages_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="episodes, turns"):
        turn_advantages(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3)))


def test_group_advantages_match_torch():
    g = np.array([1.0, -1.0, -1.2, 1.0, -1.0, 0.8, -1.4], np.float32)
    groups = ["a", "a", "a", "b", "b", "b", "c"]
    t = torch.tensor(g, dtype=torch.float64)
    ref_rloo, ref_grpo = torch.zeros(7, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    for idx in ([0, 1, 2], [3, 4, 5], [6]):
        x = t[idx]
        n = len(idx)
        ref_rloo[idx] = x - (x.sum() - x) / (n - 1) if n > 1 else 0.0
        ref_grpo[idx] = (x - x.mean()) / (x.std(unbiased=False) + 1e-6)
    np.testing.assert_allclose(group_advantages(g, groups, "rloo"), ref_rloo.numpy(), atol=1e-5)
    np.testing.assert_allclose(group_advantages(g, groups, "grpo"), ref_grpo.numpy(), atol=1e-4)


def torch_policy_loss(logits, targets, old, ref, adv, w, eps, beta, kl):
    logits = torch.tensor(np.asarray(logits), dtype=torch.float64)
    lp_all = torch.log_softmax(logits, -1)
    logp = lp_all.gather(-1, torch.tensor(np.asarray(targets))[..., None].long())[..., 0]
    old, ref, adv, w = (
        torch.tensor(np.asarray(x), dtype=torch.float64) for x in (old, ref, adv, w)
    )
    ratio = torch.exp(logp - old)
    pg = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    k1 = logp - ref
    per = pg + beta * k3 if kl == "k3" else pg
    ent = -(lp_all.exp() * lp_all).sum(-1)
    n = w.sum()
    return {
        "loss": float((per * w).sum() / n),
        "kl_k1": float((k1 * w).sum() / n),
        "kl_k3": float((k3 * w).sum() / n),
        "entropy": float((ent * w).sum() / n),
    }, logits


@pytest.mark.parametrize("kl", ["k3", "k1"])
def test_policy_loss_and_kl_estimators_match_torch(kl):
    rng = np.random.default_rng(0)
    b, t, v = 3, 9, 11
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    targets = rng.integers(0, v, size=(b, t))
    logp_true = np.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    old = (logp_true + 0.3 * rng.normal(size=(b, t))).astype(np.float32)
    ref = (logp_true + 0.5 * rng.normal(size=(b, t))).astype(np.float32)
    adv = rng.normal(size=(b, t)).astype(np.float32)
    w = (rng.random((b, t)) < 0.6).astype(np.float32)
    eps, beta = 0.2, 0.1

    def jax_loss(lg):
        logp, ent = L.token_logprobs_and_entropy(lg, jnp.asarray(targets))
        total, count, aux = L.policy_loss_sums(
            logp, ent, old, ref, logp, adv, w, clip_eps=eps, kl_coef=beta, kl=kl
        )
        return total / count, (aux, count)

    (loss, (aux, count)), grad = jax.value_and_grad(jax_loss, has_aux=True)(jnp.asarray(logits))
    ref_vals, tlogits = torch_policy_loss(logits, targets, old, ref, adv, w, eps, beta, kl)
    assert float(loss) == pytest.approx(ref_vals["loss"], abs=1e-5)
    for k in ("kl_k1", "kl_k3", "entropy"):
        assert float(aux[k] / count) == pytest.approx(ref_vals[k], abs=1e-5), k
    # Gradients against torch autograd.
    tlogits.requires_grad_(True)
    tl, _ = torch_policy_loss(logits, targets, old, ref, adv, w, eps, beta, kl)
    lg = tlogits
    lp_all = torch.log_softmax(lg, -1)
    logp = lp_all.gather(-1, torch.tensor(targets)[..., None])[..., 0]
    to, tr, ta, tw = (torch.tensor(x, dtype=torch.float64) for x in (old, ref, adv, w))
    ratio = torch.exp(logp - to)
    pg = -torch.min(ratio * ta, torch.clamp(ratio, 1 - eps, 1 + eps) * ta)
    per = pg + beta * (torch.exp(tr - logp) - (tr - logp) - 1) if kl == "k3" else pg
    ((per * tw).sum() / tw.sum()).backward()
    np.testing.assert_allclose(np.asarray(grad), lg.grad.numpy(), atol=1e-6)
    # Masked positions (prompt and feedback tokens) get exactly zero gradient.
    assert np.all(np.asarray(grad)[w == 0] == 0.0)


def test_kl_estimators_are_unbiased_for_the_true_kl():
    rng = np.random.default_rng(0)
    p = jax.nn.softmax(jnp.asarray(rng.normal(size=6)))
    q = jax.nn.softmax(jnp.asarray(rng.normal(size=6)))
    true_kl = float(jnp.sum(p * (jnp.log(p) - jnp.log(q))))
    # Exact expectation over x ~ p of each estimator.
    e_k1 = float(jnp.sum(p * L.kl_k1(jnp.log(p), jnp.log(q))))
    e_k3 = float(jnp.sum(p * L.kl_k3(jnp.log(p), jnp.log(q))))
    assert e_k1 == pytest.approx(true_kl, rel=1e-5)
    assert e_k3 == pytest.approx(true_kl, rel=1e-5)
    assert float(jnp.min(L.kl_k3(jnp.log(p), jnp.log(q)))) >= 0.0


@pytest.mark.parametrize("clip", [0.0, 0.2])
def test_value_loss_matches_torch(clip):
    rng = np.random.default_rng(2)
    v, old, ret = (rng.normal(size=8).astype(np.float32) for _ in range(3))
    w = np.array([1, 1, 0, 1, 1, 1, 0, 1], np.float32)
    total, count, _ = L.value_loss_sums(jnp.asarray(v), old, ret, w, clip=clip)
    tv, to, tr, tw = (torch.tensor(x, dtype=torch.float64) for x in (v, old, ret, w))
    err = (tv - tr) ** 2
    if clip:
        err = torch.max(err, (to + torch.clamp(tv - to, -clip, clip) - tr) ** 2)
    assert float(total / count) == pytest.approx(float((0.5 * err * tw).sum() / tw.sum()), abs=1e-6)
