"""Tests of llmkit.dpo: sequence log-probabilities, the DPO/cDPO/IPO losses, pair encoding,
batches with cached reference log-probabilities, and DPO training on a toy preference.

The loss is compared with hand computations and with trl's formulas written out here (trl
is not a dependency); ``sequence_logprobs`` with a direct loop over the tokens, with
padding on either side. The toy problem: a tiny GPT trained by DPO to prefer replies that
contain one token; its implicit reward must rank held-out pairs, and with the labels
swapped it must learn the opposite.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit import dpo
from llmkit.dpo import (
    IGNORE_INDEX,
    PreferencePair,
    dpo_batch_fn,
    dpo_loss,
    dpo_loss_fn,
    encode_preference,
    encode_preferences,
    evaluate_pairs,
    pad_pairs,
    pair_logprobs,
    preference_metrics,
    reference_logprobs,
    sequence_logprobs,
)
from llmkit.gpt import GPT, GPTConfig
from llmkit.reward import pairwise_accuracy
from llmkit.sft import SFTExample, encode_conversation
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, train


def tiny_gpt(vocab: int = 9, block: int = 12, seed: int = 0, d: int = 32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, d_model=d))


def logps4(b: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-10 * torch.rand(b, generator=g, dtype=torch.float64) for _ in range(4)]


# ------------------------------------------------------------------------- the loss


def test_loss_is_ln2_when_the_policy_is_the_reference():
    pc, pr, _, _ = logps4(5, 0)
    loss, rc, rr = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.3)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert torch.equal(rc, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(rr, torch.zeros(5, dtype=torch.float64))
    # cDPO's smoothing leaves it at ln 2 too: both terms are -log sigmoid(0)
    loss, _, _ = dpo_loss(pc, pr, pc.clone(), pr.clone(), label_smoothing=0.2)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_gradient_raises_chosen_and_lowers_rejected():
    pc, pr, rc, rr = logps4(6, 1)
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5)
    loss.backward()
    assert (pc.grad < 0).all()  # descent (-grad) raises log pi(chosen)
    assert (pr.grad > 0).all()  # and lowers log pi(rejected)
    assert torch.allclose(pc.grad, -pr.grad)
    # d loss / d log pi(y_w) = -beta * sigmoid(-beta h) / b, the paper's weighting
    h = (pc - rc) - (pr - rr)
    assert torch.allclose(pc.grad, -0.5 * torch.sigmoid(-0.5 * h.detach()) / 6)


def test_rewards_and_loss_by_hand():
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # policy: chosen -3, rejected -5; reference: chosen -4, rejected -4.5
    loss, rc, rr = dpo_loss(one(-3.0), one(-5.0), one(-4.0), one(-4.5), beta=0.2)
    assert rc.item() == pytest.approx(0.2 * 1.0)
    assert rr.item() == pytest.approx(0.2 * -0.5)
    h = 1.0 - (-0.5)  # 1.5
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2 * h)))
    # cDPO with eps = 0.1
    loss, _, _ = dpo_loss(one(-3.0), one(-5.0), one(-4.0), one(-4.5), 0.2, 0.1)
    want = 0.9 * math.log(1 + math.exp(-0.3)) + 0.1 * math.log(1 + math.exp(0.3))
    assert loss.item() == pytest.approx(want)
    # IPO: (h - 1/(2 beta))^2 = (1.5 - 2.5)^2
    loss, rc, _ = dpo_loss(one(-3.0), one(-5.0), one(-4.0), one(-4.5), 0.2, loss_type="ipo")
    assert loss.item() == pytest.approx(1.0)
    assert rc.item() == pytest.approx(0.2)


def test_ipo_minimum_is_at_the_target_margin():
    beta = 0.25
    pc = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    target = 1 / (2 * beta)
    loss, _, _ = dpo_loss(pc + target, zero, zero, zero, beta, loss_type="ipo")
    loss.backward()
    assert loss.item() == 0.0 and pc.grad.item() == 0.0


def trl_losses(pc, pr, rc, rr, beta, label_smoothing, loss_type):
    """trl's DPOTrainer.dpo_loss, written out (sigmoid and ipo branches)."""
    pi_logratios = pc - pr
    ref_logratios = rc - rr
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing
        )
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(0, 10_000),
    st.floats(0.01, 5.0),
    st.floats(0.0, 0.45),
    st.sampled_from(["sigmoid", "ipo"]),
)
def test_matches_trl_formulas(b, seed, beta, eps, loss_type):
    eps = eps if loss_type == "sigmoid" else 0.0
    args = logps4(b, seed)
    loss, rc, rr = dpo_loss(*args, beta, eps, loss_type)
    losses, trc, trr = trl_losses(*args, beta, eps, loss_type)
    assert torch.allclose(loss, losses.mean())
    assert torch.allclose(rc, trc) and torch.allclose(rr, trr)


def test_large_margins_stay_finite():
    big = torch.tensor([1e4, -1e4], dtype=torch.float32)
    zero = torch.zeros(2)
    loss, _, _ = dpo_loss(big, -big, zero, zero, beta=1.0)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(1e4 * 2 / 2, rel=1e-5)


def test_metrics():
    m = preference_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0]))
    assert m == pytest.approx(
        {
            "rewards/chosen": 1.0,
            "rewards/rejected": 1.0,
            "rewards/accuracy": 1.5 / 3,  # a tie counts one half, as reward.pairwise_accuracy
            "rewards/margin": 0.0,
        }
    )
    c, r = torch.tensor([0.5, -1.0, 2.0, 2.0]), torch.tensor([0.5, 1.0, 3.0, 1.0])
    assert preference_metrics(c, r)["rewards/accuracy"] == pairwise_accuracy(c, r) == 0.375


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0.0}, ValueError, "beta"),
        ({"beta": "0.1"}, TypeError, "beta"),
        ({"label_smoothing": 0.5}, ValueError, "label_smoothing"),
        ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
        ({"loss_type": "hinge"}, ValueError, "loss_type"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, ValueError, "sigmoid"),
    ],
)
def test_loss_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        dpo_loss(*logps4(2, 0), **kwargs)


def test_loss_rejects_bad_tensors():
    a = logps4(3, 0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(a[0], a[1], a[2], a[3][:2])
    with pytest.raises(TypeError, match="policy_chosen_logps"):
        dpo_loss([0.0], *a[1:])
    with pytest.raises(TypeError, match="float"):
        dpo_loss(torch.zeros(3, dtype=torch.long), *a[1:])
    with pytest.raises(ValueError, match=r"shape \(b,\)"):
        dpo_loss(*[x[None] for x in a])


# ------------------------------------------------------------ sequence log-probabilities


def direct_logprobs(model, rows):
    """Each row alone, unpadded, token by token: sum of log p(ids[i] | ids[:i]) on targets."""
    out = []
    for ids, labels in rows:
        x = torch.tensor([ids])
        logp = model(x).log_softmax(-1)[0]
        total = 0.0
        for i in range(1, len(ids)):
            if labels[i] != IGNORE_INDEX:
                total += logp[i - 1, ids[i]].item()
        out.append(total)
    return torch.tensor(out)


ROWS = [
    ([1, 2, 3, 4, 5], [-100, -100, 3, 4, 5]),
    ([6, 1, 7], [-100, -100, 7]),
    ([2, 2, 2, 8, 8, 1, 3], [-100, -100, -100, 8, 8, -100, 3]),  # a gap in the middle
]


def padded(rows, side, pad_id=0):
    width = max(len(i) for i, _ in rows)
    ids, labels, mask = [], [], []
    for i, lab in rows:
        n = width - len(i)
        if side == "right":
            ids.append(i + [pad_id] * n)
            labels.append(lab + [-100] * n)
            mask.append([1] * len(i) + [0] * n)
        else:
            ids.append([pad_id] * n + i)
            labels.append([-100] * n + lab)
            mask.append([0] * n + [1] * len(i))
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(mask)


@pytest.mark.parametrize("side", ["right", "left"])
def test_sequence_logprobs_matches_direct_computation(side):
    model = tiny_gpt().eval()
    ids, labels, mask = padded(ROWS, side)
    got = sequence_logprobs(model, ids, labels, mask)
    want = direct_logprobs(model, ROWS)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got < 0).all()
    if side == "right":  # right padding needs no mask in a causal model
        assert torch.allclose(sequence_logprobs(model, ids, labels), want, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(1, 8), min_size=1, max_size=4),
            st.lists(st.integers(1, 8), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["left", "right"]),
    st.integers(0, 3),
)
def test_sequence_logprobs_ignores_padding(rows, side, extra):
    """Each row's value is the row's alone, whatever the padding around it (a mask given)."""
    model = tiny_gpt(block=12).eval()
    rows = [(p + r, [-100] * len(p) + r) for p, r in rows]
    wide = rows + [
        (
            [1] * (max(len(i) for i, _ in rows) + extra),
            [-100] + [1] * (max(len(i) for i, _ in rows) + extra - 1),
        )
    ]
    ids, labels, mask = padded(wide, side, pad_id=3)
    got = sequence_logprobs(model, ids, labels, mask)[: len(rows)]
    assert torch.allclose(got, direct_logprobs(model, rows), atol=1e-4)


def test_sequence_logprobs_has_gradients():
    model = tiny_gpt()
    ids, labels, mask = padded(ROWS, "right")
    sequence_logprobs(model, ids, labels, mask).sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_sequence_logprobs_matches_sft_labels():
    """The labels of llmkit.sft (aligned with ids) go in unchanged; the sum equals minus
    the SFT target loss times the number of targets."""
    tok = CharTokenizer.train("abcdefgh \n?", ["<|endoftext|>", "<user>", "<assistant>"])
    msgs = [{"role": "user", "content": "ab c?"}, {"role": "assistant", "content": "fed"}]
    ex = encode_conversation(msgs, tok, "notes")
    model = tiny_gpt(vocab=tok.vocab_size, block=32)
    ids, labels = torch.tensor([ex.ids]), torch.tensor([ex.labels])
    got = sequence_logprobs(model, ids, labels)
    ce = F.cross_entropy(model(ids[:, :-1])[0], labels[0, 1:], ignore_index=-100, reduction="sum")
    assert got.item() == pytest.approx(-ce.item(), rel=1e-5)


def test_sequence_logprobs_rejects_bad_input():
    model = tiny_gpt()
    ids, labels, mask = padded(ROWS, "right")
    shifted = torch.cat([labels[:, 1:], torch.full((3, 1), -100)], dim=1)
    with pytest.raises(ValueError, match="aligned with ids"):
        sequence_logprobs(model, ids, shifted)
    no_target = labels.clone()
    no_target[1] = -100
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        sequence_logprobs(model, ids, no_target)
    with pytest.raises(ValueError, match="shape of ids"):
        sequence_logprobs(model, ids, labels[:, :-1])
    with pytest.raises(TypeError, match="integers"):
        sequence_logprobs(model, ids.float(), labels)
    with pytest.raises(ValueError, match="padding"):
        sequence_logprobs(model, ids, torch.where(labels == -100, ids, labels), mask)
    with pytest.raises(ValueError, match="at least 2"):
        sequence_logprobs(model, ids[:, :1], labels[:, :1])


# ------------------------------------------------------------------------ pair encoding


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(
        "abcdefghij \n?.", ["<|endoftext|>", "<system>", "<user>", "<assistant>"]
    )


def test_encode_preference_labels_only_the_final_reply(tok):
    prompt = [
        {"role": "user", "content": "ab?"},
        {"role": "assistant", "content": "cd."},  # an earlier turn: context in DPO
        {"role": "user", "content": "ef?"},
    ]
    pair = encode_preference(prompt, "gh.", "ij", tok)
    for ex, reply in ((pair.chosen, "gh."), (pair.rejected, "ij")):
        full = encode_conversation([*prompt, {"role": "assistant", "content": reply}], tok)
        assert ex.ids == full.ids
        targets = [i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != -100]
        assert tok.decode(targets) == reply + "\n<|endoftext|>"
        assert sum(lab != -100 for lab in full.labels) > len(targets)  # sft counts "cd." too
    # the two sequences share the prompt's ids exactly
    n = len(pair.chosen.ids) - len("gh.\n") - 1
    assert pair.chosen.ids[:n] == pair.rejected.ids[:n]


def test_encode_preference_chatml_and_string_prompt(tok):
    tok2 = CharTokenizer.train("abcdefghijmnorstuyQ \n?.", ["<|im_start|>", "<|im_end|>"])
    pair = encode_preference("ab?", "cd", "ef", tok2, "chatml", default_system=None)
    targets = [i for i, lab in zip(pair.chosen.ids, pair.chosen.labels, strict=True) if lab >= 0]
    assert tok2.decode(targets) == "cd<|im_end|>"


def test_encode_preference_truncation(tok):
    pair = encode_preference("ab?", "cdefgh", "ij", tok, max_length=14)
    assert len(pair.chosen) == 14 and pair.chosen.truncated > 0
    assert len(pair.rejected) < 14 and pair.rejected.truncated == 0
    with pytest.raises(ValueError, match="max_length"):
        encode_preference("ab?", "cdefgh", "ij", tok, max_length=14, truncation="error")
    with pytest.raises(ValueError, match="prompt alone"):
        encode_preference("abcdefghij?", "cd", "ef", tok, max_length=8)
    examples = [{"prompt": "ab?", "chosen": "cdefgh", "rejected": "ij"}] + [
        {"prompt": "a?", "chosen": "b", "rejected": "c"}
    ]
    assert len(encode_preferences(examples, tok, max_length=14)) == 1  # "drop"
    assert len(encode_preferences(examples, tok, max_length=14, truncation="right")) == 2


def test_encode_preference_rejects_bad_input(tok):
    with pytest.raises(ValueError, match="assistant"):
        encode_preference([{"role": "assistant", "content": "a"}], "b", "c", tok)
    with pytest.raises(TypeError, match="chosen"):
        encode_preference("a", 1, "c", tok)
    with pytest.raises(ValueError, match="template"):
        encode_preference("a", "b", "c", tok, template="alpaca")
    with pytest.raises(ValueError, match="examples\\[0\\]"):
        encode_preferences([{"prompt": "a", "chosen": "b"}], tok)
    with pytest.raises(ValueError, match="no response token"):
        PreferencePair(SFTExample([1, 2], [-100, -100]), SFTExample([1, 2], [-100, 2]))


# ---------------------------------------------------------------- batches and training


def toy_pairs(n: int, seed: int, like: int = 8, swap: bool = False) -> list[PreferencePair]:
    """Prompt: 3 tokens from 1..7; replies: 4 tokens from 1..7, the chosen one with the
    token ``like`` put in at a random place. ``swap``: the rejected one has it instead."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(1, 8, (3,), generator=g).tolist()
        good = torch.randint(1, 8, (4,), generator=g).tolist()
        good[int(torch.randint(0, 4, (1,), generator=g))] = like
        bad = torch.randint(1, 8, (4,), generator=g).tolist()
        if swap:
            good, bad = bad, good
        pairs.append(
            PreferencePair(
                SFTExample(prompt + good, [-100] * 3 + good),
                SFTExample(prompt + bad, [-100] * 3 + bad),
            )
        )
    return pairs


def test_pad_pairs_and_batches_carry_cached_reference_logprobs():
    pairs = toy_pairs(6, 0)
    batch = pad_pairs(pairs[:2], pad_id=0)
    assert batch["ids"].shape == (4, 7)
    assert batch["ids"][0].tolist() == pairs[0].chosen.ids
    assert batch["ids"][2].tolist() == pairs[0].rejected.ids
    ref_model = tiny_gpt(seed=1)
    ref = reference_logprobs(ref_model, pairs, pad_id=0)
    assert ref.shape == (6, 2)
    calls = []
    ref_model.register_forward_hook(lambda *_: calls.append(1))
    get_batch = dpo_batch_fn(pairs, pairs[:3], 2, 0, ref_model)
    n_calls = len(calls)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        b = get_batch("train", g)
        rows = [
            pairs.index(next(p for p in pairs if p.chosen.ids == r))
            for r in [b["ids"][k][b["attention_mask"][k] == 1].tolist() for k in range(2)]
        ]
        assert torch.allclose(b["ref_logps"], torch.cat([ref[rows, 0], ref[rows, 1]]))
    assert len(calls) == n_calls  # the reference ran when the batch function was built only
    v1, v2 = get_batch("val"), get_batch("val")
    assert torch.equal(v1["ids"], v2["ids"])
    given_refs = {"train": ref, "val": ref[:3]}
    assert torch.equal(
        dpo_batch_fn(pairs, pairs[:3], 2, 0, given_refs)("val")["ref_logps"], v1["ref_logps"]
    )
    with pytest.raises(ValueError, match="batch_size"):
        dpo_batch_fn(pairs, pairs[:3], 4, 0, given_refs)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        dpo_batch_fn(pairs, pairs[:3], 2, 0, {"train": ref, "val": ref})


def accuracy(model, reference, pairs) -> float:
    """Share of pairs whose implicit reward ranks the chosen reply first."""
    pol, ref = pair_logprobs(model, pairs, 0), pair_logprobs(reference, pairs, 0)
    return preference_metrics(pol[:, 0] - ref[:, 0], pol[:, 1] - ref[:, 1])["rewards/accuracy"]


def dpo_train(pairs, steps=60, beta=0.5, loss_type="sigmoid"):
    reference = tiny_gpt(seed=3)
    policy = copy.deepcopy(reference)
    get_batch = dpo_batch_fn(pairs, pairs[:16], 16, 0, reference)
    config = TrainConfig(
        max_steps=steps, lr=3e-3, warmup_steps=0, eval_interval=0, progress=False, device="cpu"
    )
    history = train(policy, config, get_batch, dpo_loss_fn(beta, loss_type=loss_type))
    return policy, reference, history


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_toy_dpo_recovers_the_preference(loss_type):
    torch.set_num_threads(1)
    train_pairs, held_out = toy_pairs(256, 0), toy_pairs(200, 1)
    policy, reference, history = dpo_train(train_pairs, loss_type=loss_type)
    assert accuracy(reference, reference, held_out) == 0.5  # all rewards are 0: ties
    assert accuracy(policy, reference, held_out) > 0.9
    if loss_type == "sigmoid":
        assert history.train_loss[0] == pytest.approx(math.log(2), abs=1e-5)
        assert history.train_loss[-1] < 0.3
    m = evaluate_pairs(policy, held_out, 0, reference_logprobs(reference, held_out, 0), 0.5)
    assert m["rewards/margin"] > 0 and m["rewards/chosen"] > m["rewards/rejected"]
    assert m["rewards/accuracy"] == pytest.approx(accuracy(policy, reference, held_out))


def test_toy_dpo_with_swapped_labels_learns_the_opposite():
    torch.set_num_threads(1)
    policy, reference, _ = dpo_train(toy_pairs(256, 0, swap=True))
    assert accuracy(policy, reference, toy_pairs(200, 1)) < 0.1


def test_dpo_loss_fn_validates_once():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss_fn(loss_type="kto")
    assert dpo.LOSS_TYPES == ("sigmoid", "ipo")


# ------------------------------------------ top blocks on cached trunk states (hh_dpo's path)


def tiny_llama(seed: int = 0):
    from llmkit.llama import Llama, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=9, block_size=16, n_layer=4, n_head=4, n_kv_head=2, d_model=16, hidden=24
    )
    return Llama(config).eval()


@pytest.mark.parametrize("n_frozen", [0, 2, 3])
def test_states_logprobs_match_the_whole_model(n_frozen):
    model = tiny_llama()
    pairs = toy_pairs(5, 0)
    batch = pad_pairs(pairs, pad_id=0)
    top = dpo.TopBlocks(model, n_frozen)
    with torch.no_grad():
        want = sequence_logprobs(model, batch["ids"], batch["labels"])
        got = dpo.states_logprobs(top, top.trunk(batch["ids"]), batch["labels"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    cached = dpo.cache_pairs(top, pairs, batch_size=2)
    torch.testing.assert_close(cached.ref_logps, reference_logprobs(model, pairs, 0))
    b = cached.batch([3, 1])
    assert b["hidden"].shape[:2] == b["labels"].shape and b["ref_logps"].shape == (4,)
    assert b["labels"][0, : len(pairs[3].chosen)].tolist() == pairs[3].chosen.labels


def test_top_blocks_own_only_the_top():
    model = tiny_llama()
    top = dpo.TopBlocks(model, 3)
    owned = {id(p) for p in top.parameters()}
    assert owned == {id(p) for m in (model.blocks[3], model.norm_f) for p in m.parameters()}
    assert id(model.wte.weight) not in owned
    with pytest.raises(ValueError, match="n_frozen"):
        dpo.TopBlocks(model, 4)
    with pytest.raises(TypeError, match="Llama"):
        dpo.TopBlocks(tiny_gpt(), 1)


def test_cached_dpo_trains_the_top_and_matches_the_full_evaluation():
    torch.set_num_threads(1)
    model = tiny_llama(seed=3)
    for p in model.parameters():
        p.requires_grad_(False)
    top = dpo.TopBlocks(model, 2)
    for p in top.parameters():
        p.requires_grad_(True)
    frozen = copy.deepcopy(model)
    train_pairs, held_out = toy_pairs(128, 0), toy_pairs(64, 1)
    tr, va = dpo.cache_pairs(top, train_pairs), dpo.cache_pairs(top, held_out)
    before = dpo.evaluate_cached(top, va, beta=0.5)
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert before["rewards/accuracy"] == 0.5 and before["rewards/margin"] == 0.0
    config = TrainConfig(
        max_steps=40, lr=3e-3, warmup_steps=0, eval_interval=0, progress=False, device="cpu"
    )
    train(top, config, dpo.cached_batch_fn(tr, va, 16), dpo.cached_dpo_loss_fn(0.5))
    after = dpo.evaluate_cached(top, va, beta=0.5)
    assert after["rewards/accuracy"] > 0.8 and after["loss"] < before["loss"]
    # the same numbers from the whole (partly trained) model, without any cache
    full = evaluate_pairs(model, held_out, 0, reference_logprobs(frozen, held_out, 0), 0.5)
    for key in after:
        assert after[key] == pytest.approx(full[key], rel=1e-4, abs=1e-4)
    assert torch.equal(model.wte.weight, frozen.wte.weight)  # the embedding stayed frozen
    assert torch.equal(model.blocks[0].attn.q_proj.weight, frozen.blocks[0].attn.q_proj.weight)


def test_last_exchange():
    from llmkit.reward import preference_pair

    h, a = "\n\nHuman: ", "\n\nAssistant: "
    pair = preference_pair(h + "Hi" + a + "Hello" + h + "Why?" + a + "Because.", h + "Hi" + a
                           + "Hello" + h + "Why?" + a + "No.")  # fmt: skip
    assert dpo.last_exchange(pair) == {"prompt": "Why?", "chosen": "Because.", "rejected": "No."}
    same = preference_pair(h + "Hi" + a + "Yes", h + "Hi" + a + "Yes")
    assert dpo.last_exchange(same) is None
    earlier = preference_pair(h + "Hi" + a + "A" + h + "B" + a + "C", h + "Hi" + a + "X")
    assert dpo.last_exchange(earlier) is None
    with pytest.raises(TypeError, match="PreferencePair"):
        dpo.last_exchange(("a", "b", "c"))


def test_hh_dpo_recipes():
    assert set(dpo.HH_DPO_RECIPES) == {"smoke", "book", "full"}
    for r in dpo.HH_DPO_RECIPES.values():
        assert 0 <= r["n_frozen"] < 30 and r["batch_size"] <= min(r["n_train"], r["n_val"])
        assert r["max_tokens"] <= 256
    with pytest.raises(ValueError, match="profile"):
        dpo.hh_dpo_recipe("fast")


def test_hh_dpo_smoke_path_trains_once_then_loads(monkeypatch, tmp_path):
    """hh_dpo end to end on the real pairs, with a character tokenizer and a tiny Llama in
    SmolLM2's place (the real one costs a minute: the notebooks run it in the smoke profile)."""
    from llmkit import pretrained, reward
    from llmkit.chat import CHATML_DEFAULT_SYSTEM
    from llmkit.llama import Llama, LlamaConfig

    torch.set_num_threads(1)
    pairs = reward.load_pairs("helpful-base")
    text = "".join(p.prefix + p.chosen + p.rejected for s in pairs.values() for p in s)
    tokenizer = CharTokenizer.train(
        text + CHATML_DEFAULT_SYSTEM + "systemuserassistant\n", ["<|im_start|>", "<|im_end|>"]
    )
    calls = []

    def fake_smollm2(**_):
        calls.append(1)
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=tokenizer.vocab_size, block_size=128, n_layer=3, n_head=2, d_model=8
        )
        return Llama(cfg).eval(), tokenizer, {}

    monkeypatch.setattr(pretrained, "smollm2", fake_smollm2)
    recipe = dict(
        dpo.HH_DPO_RECIPES["smoke"], n_frozen=1, n_train=4, n_val=4, steps=2, max_tokens=600
    )
    monkeypatch.setitem(dpo.HH_DPO_RECIPES, "smoke", recipe)
    record = dpo.hh_dpo("smoke", cache_dir=str(tmp_path), progress=False)
    assert record["before"]["rewards/margin"] == 0.0
    assert record["history"]["eval_steps"] == [0, 2]
    assert record["after"] == {k: record["history"][k][-1] for k in record["after"]}
    assert len(record["history"]["train_loss"]) == 2
    assert record["history"]["train_loss"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert record["mean_tokens"] <= 600
    again = dpo.hh_dpo("smoke", cache_dir=str(tmp_path), progress=False)
    assert len(calls) == 1 and again["after"] == record["after"]


# ------------------------------------------------------------- the sentiment task's frontier


def test_sentiment_pairs_choose_the_higher_score_and_kl_is_zero_at_the_reference():
    from llmkit import rl

    torch.set_num_threads(1)
    model = tiny_gpt(seed=2)
    prompts = [[1, 2, 3], [4, 5], [6], [7, 1, 2]]

    def score(p, r):  # a reward that likes the token 8
        return torch.tensor([float(sum(t == 8 for t in resp)) for resp in r])

    config = rl.PPOConfig(batch_size=1, minibatch_size=1, max_new_tokens=5)
    pairs, stats = dpo.sentiment_pairs(model, prompts, score, config, torch.Generator())
    assert stats["pairs"] + stats["ties"] == len(prompts) and len(pairs) == stats["pairs"]
    for pair in pairs:
        c = [t for t, y in zip(pair.chosen.ids, pair.chosen.labels, strict=True) if y != -100]
        r = [t for t, y in zip(pair.rejected.ids, pair.rejected.labels, strict=True) if y != -100]
        assert c.count(8) > r.count(8)
        n_prompt = len(pair.chosen.ids) - len(c)
        assert pair.chosen.ids[:n_prompt] == pair.rejected.ids[:n_prompt]
    same = dpo.reward_and_kl(model, copy.deepcopy(model), prompts, score, config, seed=3)
    assert same["kl"] == pytest.approx(0.0, abs=1e-5) and same["n"] == 4
    again = dpo.reward_and_kl(model, copy.deepcopy(model), prompts, score, config, seed=3)
    assert again == same  # the held-out samples are fixed by the seed


def test_cache_pairs_keeps_the_order_of_pairs_of_different_lengths():
    model = tiny_llama(seed=1)
    top = dpo.TopBlocks(model, 2)
    pairs = []
    for k, p in enumerate(toy_pairs(7, 4)):
        cut = 7 - (k % 3)  # lengths 7, 6, 5, 7, ...: the sort reorders them
        pairs.append(
            PreferencePair(
                SFTExample(p.chosen.ids[:cut], p.chosen.labels[:cut]),
                SFTExample(p.rejected.ids[: 12 - cut], p.rejected.labels[: 12 - cut]),
            )
        )
    cached = dpo.cache_pairs(top, pairs, batch_size=3)
    torch.testing.assert_close(cached.ref_logps, reference_logprobs(model, pairs, 0))
    before = dpo.evaluate_cached(top, cached, batch_size=3)  # the same batches: exact zeros
    assert before["rewards/margin"] == 0.0 and before["rewards/accuracy"] == 0.5
    for (c, r), p in zip(cached.states, pairs, strict=True):
        assert c.shape[0] == len(p.chosen) and r.shape[0] == len(p.rejected)
        torch.testing.assert_close(c, top.trunk(torch.tensor([p.chosen.ids]))[0])
