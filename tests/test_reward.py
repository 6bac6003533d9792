"""llmkit.reward: the Bradley-Terry loss and pairwise accuracy, HH-RLHF pair extraction,
pooling of encoders and decoders (padding-aware), encoding and a tiny end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit import reward
from llmkit.bert import BertConfig, BertModel
from llmkit.gpt import GPT, GPTConfig
from llmkit.llama import Llama, LlamaConfig
from llmkit.metrics import bootstrap_interval
from llmkit.reward import PreferencePair, RewardModel, preference_pair
from llmkit.train import TrainConfig, train

H, A = "\n\nHuman:", "\n\nAssistant:"
V = 23

# --------------------------------------------------------------------- loss and accuracy


def test_loss_is_ln2_at_equal_rewards():
    r = torch.tensor([0.0, 1.5, -3.0, 100.0])
    assert reward.bradley_terry_loss(r, r.clone()).item() == pytest.approx(math.log(2))


def test_loss_matches_binary_cross_entropy_and_the_formula():
    g = torch.Generator().manual_seed(0)
    rc, rr = (
        torch.randn(50, generator=g, dtype=torch.float64) * 5,
        torch.randn(50, dtype=torch.float64),
    )
    ours = reward.bradley_terry_loss(rc, rr)
    bce = F.binary_cross_entropy_with_logits(rc - rr, torch.ones(50, dtype=torch.float64))
    by_hand = torch.log1p(torch.exp(-(rc - rr))).mean()
    torch.testing.assert_close(ours, bce)
    torch.testing.assert_close(ours, by_hand)


def test_gradient_raises_chosen_and_lowers_rejected():
    rc = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    rr = torch.tensor([0.5, -2.0, 2.0], requires_grad=True)
    reward.bradley_terry_loss(rc, rr).backward()
    assert (rc.grad < 0).all()  # gradient descent raises the chosen rewards
    assert (rr.grad > 0).all()  # and lowers the rejected ones
    # d/d r_c of -log sigmoid(r_c - r_r) / n = -sigmoid(r_r - r_c) / n
    expected = -torch.sigmoid(rr.detach() - rc.detach()) / 3
    torch.testing.assert_close(rc.grad, expected)
    torch.testing.assert_close(rr.grad, -expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_is_stable_at_margins_of_100(dtype):
    big = torch.tensor([100.0], dtype=dtype, requires_grad=True)
    zero = torch.tensor([0.0], dtype=dtype)
    won = reward.bradley_terry_loss(big, zero)
    lost = reward.bradley_terry_loss(zero, big)
    assert torch.isfinite(won) and torch.isfinite(lost)
    assert won.item() == pytest.approx(0.0, abs=1e-30)
    assert lost.item() == pytest.approx(100.0, rel=1e-6)  # -log sigmoid(-100) = 100 + e^-100
    lost.backward()
    assert big.grad.item() == pytest.approx(1.0)
    # what the stable form avoids: log(sigmoid(-100)) is -inf in float32
    assert torch.isinf(torch.log(torch.sigmoid(torch.tensor(-100.0))))


def test_accuracy_counts_ties_as_one_half():
    rc = torch.tensor([2.0, 1.0, 0.0, 5.0])
    rr = torch.tensor([1.0, 1.0, 1.0, -5.0])
    assert reward.pairwise_accuracy(rc, rr) == pytest.approx(2.5 / 4)
    assert reward.pair_outcomes(rc, rr).tolist() == [1.0, 0.5, 0.0, 1.0]
    const = torch.zeros(7)
    assert reward.pairwise_accuracy(const, const) == 0.5


floats = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(floats, floats), min_size=1, max_size=20), floats)
def test_loss_and_accuracy_invariants(pairs, shift):
    rc = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    rr = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    loss = reward.bradley_terry_loss(rc, rr)
    # depends on the difference only
    torch.testing.assert_close(reward.bradley_terry_loss(rc + shift, rr + shift), loss)
    # -log s(x) - (-log s(-x)) = -x
    torch.testing.assert_close(loss - reward.bradley_terry_loss(rr, rc), -(rc - rr).mean())
    assert loss.item() >= 0
    acc = reward.pairwise_accuracy(rc, rr)
    assert acc + reward.pairwise_accuracy(rr, rc) == pytest.approx(1.0)


def test_loss_and_accuracy_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        reward.bradley_terry_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="r_chosen"):
        reward.bradley_terry_loss([1.0], torch.zeros(1))
    with pytest.raises(TypeError, match="floating"):
        reward.pairwise_accuracy(torch.zeros(2, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="at least one"):
        reward.pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_bootstrap_interval():
    values = [1.0] * 60 + [0.0] * 40
    low, high = bootstrap_interval(values, n=2000, seed=0)
    assert low < 0.6 < high
    # the normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 100) = 0.6 +- 0.096
    assert low == pytest.approx(0.504, abs=0.03) and high == pytest.approx(0.696, abs=0.03)
    assert bootstrap_interval(values, n=500, seed=3) == bootstrap_interval(values, n=500, seed=3)
    assert bootstrap_interval([1.0, 1.0], n=10) == (1.0, 1.0)
    assert bootstrap_interval(values, n=0) == (0.6, 0.6)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(values, level=1.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])


# ------------------------------------------------------------------------ pair extraction


def test_the_usual_pair_splits_before_the_last_answer():
    prompt = f"{H} What is 2 + 2?{A} Four.{H} And 3 + 3?"
    p = preference_pair(prompt + f"{A} Six.", prompt + f"{A} Sixty-six.")
    assert p == PreferencePair(prompt, f"{A} Six.", f"{A} Sixty-six.")
    assert p.differs_in_last_answer
    assert p.chosen_text == prompt + f"{A} Six."


def test_answers_with_the_same_first_words_split_at_the_turn_boundary():
    prompt = f"{H} Hi"
    p = preference_pair(prompt + f"{A} I think so.", prompt + f"{A} I think not.")
    assert p.prefix == prompt and p.chosen == f"{A} I think so."


def test_identical_transcripts_keep_the_last_turn_in_each_ending():
    t = f"{H} Hi{A} Hello"
    assert preference_pair(t, t) == PreferencePair(f"{H} Hi", f"{A} Hello", f"{A} Hello")
    assert preference_pair(f"{H} Hi", f"{H} Hi") == PreferencePair("", f"{H} Hi", f"{H} Hi")


def test_differing_earlier_turns_end_the_prefix_there():
    c = f"{H} Hi{A} Hello{H} Tell me a joke{A} Knock knock."
    r = f"{H} Hi{A} Hey{H} Tell me a joke{A} No."
    p = preference_pair(c, r)
    assert p.prefix == f"{H} Hi"
    assert p.chosen == f"{A} Hello{H} Tell me a joke{A} Knock knock."
    assert not p.differs_in_last_answer
    q = preference_pair(f"{H} Hi{A} Yes{H} Why?{A} Because.", f"{H} Hi{A} Yes")
    assert q == PreferencePair(f"{H} Hi", f"{A} Yes{H} Why?{A} Because.", f"{A} Yes")


def test_empty_answers_are_turns():
    p = preference_pair(f"{H} Hi{A}", f"{H} Hi{A} Hello")
    assert p == PreferencePair(f"{H} Hi", A, f"{A} Hello")
    assert p.differs_in_last_answer
    assert reward.final_answer(p.chosen_text) == ""
    assert preference_pair("", f"{H} Hi") == PreferencePair("", "", f"{H} Hi")


def test_text_before_the_first_marker_is_a_turn():
    assert reward.split_turns(f"Intro{H} a{A} b") == ["Intro", f"{H} a", f"{A} b"]
    p = preference_pair(f"Intro{H} a{A} b", f"Intro{H} a{A} c")
    assert p.prefix == f"Intro{H} a"


turn_st = st.tuples(st.sampled_from([H, A]), st.text(st.sampled_from("ab \n:HA"), max_size=6)).map(
    lambda t: t[0] + t[1]
)


@settings(max_examples=100, deadline=None)
@given(st.lists(turn_st, max_size=4), st.lists(turn_st, max_size=3), st.lists(turn_st, max_size=3))
def test_prefix_plus_ending_is_the_transcript(shared, tail_c, tail_r):
    c, r = "".join(shared + tail_c), "".join(shared + tail_r)
    p = preference_pair(c, r)
    assert p.chosen_text == c and p.rejected_text == r
    assert "".join(reward.split_turns(c)) == c
    # the prefix ends at a turn boundary, and is a run of whole turns of both
    turns = reward.split_turns(c)
    assert p.prefix in {"".join(turns[:k]) for k in range(len(turns) + 1)}
    # each ending keeps at least one turn when the transcript has one
    assert (p.chosen != "") == (c != "") and (p.rejected != "") == (r != "")
    if p.chosen and p.rejected:  # the first turns of the endings differ, or it is the last
        first_c, first_r = reward.split_turns(p.chosen)[0], reward.split_turns(p.rejected)[0]
        assert (
            first_c != first_r
            or len(reward.split_turns(p.chosen)) == 1
            or len(reward.split_turns(p.rejected)) == 1
        )


def test_final_answer_and_the_length_baseline():
    assert reward.final_answer(f"{H} Hi{A}  Two words. ") == "Two words."
    assert reward.final_answer(f"{H} Hi") == ""
    pairs = [
        preference_pair(f"{H} q{A} a b c", f"{H} q{A} a"),  # longer chosen: 1
        preference_pair(f"{H} q{A} a", f"{H} q{A} a b"),  # shorter chosen: 0
        preference_pair(f"{H} q{A} xyz", f"{H} q{A} abc"),  # tie: 1/2
    ]
    assert reward.length_outcomes(pairs).tolist() == [1.0, 0.0, 0.5]
    assert reward.length_outcomes(pairs, unit="chars").tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="unit"):
        reward.length_outcomes(pairs, unit="tokens")


def test_extraction_rejects_bad_input():
    with pytest.raises(TypeError, match="chosen"):
        preference_pair(None, "x")
    with pytest.raises(TypeError, match="rejected"):
        preference_pair("x", 3)


@pytest.mark.parametrize(
    ("subset", "sizes", "last_answer_only", "longer_wins"),
    [("helpful-base", (2118, 236), 2345, 1414.0), ("harmless-base", (2080, 232), 2307, 1015.5)],
)
def test_hh_rlhf_pairs(subset, sizes, last_answer_only, longer_wins):
    """Measured on the mirror's test files (the numbers of issue 17): the pairs that share
    every turn but the last answer, and the length baseline's wins (ties = 1/2) in words."""
    pairs = reward.load_pairs(subset)
    assert (len(pairs["train"]), len(pairs["test"])) == sizes
    every = pairs["train"] + pairs["test"]
    assert sum(p.differs_in_last_answer for p in every) == last_answer_only
    assert reward.length_outcomes(every).sum().item() == longer_wins


# ------------------------------------------------------------------------------- pooling


def tiny_decoder(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig(V, 24, n_layer=2, n_head=2, d_model=16))
    else:
        model = Llama(LlamaConfig(V, 24, n_layer=2, n_head=4, d_model=16, n_kv_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return model.double()


def padded(rows: list[list[int]], side: str, pad_id: int = 0):
    examples = [reward.EncodedPair(r, r) for r in rows]
    b = reward.pair_collate(examples, pad_id, side)
    return b["chosen_ids"], b["chosen_mask"]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@settings(max_examples=15, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=8), min_size=1, max_size=4)
)
def test_last_token_pooling_ignores_padding(kind, rows):
    model = RewardModel(tiny_decoder(kind), pooling="last").double().eval()
    with torch.no_grad():
        model.head.weight.normal_()
        alone = torch.cat([model(torch.tensor([r])) for r in rows])
        for side in ("right", "left"):
            ids, mask = padded(rows, side, pad_id=V - 1)
            torch.testing.assert_close(model(ids, mask), alone)


def test_last_token_pooling_reads_the_last_hidden_state():
    decoder = tiny_decoder("gpt")
    model = RewardModel(decoder, pooling="last").double().eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        hidden = decoder.hidden_states(ids)
        torch.testing.assert_close(decoder(ids), decoder.lm_head(hidden))
        torch.testing.assert_close(model(ids), model.head(hidden[:, -1]).squeeze(-1))


def tiny_bert(pooler: bool = True) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, hidden_size=16, n_layers=2, n_heads=2, intermediate_size=32,
                     max_position=16, dropout=0.0)  # fmt: skip
    return BertModel(cfg, add_pooler=pooler).double().eval()


@pytest.mark.parametrize("pooler", [True, False])
def test_cls_pooling_on_a_tiny_bert(pooler):
    bert = tiny_bert(pooler)
    model = RewardModel(bert, pooling="cls").double().eval()
    rows = [[1, 5, 6, 7, 2], [1, 8, 2], [1, 9, 9, 9, 9, 9, 2]]
    with torch.no_grad():
        ids, mask = padded(rows, "right")
        got = model(ids, mask)
        for k, r in enumerate(rows):
            hidden = bert(torch.tensor([r]))
            cls = bert.pool(hidden) if pooler else hidden[:, 0]
            torch.testing.assert_close(got[k : k + 1], model.head(cls).squeeze(-1))
        with pytest.raises(ValueError, match="pad on the right"):
            model(*padded(rows, "left"))


def test_mean_pooling_averages_the_real_tokens():
    bert = tiny_bert(False)
    model = RewardModel(bert, pooling="mean").double().eval()
    rows = [[1, 5, 6, 7, 2], [1, 8, 2], [1, 9, 9, 9, 9, 9, 2]]
    with torch.no_grad():
        got = model(*padded(rows, "right"))
        for k, r in enumerate(rows):
            mean = bert(torch.tensor([r])).mean(dim=1)  # (1, width), no padding
            torch.testing.assert_close(got[k : k + 1], model.head(mean).squeeze(-1))


def test_reward_model_validates_its_arguments():
    with pytest.raises(ValueError, match="pooling"):
        RewardModel(tiny_bert(), pooling="max")
    with pytest.raises(TypeError, match="pooling='cls' needs an encoder"):
        RewardModel(tiny_decoder("gpt"), pooling="cls")
    with pytest.raises(TypeError, match="pooling='mean' needs an encoder"):
        RewardModel(tiny_decoder("gpt"), pooling="mean")
    with pytest.raises(TypeError, match="pooling='last' needs a decoder"):
        RewardModel(tiny_bert(), pooling="last")
    model = RewardModel(tiny_decoder("gpt"), pooling="last").double()
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="shape"):
        model(ids[0])
    with pytest.raises(TypeError, match="integers"):
        model(ids.double())
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(ids, torch.ones(1, 2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        model(ids, torch.full((1, 3), 2))
    with pytest.raises(ValueError, match="real token in every row"):
        model(ids, torch.zeros(1, 3))


# ---------------------------------------------------------------------- encoding, batches


class WordTokenizer:
    """Whitespace words -> ids 3.. (a made-up vocabulary), [CLS] = 1 and [SEP] = 2 if bert."""

    def __init__(self, bert: bool = False):
        self.bert, self.vocab = bert, {}

    def encode(self, text):
        ids = [self.vocab.setdefault(w, 3 + len(self.vocab)) for w in text.split()]
        return [1, *ids, 2] if self.bert else ids

    def token_to_id(self, token):
        return {"[CLS]": 1, "[SEP]": 2}.get(token) if self.bert else None


def test_encode_text_truncates_on_the_left():
    tok = WordTokenizer()
    ids, cut = reward.encode_text("a b c d e", tok, max_length=3)
    assert (ids, cut) == ([5, 6, 7], 2)
    ids, cut = reward.encode_text("a b", tok, max_length=3, end_id=0)
    assert (ids, cut) == ([3, 4, 0], 0)
    bert = WordTokenizer(bert=True)
    ids, cut = reward.encode_text("a b c d e", bert, max_length=4)  # [CLS] a b c d e [SEP]
    assert (ids, cut) == ([1, 6, 7, 2], 3)
    with pytest.raises(ValueError, match="max_length"):
        reward.encode_text("a b c", bert, max_length=1)


def test_pair_collate_pads_both_sides_to_one_width():
    ex = [reward.EncodedPair([5, 6, 7], [5]), reward.EncodedPair([8], [9, 9])]
    b = reward.pair_collate(ex, pad_id=0)
    assert b["chosen_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["rejected_ids"].tolist() == [[5, 0, 0], [9, 9, 0]]
    assert b["rejected_mask"].tolist() == [[True, False, False], [True, True, False]]
    left = reward.pair_collate(ex, pad_id=0, padding="left")
    assert left["chosen_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    with pytest.raises(ValueError, match="padding"):
        reward.pair_collate(ex, 0, padding="middle")


# ------------------------------------------------------------------ end-to-end training

MARK = 1  # the token people "prefer"
STEPS = 30


def synthetic_pairs(n: int, seed: int, swap: bool = False) -> list[reward.EncodedPair]:
    """Random token rows; the chosen row holds MARK somewhere, the rejected one is the same
    row without it (the MARK replaced by another token)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = int(torch.randint(4, 10, (1,), generator=g))
        row = torch.randint(2, V, (t,), generator=g).tolist()
        with_mark = list(row)
        with_mark[int(torch.randint(0, t, (1,), generator=g))] = MARK
        c, r = (row, with_mark) if swap else (with_mark, row)
        out.append(reward.EncodedPair(c, r))
    return out


def train_tiny(train_pairs) -> RewardModel:
    torch.manual_seed(0)
    decoder = GPT(GPTConfig(V, 16, n_layer=1, n_head=2, d_model=32, dropout=0.0))
    model = RewardModel(decoder, pooling="last")
    val = synthetic_pairs(64, seed=2)
    get_batch = reward.pair_batch_fn(train_pairs, val, batch_size=32, pad_id=0, padding="left")
    cfg = TrainConfig(max_steps=STEPS, lr=3e-3, warmup_steps=10, eval_interval=0,
                      progress=False, device="cpu", seed=0)  # fmt: skip
    history = train(model, cfg, get_batch, loss_fn=reward.pair_loss)
    assert len(history.train_loss) == STEPS
    return model


def test_tiny_training_learns_the_preference_and_not_its_opposite():
    test = synthetic_pairs(200, seed=3)
    model = train_tiny(synthetic_pairs(512, seed=1))
    result = reward.evaluate_pairs(model, test, pad_id=0, padding="right", n_bootstrap=200)
    assert result["accuracy"] > 0.9
    assert result["low"] <= result["accuracy"] <= result["high"] and result["n"] == 200
    swapped = train_tiny(synthetic_pairs(512, seed=1, swap=True))
    assert reward.evaluate_pairs(swapped, test, pad_id=0)["accuracy"] < 0.2


def test_pair_loss_is_the_loss_of_the_rewards():
    model = RewardModel(tiny_decoder("llama"), pooling="last").double().eval()
    ex = synthetic_pairs(5, seed=4)
    batch = reward.pair_collate(ex, pad_id=0)
    rc, rr = reward.score_pairs(model.float(), ex, pad_id=0, batch_size=2)
    loss = reward.pair_loss(model, batch)
    torch.testing.assert_close(loss, reward.bradley_terry_loss(rc, rr), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="pair_collate"):
        reward.pair_loss(model, (batch["chosen_ids"],))
