"""llmkit.rl: GAE against a direct computation, the clipped losses' gradients, rewards on the
last real token, the value head at initialisation, log-probabilities with temperature, the
KL controller, a toy problem PPO solves (and does not with the advantage's sign flipped),
and the monitor on healthy and unhealthy metric streams."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit import checkpoint, rl
from llmkit.decoding import apply_temperature
from llmkit.gpt import GPT, GPTConfig


def tiny_gpt(seed: int = 0, vocab: int = 8) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, d_model=16))


# ------------------------------------------------------------------------------- GAE


def gae_direct(rewards, values, gamma, lam):
    """One row of real tokens: A_t = sum_l (gamma lam)^l delta_{t+l}, V after the end 0."""
    n = len(rewards)
    v = list(values) + [0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(n)]
    adv = [sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]
    return adv, [a + values[t] for t, a in enumerate(adv)]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=4
    ),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_gae_matches_the_direct_sum_with_padding_anywhere(rows, gamma, lam, seed):
    """Rows of different lengths, padded on the left and the right, give each row's GAE."""
    g = torch.Generator().manual_seed(seed)
    width = max(n + left + right for n, left, right in rows)
    b = len(rows)
    rewards = torch.randn(b, width, generator=g, dtype=torch.float64)
    values = torch.randn(b, width, generator=g, dtype=torch.float64)
    mask = torch.zeros(b, width, dtype=torch.bool)
    for i, (n, left, _) in enumerate(rows):
        mask[i, left : left + n] = True
    adv, ret = rl.gae(rewards, values, mask, gamma, lam)
    for i in range(b):
        want_adv, want_ret = gae_direct(
            rewards[i][mask[i]].tolist(), values[i][mask[i]].tolist(), gamma, lam
        )
        assert adv[i][mask[i]].tolist() == pytest.approx(want_adv, abs=1e-9)
        assert ret[i][mask[i]].tolist() == pytest.approx(want_ret, abs=1e-9)
    assert not adv[~mask].any() and not ret[~mask].any()


def test_gae_lambda_one_is_reward_to_go_and_zero_is_td():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, -1.0, 2.0]])
    adv, ret = rl.gae(r, v, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0]]))  # sum of rewards to go
    adv0, _ = rl.gae(r, v, gamma=1.0, lam=0.0)
    torch.testing.assert_close(adv0, torch.tensor([[1 - 1 - 0.5, 2 + 2 + 1, 3 - 2.0]]))


def test_gae_validates():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="lam must be <= 1"):
        rl.gae(r, r, lam=1.5)
    with pytest.raises(ValueError, match="values must have the shape of rewards"):
        rl.gae(r, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="rewards must be a floating-point"):
        rl.gae(torch.zeros(2, 3, dtype=torch.long), r)


# ------------------------------------------------------------------ rewards and KL


@pytest.mark.parametrize("side", ["right", "left", "both"])
def test_the_score_lands_on_the_last_real_token(side):
    b, n = 3, 6
    lengths = [2, 6, 4]
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(lengths):
        start = {"right": 0, "left": n - k, "both": (n - k) // 2}[side]
        mask[i, start : start + k] = True
    logp = torch.full((b, n), -1.0)
    ref = torch.full((b, n), -1.5)
    scores = torch.tensor([10.0, 20.0, 30.0])
    rewards, kl = rl.per_token_rewards(scores, logp, ref, mask, beta=0.1)
    for i in range(b):
        last = int(mask[i].nonzero().max())
        expect = torch.where(mask[i], torch.tensor(-0.05), torch.tensor(0.0))
        expect[last] += scores[i]
        torch.testing.assert_close(rewards[i], expect)
    assert torch.equal(kl, torch.where(mask, torch.tensor(0.5), torch.tensor(0.0)))
    # the sum of a row's rewards is score - beta * KL
    torch.testing.assert_close(rewards.sum(1), scores - 0.1 * kl.sum(1))


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    torch.testing.assert_close(rl.kl_penalty(logp, ref, "k1"), logp - ref)
    log_r = ref - logp
    torch.testing.assert_close(rl.kl_penalty(logp, ref, "k3"), log_r.exp() - 1 - log_r)
    assert (rl.kl_penalty(logp, ref, "k3") >= 0).all()
    # both are unbiased: their expectation under p is KL(p || q)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    exact = (p * (p / q).log()).sum()
    for kind in ("k1", "k3"):
        est = (p * rl.kl_penalty(p.log(), q.log(), kind)).sum()
        torch.testing.assert_close(est, exact)
    with pytest.raises(ValueError, match="kind must be one of"):
        rl.kl_penalty(logp, ref, "k2")


def test_whiten_uses_real_tokens_only():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = rl.whiten(x, mask)
    real = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(w[mask.bool()], (real - 2.0) / real.var(unbiased=False).sqrt())
    assert not w[~mask.bool()].any()


# --------------------------------------------------------------------------- losses


def test_clipped_policy_loss_has_no_gradient_beyond_the_clip():
    """Positive advantage: no gradient once the ratio is above 1 + eps (below 1 - eps it
    still pulls up); negative advantage: none below 1 - eps."""
    clip = 0.2
    ratios = torch.tensor([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5])
    adv = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    old = torch.zeros(8)
    logp = ratios.log().requires_grad_()
    loss, stats = rl.ppo_policy_loss(logp, old, adv, clip)
    loss.backward()
    grad = logp.grad
    assert grad[3] == 0 and grad[4] == 0  # beyond the clip on the side the advantage pushes
    for i in (0, 1, 2, 5, 6, 7):  # inside, or outside on the other side: -A * ratio / n
        assert grad[i].item() == pytest.approx(-adv[i].item() * ratios[i].item() / 8)
    assert stats["clip_fraction"] == pytest.approx(2 / 8)
    assert stats["ratio_max"] == pytest.approx(1.5) and stats["ratio_min"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(
        torch.maximum(-adv * ratios, -adv * ratios.clamp(0.8, 1.2)).mean().item()
    )


def test_policy_loss_respects_the_mask_and_reports_approx_kl():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    old = torch.tensor([[-1.2, -2.0], [-0.5, 0.0]])
    adv = torch.tensor([[1.0, -1.0], [2.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss, stats = rl.ppo_policy_loss(logp, old, adv, 0.2, mask)
    ratio = (logp - old).exp()
    terms = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert loss.item() == pytest.approx(terms[mask].mean().item())
    lr = (logp - old)[mask]
    assert stats["approx_kl"] == pytest.approx(((-lr).exp() - 1 + lr).mean().item())
    with pytest.raises(ValueError, match="clip must lie in"):
        rl.ppo_policy_loss(logp, old, adv, 1.5)


def test_clipped_value_loss():
    old = torch.tensor([0.0, 0.0, 0.0])
    ret = torch.tensor([1.0, -1.0, 0.05])
    v = torch.tensor([0.5, 0.5, 0.1], requires_grad=True)
    loss, stats = rl.ppo_value_loss(v, old, ret, clip=0.2)
    loss.backward()
    # row 0: moved past the clip towards the target: the clipped error is larger, no gradient
    # row 1: moved away from the target: unclipped error larger, gradient (v - G) / n
    assert v.grad[0] == 0
    assert v.grad[1].item() == pytest.approx((0.5 + 1.0) / 3)
    assert v.grad[2].item() == pytest.approx((0.1 - 0.05) / 3)
    assert stats["value_error"] == pytest.approx(((v.detach() - ret) ** 2).mean().item())


# -------------------------------------------------------------------------- models


def test_value_head_is_zero_at_initialisation_and_policy_unchanged():
    model = tiny_gpt()
    policy = rl.PolicyWithValue(model)
    ids = torch.tensor([[0, 1, 2, 3], [4, 4, 5, 6]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    logits, values = policy(ids, attention_mask=mask)
    assert torch.equal(values, torch.zeros(2, 4))
    torch.testing.assert_close(logits, model(ids, attention_mask=mask))
    with pytest.raises(TypeError, match="model must be a decoder"):
        rl.PolicyWithValue(torch.nn.Linear(2, 2))


def test_reference_copy_is_frozen_and_separate():
    model = tiny_gpt()
    ref = rl.reference_copy(rl.PolicyWithValue(model))
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    with torch.no_grad():
        model.wte.weight.add_(1.0)
    assert not torch.equal(ref.wte.weight, model.wte.weight)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_logprobs_with_temperature_are_the_sampling_distribution(temperature):
    """The rollout's log-probabilities are those of the distribution the tokens were
    sampled from: softmax(logits / T) at each step of cached, left-padded decoding."""
    model = tiny_gpt(1)
    policy = rl.PolicyWithValue(model)
    ref = rl.reference_copy(model)
    prompts = [[1], [2, 5, 7], [3, 3]]
    cfg = rl.PPOConfig(batch_size=3, minibatch_size=3, max_new_tokens=4, temperature=temperature)
    batch = rl.rollout(
        policy,
        ref,
        prompts,
        lambda p, r: torch.zeros(len(p)),
        cfg,
        torch.Generator().manual_seed(0),
    )
    for i, (p, r) in enumerate(zip(prompts, batch.responses, strict=True)):
        for t, token in enumerate(r):
            logits = model(torch.tensor([p + r[:t]]))[0, -1]  # the row alone, no padding
            want = F.log_softmax(apply_temperature(logits, temperature), -1)[token]
            assert batch.logprobs[i, t].item() == pytest.approx(want.item(), abs=1e-5)
    # the untrained policy equals its reference: KL 0
    torch.testing.assert_close(batch.logprobs, batch.ref_logprobs)


def test_sampling_frequencies_match_the_logprobs():
    """Empirical check: the first token's frequencies over many samples are exp(logp)."""
    model = tiny_gpt(2, vocab=4)
    policy = rl.PolicyWithValue(model)
    cfg = rl.PPOConfig(batch_size=4000, minibatch_size=8, max_new_tokens=1, temperature=0.7)
    batch = rl.rollout(
        policy,
        rl.reference_copy(model),
        [[1, 2]] * 4000,
        lambda p, r: torch.zeros(len(p)),
        cfg,
        torch.Generator().manual_seed(0),
    )
    tokens = torch.tensor([r[0] for r in batch.responses])
    freq = torch.bincount(tokens, minlength=4).float() / 4000
    probs = torch.zeros(4)
    probs[tokens] = batch.logprobs[:, 0].exp()
    assert (freq - probs).abs().max() < 0.03


def test_rollout_stops_rows_at_eos_and_masks_the_rest():
    model = tiny_gpt(3)
    policy = rl.PolicyWithValue(model)
    cfg = rl.PPOConfig(batch_size=8, minibatch_size=8, max_new_tokens=6, eos_token_id=0)
    batch = rl.rollout(
        policy,
        rl.reference_copy(model),
        [[1, 2], [3]] * 4,
        lambda p, r: torch.tensor([float(len(x)) for x in r]),
        cfg,
        torch.Generator().manual_seed(4),
    )
    lengths = batch.response_mask.sum(1).tolist()
    assert lengths == [len(r) for r in batch.responses]
    assert any(r[-1] == 0 and len(r) < 6 for r in batch.responses)  # someone stopped early
    assert not batch.logprobs[~batch.response_mask].any()


# ----------------------------------------------------------------------- controller


def test_adaptive_kl_controller():
    ctl = rl.KLController(0.2, target=6.0, horizon=10_000)
    ctl.update(kl=12.0, n=256)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 256 / 10_000))
    ctl = rl.KLController(0.2, target=6.0, horizon=100)
    ctl.update(kl=5.4, n=10)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * (1 - 0.1 * 10 / 100))
    fixed = rl.KLController(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3
    with pytest.raises(ValueError, match="target must be > 0"):
        rl.KLController(0.1, target=0.0)


def test_config_validates():
    with pytest.raises(ValueError, match="flip must be one of"):
        rl.PPOConfig(flip=("reward",))
    with pytest.raises(ValueError, match="minibatch_size must be <= batch_size"):
        rl.PPOConfig(batch_size=4, minibatch_size=8)
    with pytest.raises(ValueError, match="kl_kind must be one of"):
        rl.PPOConfig(kl_kind="k2")


# ------------------------------------------------------------------ end to end: a toy

X = 3  # the token the policy must learn to emit


def emit_x(prompts, responses):
    return torch.tensor([sum(t == X for t in r) / len(r) for r in responses])


def toy_run(flip=(), steps=14, monitor=False, **kw):
    model = tiny_gpt(0)
    policy = rl.PolicyWithValue(model)
    cfg = rl.PPOConfig(
        batch_size=16,
        minibatch_size=16,
        max_new_tokens=4,
        lr=5e-3,
        init_kl_coef=0.0,
        target_kl=None,
        flip=flip,
    )
    return rl.train_ppo(
        policy,
        rl.reference_copy(model),
        [[1], [2, 5], [4, 6, 7], [1, 2, 3]],
        emit_x,
        cfg,
        steps,
        generator=torch.Generator().manual_seed(0),
        monitor=monitor,
        **kw,
    )


def test_ppo_learns_to_emit_x_and_not_with_the_advantage_flipped():
    """At the start about one token in eight is X (eight tokens, chance); PPO drives
    the share of X to most tokens in 14 steps; with the advantage's sign flipped it drives
    it towards none."""
    good = toy_run()
    scores = [h["score"] for h in good.history]
    assert scores[0] < 0.3
    assert sum(scores[-3:]) / 3 > 0.6
    bad = toy_run(flip=("advantage",))
    flipped = [h["score"] for h in bad.history]
    assert flipped[0] == pytest.approx(scores[0])  # the same first rollout
    assert sum(flipped[-3:]) / 3 < 0.1
    for key in ("kl", "entropy", "clip_fraction", "approx_kl", "ratio_max", "value_error"):
        assert all(math.isfinite(h[key]) for h in good.history)


# ------------------------------------------------------------------------- the monitor


def healthy(n=20):
    return [
        dict(
            score=0.1 + 0.05 * i,
            kl=0.2 * i,
            entropy=2.0 - 0.03 * i,
            ratio_max=1.3,
            ratio_min=0.8,
            ratio_mean_max=1.05,
            approx_kl=0.01,
        )
        for i in range(n)
    ]


def test_monitor_stays_quiet_on_a_healthy_stream():
    assert rl.Monitor(reward_jump=1.0).watch(healthy()) is None


@pytest.mark.parametrize(
    ("step", "change", "rule", "words"),
    [
        (7, {"kl": 45.0}, "kl_above", "KL 45.000 nats > limit 30"),
        (5, {"kl": -3.0}, "kl_negative", "KL -3.000 nats < -0.5"),
        (9, {"ratio_mean_max": 80.0}, "ratio_blowup", "80"),
        (4, {"entropy": 0.05}, "entropy_collapse", "entropy 0.050"),
        (6, {"score": 4.0}, "reward_jump", "jumped 0.350 -> 4.000"),
        (3, {"kl": float("nan")}, "not_finite", "nan"),
        (8, {"value_error": float("inf")}, "not_finite", "inf"),
    ],
)
def test_monitor_fires_on_unhealthy_streams(step, change, rule, words):
    stream = healthy()
    stream[step] = {**stream[step], **change}
    alarm = rl.Monitor(reward_jump=1.0).watch(stream)
    assert alarm is not None and alarm.rule == rule and alarm.step == step
    assert words in alarm.message and words in str(alarm)


def test_monitor_canary_and_training_stop_with_a_checkpoint(tmp_path):
    """A canary that fires once the score passes 0.3 stops PPO on the toy, writes the last
    healthy policy as a checkpoint and restores it into the policy."""

    def canary(metrics, batch):
        share = float(batch.scores.mean())
        return f"share of X {share:.2f} > 0.3" if share > 0.3 else None

    model = tiny_gpt(0)
    res = toy_run(monitor=rl.Monitor(canary=canary), checkpoint_dir=tmp_path / "ck", steps=14)
    alarm = res.alarm
    assert alarm is not None and alarm.rule == "canary" and "> 0.3" in alarm.message
    assert len(res.history) == alarm.step + 1 < 14
    assert res.history[-2]["score"] <= 0.3 < res.history[-1]["score"]
    # the checkpoint holds the weights that produced the last healthy rollout
    policy = rl.PolicyWithValue(model)
    ck = checkpoint.load_checkpoint(alarm.checkpoint, policy)
    assert ck.history["alarm"]["rule"] == "canary"
    assert len(ck.history["steps"]) == alarm.step + 1


def test_monitor_is_on_by_default_in_train_ppo(tmp_path):
    """Without a monitor argument, a NaN score stops training at once."""
    model = tiny_gpt(0)
    cfg = rl.PPOConfig(batch_size=4, minibatch_size=4, max_new_tokens=2)
    res = rl.train_ppo(
        rl.PolicyWithValue(model),
        rl.reference_copy(model),
        [[1]],
        lambda p, r: torch.full((len(p),), float("nan")),
        cfg,
        5,
        checkpoint_dir=tmp_path / "ck",
    )
    assert res.alarm is not None and res.alarm.rule == "not_finite" and res.alarm.step == 0
    assert checkpoint.is_checkpoint(tmp_path / "ck")
    names = [r.name for r in rl.Monitor().rules]
    for name in ("not_finite", "kl_above", "kl_negative", "ratio_blowup", "entropy_collapse"):
        assert name in names


def test_plot_metrics_draws_one_panel_per_metric():
    import matplotlib

    matplotlib.use("Agg")
    history = healthy(5)
    axes = rl.plot_metrics(history, ["score", "kl", "entropy", "ratio_max"], label="run")
    assert len(axes) == 4
    xs, ys = axes[1].lines[0].get_data()
    assert list(xs) == [0, 1, 2, 3, 4] and list(ys) == [h["kl"] for h in history]
    assert axes[1].get_ylabel() == "KL to reference (nats/response)"
    with pytest.raises(TypeError, match="history must be a list"):
        rl.plot_metrics({"score": [1.0]})


def test_the_cord_restores_the_weights_of_the_last_healthy_rollout(tmp_path):
    """A rule that fires at step 2 leaves the policy (and the checkpoint) with the weights
    that sampled step 1's rollout: those after one update, not two."""
    model = tiny_gpt(0)
    policy = rl.PolicyWithValue(model)
    seen = []

    def canary(metrics, batch):
        seen.append({k: v.clone() for k, v in policy.state_dict().items()})
        return "step 2" if len(seen) == 3 else None

    cfg = rl.PPOConfig(batch_size=8, minibatch_size=8, max_new_tokens=3, lr=1e-2)
    res = rl.train_ppo(
        policy,
        rl.reference_copy(model),
        [[1], [2, 3]],
        emit_x,
        cfg,
        5,
        monitor=rl.Monitor([rl.Rule.canary(canary)]),
        checkpoint_dir=tmp_path / "ck",
        generator=torch.Generator().manual_seed(0),
    )
    assert res.alarm.step == 2 and "step 2" in str(res.alarm)
    assert not torch.equal(seen[1]["model.wte.weight"], seen[2]["model.wte.weight"])
    for k, v in policy.state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    fresh = rl.PolicyWithValue(tiny_gpt(5))
    checkpoint.load_checkpoint(res.alarm.checkpoint, fresh)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, seen[1][k]), k


def test_update_stops_early_on_approximate_kl():
    model = tiny_gpt(0)
    policy = rl.PolicyWithValue(model)
    ref = rl.reference_copy(model)
    g = torch.Generator().manual_seed(0)
    stats = {}
    for limit in (None, 1e-9):
        cfg = rl.PPOConfig(
            batch_size=8,
            minibatch_size=4,
            max_new_tokens=3,
            ppo_epochs=3,
            lr=1e-2,
            early_stop_kl=limit,
        )
        batch = rl.rollout(policy, ref, [[1], [2, 3]] * 4, emit_x, cfg, g)
        rl.compute_advantages(batch, 0.1, cfg)
        opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        stats[limit] = rl.ppo_update(policy, opt, batch, cfg, g)
    assert stats[None]["minibatches"] == 6 and stats[None]["early_stopped"] == 0
    # the first minibatch samples from the sampling policy: ratio 1, approx KL 0; the
    # second has moved past 1e-9
    assert stats[1e-9]["minibatches"] == 2 and stats[1e-9]["early_stopped"] == 1


def test_policy_with_value_on_llama():
    from llmkit.llama import Llama, LlamaConfig

    torch.manual_seed(0)
    model = Llama(
        LlamaConfig(vocab_size=10, block_size=16, n_layer=1, n_head=2, n_kv_head=1, d_model=16)
    )
    policy = rl.PolicyWithValue(model)
    ids = torch.tensor([[0, 0, 4, 5], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    logits, values = policy(ids, attention_mask=mask)
    torch.testing.assert_close(logits, model(ids, attention_mask=mask))
    assert torch.equal(values, torch.zeros(2, 4))


@pytest.mark.parametrize(
    ("flip", "score_sign", "kl_sign"),
    [((), 1, -1), (("score",), -1, -1), (("kl",), 1, 1), (("score", "kl"), -1, 1)],
)
def test_flips_change_the_signs_of_the_chosen_terms(flip, score_sign, kl_sign):
    """A row's rewards sum to (+-) score (+-) beta * KL, as the flips say."""
    model = tiny_gpt(0)
    policy = rl.PolicyWithValue(model)
    ref = tiny_gpt(1)  # another model: KL not 0
    cfg = rl.PPOConfig(batch_size=4, minibatch_size=4, max_new_tokens=3, flip=flip)
    batch = rl.rollout(
        policy, ref, [[1], [2, 3]] * 2, emit_x, cfg, torch.Generator().manual_seed(0)
    )
    rl.compute_advantages(batch, 0.5, cfg)
    want = score_sign * batch.scores + kl_sign * 0.5 * batch.kl.sum(1)
    torch.testing.assert_close(batch.rewards.sum(1), want)
    assert batch.kl.abs().sum() > 0


def test_reward_drop_catches_the_flipped_advantage_that_the_defaults_miss(tmp_path):
    """The flipped run is quiet under the default rules (entropy and KL stay moderate);
    a rule on the score falling below the first step's stops it."""
    quiet = toy_run(flip=("advantage",), monitor=True, checkpoint_dir=tmp_path / "a")
    assert quiet.alarm is None
    res = toy_run(
        flip=("advantage",), monitor=rl.Monitor(reward_drop=0.1), checkpoint_dir=tmp_path / "b"
    )
    assert res.alarm is not None and res.alarm.rule == "reward_drop"
    assert "since the first step" in res.alarm.message
    assert res.history[0]["score"] - res.history[-1]["score"] > 0.1


def test_ratio_rule_on_minibatch_means_ignores_single_tokens():
    token_rule = rl.Monitor(ratio_stat="token")
    mean_rule = rl.Monitor()  # the default: minibatch means, as trl
    one_token = {"ratio_max": 26.0, "ratio_min": 0.3, "ratio_mean_max": 1.1}
    assert token_rule.check(one_token, phase="update").rule == "ratio_blowup"
    assert mean_rule.check(one_token, phase="update") is None
    alarm = mean_rule.check({**one_token, "ratio_mean_max": 12.0}, phase="update")
    assert alarm.rule == "ratio_blowup" and "12" in alarm.message
    with pytest.raises(ValueError, match="stat"):
        rl.Rule.ratio_above(10.0, stat="median")


def test_ppo_update_reports_the_largest_minibatch_mean_ratio():
    torch.manual_seed(0)
    from llmkit.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=1, n_head=1, d_model=8))
    policy = rl.PolicyWithValue(model)
    ref = rl.reference_copy(policy)
    config = rl.PPOConfig(batch_size=4, minibatch_size=2, max_new_tokens=3, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    batch = rl.rollout(
        policy, ref, [[1, 2], [3], [4, 5], [6]], lambda p, r: torch.ones(4), config, g
    )
    rl.compute_advantages(batch, 0.1, config)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    stats = rl.ppo_update(policy, opt, batch, config, g)
    assert stats["ratio_min"] <= stats["ratio_mean_max"] <= stats["ratio_max"]
