import sys

sys.path.insert(0, "/work/main/.notes")
from nbgen import build

CHECK = "# NBVAL_CHECK_OUTPUT\n"
cells = []
md = lambda s, **m: cells.append(("md", s, m))
code = lambda s, **m: cells.append(("code", s, m))

md(r"""
# Decoding strategies

A trained language model does not write text. At every step it gives a probability
distribution over the next token, and something else has to pick one token, append it,
and ask again. That something is the *decoding strategy*, and it changes the text as
much as the model does: the same weights can produce a loop of one phrase or plausible
Shakespeare depending on how the next token is chosen.

This chapter takes the character-level GPT trained in chapter 3 and decodes with it in
every standard way:

1. **search** for the most probable text: greedy decoding, exhaustive search on a short
   horizon, and beam search with its pruning and length normalisation;
2. **sampling** from the distribution: pure sampling and its long tail, top-k, top-p
   (nucleus) sampling and temperature;
3. a **comparison** of the strategies on the same prompts: how likely the text is under
   the model, how diverse it is, and how much it repeats itself.

Everything below uses `llmkit.decoding`, whose filters match those of Hugging Face
`transformers` exactly (its tests compare them); the lab asks you to write the filters
and the pruning step of beam search yourself.
""")

code(r"""
import math
import platform
import re
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from llmkit import data, profile
from llmkit.decoding import (
    beam_search,
    exhaustive_search,
    greedy,
    sequence_logprob,
    top_p_filter,
)
from llmkit.pretrained import char_gpt
from llmkit.widgets import decoding_explorer, plot_settings_grid

SEED = 1337
torch.manual_seed(SEED)
started = time.perf_counter()

# Every size in this notebook is read here, once.
cfg = profile.choose(
    smoke=dict(search_prompts=10, horizon=2, beam_tokens=20, tail_windows=4,
               loop_tokens=60, n_prompts=3, prompt_chars=12, n_new=20, n_samples=1),
    book=dict(search_prompts=100, horizon=2, beam_tokens=60, tail_windows=32,
              loop_tokens=500, n_prompts=12, prompt_chars=28, n_new=200, n_samples=3),
    full=dict(search_prompts=100, horizon=2, beam_tokens=60, tail_windows=32,
              loop_tokens=600, n_prompts=12, prompt_chars=56, n_new=200, n_samples=3),
)
print(f"profile: {profile.current()}  {cfg}")
""")

md(r"""
## The model

`llmkit.pretrained.char_gpt` returns the chapter-3 model for the current profile: it
trains it on first use (a few minutes in the `book` profile) and loads it from a cache
afterwards. Its vocabulary is the 65 characters of tinyshakespeare, so here a token is
one character.
""")

code(r"""
model, tok, info = char_gpt()
model.eval()
V, block = tok.vocab_size, model.config.block_size
val_text = data.load_tinyshakespeare()["val"]
val_ids = torch.tensor(tok.encode(val_text))
print(f"{info['n_parameters']:,} parameters, context of {block} characters, "
      f"validation loss {info['val_loss']:.3f} nats per character")
""")

code(r"""
@torch.no_grad()
def next_token_logprobs(text: str) -> torch.Tensor:
    # log p(next character | text), (V,), from the last `block` characters
    ids = torch.tensor([tok.encode(text)])[:, -block:]
    return F.log_softmax(model(ids)[0, -1], dim=-1)


@torch.no_grad()
def token_logprobs(ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    # log p(ids[t] | the last `block` tokens before t) for t >= prompt_len: what the model
    # saw when it generated ids[t]
    ids = ids.flatten()
    head = F.log_softmax(model(ids[None, :block])[0], dim=-1)  # position i predicts i + 1
    rows = [head[t - 1, ids[t]] for t in range(prompt_len, min(len(ids), block + 1))]
    late = torch.tensor(range(max(prompt_len, block + 1), len(ids)), dtype=torch.long)
    for chunk in late.split(64) if len(late) else []:
        ctx = torch.stack([ids[t - block : t] for t in chunk.tolist()])
        rows.extend(F.log_softmax(model(ctx)[:, -1], dim=-1)[torch.arange(len(chunk)),
                                                              ids[chunk]])
    return torch.stack(rows) if rows else torch.zeros(0)


def label(char: str) -> str:
    return {" ": "␣", "\n": "⏎"}.get(char, char)


prompt = "ROMEO:\nWhat light is this that "
logp = next_token_logprobs(prompt)
top = torch.topk(logp, 8)
print(f"after {prompt!r}:")
for lp, i in zip(top.values.tolist(), top.indices.tolist()):
    print(f"  {label(tok.decode([i]))!r:>5}  p = {math.exp(lp):.3f}")
print(f"  the other {V - 8} characters share p = {1 - top.values.exp().sum():.3f}")
""")

md(r"""
## Greedy decoding

The simplest rule takes the most probable token at every step,
$x_{t} = \arg\max_v p(v \mid x_{<t})$. It is *deterministic*: the same prompt always
gives the same text, which is convenient for testing and for tasks with one right
answer, and a reason it is the default of many libraries. `GPT.generate` decodes
greedily unless told otherwise.
""")

code(r"""
ids = torch.tensor([tok.encode(prompt)])
first = model.generate(ids, 80)
again = model.generate(ids, 80)
print("deterministic:", torch.equal(first, again))
print(tok.decode(first[0].tolist()))
""")

md(r"""
### Greedy is not the most probable sequence

Greedy decoding maximises each factor of

$$
p(x_{1} \dots x_{n} \mid \text{prompt}) = \prod_{t=1}^{n} p(x_t \mid \text{prompt}, x_{<t})
$$

separately, and the product of the best factors is not the best product: a token that
looks best now can lead to a continuation where the model is unsure, while the
runner-up leads to one where it is confident {cite:p}`bishop2024`. A hand-made model
over three tokens shows it. After the start symbol `<s>`, `a` is more probable than
`b`; but after `a` the model is unsure, and after `b` it is almost certain of `c`:
""")

code(CHECK + r"""
toy_vocab = ["<s>", "a", "b", "c"]
toy_probs = torch.tensor([
    # next:  <s>   a     b     c
    [0.00, 0.50, 0.40, 0.10],  # after <s>
    [0.00, 0.36, 0.34, 0.30],  # after a: unsure
    [0.00, 0.05, 0.05, 0.90],  # after b: almost certainly c
    [0.00, 0.40, 0.30, 0.30],  # after c
])
toy_logits = toy_probs.log()  # log 0 = -inf: <s> is never generated


def toy_model(ids: torch.Tensor) -> torch.Tensor:
    # a bigram model: (batch, seq) -> logits (batch, seq, 4)
    return toy_logits[ids]


def toy_text(ids) -> str:
    return " ".join(toy_vocab[i] for i in ids[1:])


start = torch.tensor([0])
seqs = [(toy_text([0, a, b]), float(toy_probs[0, a] * toy_probs[a, b]))
        for a in (1, 2, 3) for b in (1, 2, 3)]
print("all two-token continuations, most probable first:")
for text, p in sorted(seqs, key=lambda s: -s[1])[:5]:
    print(f"  {text}   p = {p:.3f}")
g = greedy(toy_model, start, 2)
best, best_logp = exhaustive_search(toy_model, start, 2)
print(f"greedy:            {toy_text(g.tolist())}   p = "
      f"{sequence_logprob(toy_model, g, 1).exp():.3f}")
print(f"exhaustive search: {toy_text(best.tolist())}   p = {math.exp(best_logp):.3f}")
""")

md(r"""
Greedy commits to `a` and ends with probability 0.18; the best pair, `b c`, has twice
that. Exhaustive search (`llmkit.decoding.exhaustive_search`) finds it by scoring all
$V^n$ continuations, which is possible only for tiny $V$ and $n$: for our 65 characters
and a horizon of 3 it is 274,625 sequences, for GPT-2's 50,257 tokens and a horizon of
3 about $10^{14}$.

The same happens with the real model. We take prompts from the validation text, find
the most probable continuation of two characters by exhaustive search ($65^2 = 4{,}225$
candidates per prompt), and compare it with greedy decoding:
""")

code(r"""
gen = torch.Generator().manual_seed(SEED)
horizon = cfg["horizon"]
plen = min(40, block - horizon)
misses = []
for _ in range(cfg["search_prompts"]):
    s = int(torch.randint(0, len(val_ids) - plen, (1,), generator=gen))
    p_ids = val_ids[s : s + plen]
    g = greedy(model, p_ids, horizon)
    g_logp = float(sequence_logprob(model, g, plen))
    best, best_logp = exhaustive_search(model, p_ids, horizon)
    if best_logp > g_logp + 1e-6:
        misses.append((p_ids, g, g_logp, best, best_logp))
print(f"horizon {horizon}: greedy missed the most probable continuation "
      f"for {len(misses)} of {cfg['search_prompts']} prompts")


def per_char(ids: torch.Tensor, n: int) -> str:
    # the last n characters of ids, each with its probability under the model
    out = []
    for t in range(len(ids) - n, len(ids)):
        p = next_token_logprobs(tok.decode(ids[:t].tolist()))[ids[t]].exp()
        out.append(f"{label(tok.decode([int(ids[t])]))!r} {p:.2f}")
    return ", ".join(out)


if misses:
    p_ids, g, g_logp, best, best_logp = max(misses, key=lambda m: m[4] - m[2])
    print(f"\nprompt: ...{tok.decode(p_ids.tolist())[-30:]!r}")
    print(f"greedy:     {per_char(g, horizon):<34} p = {math.exp(g_logp):.3f}")
    print(f"exhaustive: {per_char(best, horizon):<34} p = {math.exp(best_logp):.3f}")
""")

md(r"""
Each line lists the characters with their conditional probabilities. Greedy's first
character is the more probable one, as it must be; the exhaustive search accepts a less
probable first character because what follows it is much more certain.

## Beam search

Beam search {cite:p}`bishop2024,kamper2024` is the middle way between greedy decoding (one
hypothesis) and exhaustive search (all of them). It keeps $B$ hypotheses, the *beam*,
each a partial sequence with its log-probability $\sum_t \log p(x_t \mid x_{<t})$. At
every step:

1. each of the $B$ hypotheses is fed through the model, and its $B$ most probable next
   tokens give $B$ extensions: $B^2$ candidates in all;
2. each candidate's score is its parent's log-probability plus that of the new token;
3. the candidates are **pruned** back to the $B$ best, whichever parents they come from.

At the end the most probable hypothesis is returned. $B = 1$ is greedy decoding. Keeping
only each hypothesis' $B$ best tokens loses nothing: a hypothesis' $(B{+}1)$-th token
can never beat $B$ candidates of its own. Here is the search on the toy model with
$B = 2$, printed step by step (on the first step there is a single hypothesis, so only
$B$ candidates):
""")

code(CHECK + r"""
def beam_trace(model, prompt: list[int], beam_width: int, steps: int, show) -> list:
    beams = [(prompt, 0.0)]  # (sequence, log-probability)
    for step in range(1, steps + 1):
        candidates = []
        for seq, score in beams:
            logp = F.log_softmax(model(torch.tensor([seq]))[0, -1], dim=-1)
            top = torch.topk(logp, beam_width)
            for lp, v in zip(top.values.tolist(), top.indices.tolist()):
                candidates.append((seq + [v], score + lp))
        candidates.sort(key=lambda c: -c[1])
        print(f"step {step}: {len(beams)} hypotheses -> {len(candidates)} candidates")
        for rank, (seq, score) in enumerate(candidates):
            verdict = "keep" if rank < beam_width else "prune"
            print(f"   {show(seq):<7} log p = {score:7.3f}  p = {math.exp(score):.3f}  {verdict}")
        beams = candidates[:beam_width]
    return beams


beams = beam_trace(toy_model, [0], beam_width=2, steps=3, show=toy_text)
best = beam_search(toy_model, start, beam_width=2, max_new_tokens=3)
print(f"llmkit.decoding.beam_search: {toy_text(best.tolist())!r}, "
      f"the same as the trace: {best.tolist() == beams[0][0]}")
print(f"greedy: {toy_text(greedy(toy_model, start, 3).tolist())!r}")
""")

md(r"""
On step 2 the two candidates through `b` rank first and second, so the hypothesis `a`
(probability 0.5 a step earlier) is pruned entirely: the beam follows the strong
continuation, not the strong first token. `llmkit.decoding.beam_search` does the same
with tensors: it scores all $B \times V$ extensions at once and keeps the best (ranking
all of them gives the same survivors as ranking $B^2$), reorders the KV cache so that
each surviving hypothesis continues from its parent's keys and values, and with an
end-of-sequence token it keeps $2B$ candidates, as `transformers` does, so that $B$
hypotheses stay alive when some finish.

On the real model a wider beam usually finds a continuation of higher probability:
""")

code(r"""
prompt = "KING RICHARD II:\nNow, "
p_ids = torch.tensor(tok.encode(prompt))
for width in [1, 2, 4, 8]:
    out = beam_search(model, p_ids, width, cfg["beam_tokens"])
    logp = float(token_logprobs(out, len(p_ids)).sum())
    text = tok.decode(out[len(p_ids):].tolist())
    print(f"B = {width}: log p = {logp:7.2f}  {text!r}")
""")

md(r"""
Look also at *what* the most probable text says: the wider the beam, the more it
circles around a few safe phrases. We come back to this below.

### Length normalisation

With an end-of-sequence token, hypotheses finish at different lengths, and the score
of a longer one is a sum of more negative log-probabilities. Ranked by the raw sum,
**beam search prefers short outputs**: every extra token can only lower the score. The
usual fix divides by the length {cite:p}`wu2016`,

$$
\text{score}(x_{1..n}) = \frac{1}{n^{\alpha}} \sum_{t=1}^{n} \log p(x_t \mid x_{<t}),
$$

where $\alpha$ (`length_penalty` in `llmkit` and `transformers`) is 1 for the mean
log-probability per token and 0 for the raw sum. A toy model with an end-of-sequence
token `</s>` shows the bias at its starkest: the empty output has probability 0.45,
while the three-token answer `a b c`, each of whose tokens is 90 % certain, has 0.40
in all. In machine translation this is not a curiosity: the single most probable
translation is often the empty one {cite:p}`stahlberg2019`.
""")

code(CHECK + r"""
eos_vocab = ["<s>", "a", "b", "c", "</s>"]
eos_probs = torch.tensor([
    # next: <s>   a     b     c     </s>
    [0.00, 0.55, 0.00, 0.00, 0.45],  # after <s>: stop at once, or start an answer
    [0.00, 0.00, 0.90, 0.00, 0.10],  # after a
    [0.00, 0.00, 0.00, 0.90, 0.10],  # after b
    [0.00, 0.10, 0.00, 0.00, 0.90],  # after c: the answer is complete
    [0.00, 0.00, 0.00, 0.00, 1.00],  # after </s>
])
eos_logits = eos_probs.log()
for alpha in [0.0, 1.0]:
    best, finished = beam_search(lambda ids: eos_logits[ids], torch.tensor([0]), 2, 6,
                                 length_penalty=alpha, eos_token_id=4, return_all=True)
    print(f"length_penalty = {alpha}:")
    for h in finished[:3]:
        text = " ".join(eos_vocab[i] for i in h.ids[1:].tolist())
        print(f"   {text:<14} p = {math.exp(h.logprob):.3f}  length {h.length}  "
              f"score {h.score:6.3f}")
""")

md(r"""
With the raw sum the empty output wins; divided by the length, the complete answer
wins, because its tokens are on average far more probable than the lone `</s>`. Our
character model has no end-of-text token, but a blank line ends a speech and the next
speaker's name ends with a colon and a newline. Take the newline as the
end-of-sequence token and ask beam search for the name of the next speaker: names of
different lengths compete.
""")

code(r"""
eos = tok.encode("\n")[0]
cut = val_text.index("\n\n", len(val_text) // 2) + 2  # the end of a speech
p_ids = torch.tensor(tok.encode(val_text[cut - 60 : cut]))
print(f"prompt: ...{val_text[cut - 30 : cut]!r}")
for alpha in [0.0, 1.0]:
    best, finished = beam_search(model, p_ids, 8, 40, length_penalty=alpha,
                                 eos_token_id=eos, return_all=True)
    top = finished[:5]
    print(f"length_penalty = {alpha}: the best 5 of {len(finished)} finished hypotheses "
          f"(mean length {sum(h.length for h in top) / len(top):.1f})")
    for h in top:
        line = tok.decode(h.ids[len(p_ids):].tolist())
        print(f"   length {h.length:>2}  sum {h.logprob:7.2f}  score {h.score:6.3f}  {line!r}")
""")

md(r"""
Ranked by the raw sum ($\alpha = 0$), the best names are short on average; divided by
the length ($\alpha = 1$), longer names climb (the mean length of the best five rises).
A long name pays for every letter in the raw sum, although after its first few letters
each further one is almost certain. The normalised ranking is also what lets beam
search finish more hypotheses: with the raw sum, no live hypothesis can catch up with a
finished one that is already better, so the search stops early.

Length normalisation does not make beam search produce *good* text, though: it still searches for what is most probable, and the next sections show
why that is not what we want for open-ended writing {cite:p}`holtzman2020,meister2020`.

## Sampling and the long tail

Instead of searching, we can draw each token at random from the model's distribution:
*pure* (or ancestral) sampling. Run twice with different seeds, it writes two different
texts, and on average it produces text with the statistics the model learned. Its
problem is the **long tail** {cite:p}`holtzman2020`: most tokens are individually
improbable, but together they hold a noticeable share of the probability, so over a
long text some improbable, often nonsensical, tokens are drawn almost surely, and once
drawn they become part of the context.

We measure the tail on the validation text: the model's next-character distributions
at every position of a set of windows, each sorted from the most to the least probable
character.
""")

code(r"""
starts = torch.linspace(0, len(val_ids) - block - 1, cfg["tail_windows"]).long()
windows = torch.stack([val_ids[s : s + block] for s in starts.tolist()])
with torch.no_grad():
    logits = model(windows).reshape(-1, V).float()  # (positions, V)
probs = logits.softmax(dim=-1)
sorted_probs = probs.sort(dim=-1, descending=True).values
cumulative = sorted_probs.cumsum(dim=-1)
print(f"{len(probs):,} positions")
print("mean probability outside the k most probable characters:")
for k in [1, 3, 5, 10, 20]:
    tail = 1 - cumulative[:, k - 1]
    print(f"  k = {k:>2}: {tail.mean():.3f}  (more than 0.05 at "
          f"{(tail > 0.05).float().mean():.0%} of the positions)")
n = 100
print(f"in {n} characters of pure sampling, expect {n * (1 - cumulative[:, 9]).mean():.1f} "
      "from outside the top 10 and "
      f"{n * (1 - cumulative[:, 2]).mean():.1f} from outside the top 3")
""")

code(r"""
ranks = torch.arange(1, V + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].semilogy(ranks, sorted_probs.mean(dim=0), "o-", ms=3)
axes[0].set_xlabel("rank of the character (1 = most probable)")
axes[0].set_ylabel("mean probability")
axes[0].set_title("Sorted next-character probabilities")
axes[1].plot(ranks, cumulative.mean(dim=0), "o-", ms=3, label="mean")
lo, hi = cumulative.quantile(0.1, dim=0), cumulative.quantile(0.9, dim=0)
axes[1].fill_between(ranks, lo, hi, alpha=0.3, label="10th-90th percentile")
axes[1].axhline(0.9, color="gray", ls=":", label="p = 0.9")
axes[1].set_xscale("log")
axes[1].set_xlabel("number of most probable characters k")
axes[1].set_ylabel("probability they hold")
axes[1].set_title("Cumulative mass of the top k")
axes[1].legend(loc="lower right")
plt.tight_layout()
plt.show()
""")

md(r"""
The most probable character holds about half of the mass on average, but the band on
the right is wide: at some positions one character is almost certain, at others the
first ten characters hold less than 90 %. A tail mass of a few per cent per step adds
up: a continuation of a hundred characters draws several characters from outside the
top ten, and every one of them is now part of the context the model continues from.
With a character vocabulary the damage is a misspelt word; with GPT-2's 50,257 subword
tokens the tail is tens of thousands of tokens long and a single draw can derail the
text {cite:p}`holtzman2020`.

## Truncation: top-k and top-p

The fix is to cut the tail off before sampling and renormalise what is left:

- **top-k** {cite:p}`fan2018` keeps the $k$ most probable tokens;
- **top-p**, or *nucleus sampling* {cite:p}`holtzman2020`, keeps the smallest set of
  most probable tokens whose total probability reaches $p$ (the token that crosses $p$
  is kept).

Top-k keeps the same number of tokens whether the model is sure or unsure: too many in
a sharp distribution (where it lets the tail back in), too few in a flat one. The
nucleus adapts. Here is how many characters the nucleus of $p = 0.9$ holds at each of
the positions above:
""")

code(r"""
nucleus = torch.isfinite(top_p_filter(logits, 0.9)).sum(dim=-1)
print(f"nucleus size for p = 0.9: median {nucleus.median()}, "
      f"from {nucleus.min()} to {nucleus.max()} characters")
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(nucleus.tolist(), bins=range(1, int(nucleus.max()) + 2), align="left", rwidth=0.85)
ax.axvline(10, color="C3", ls="--", label="top-k with k = 10")
ax.set_xlabel("characters in the nucleus (p = 0.9)")
ax.set_ylabel("positions")
ax.legend()
plt.show()

flat, sharp = int(nucleus.argmax()), int(nucleus.argmin())
for name, i in [("flattest", flat), ("sharpest", sharp)]:
    w, t = divmod(i, block)
    context = tok.decode(windows[w, max(0, t - 30) : t + 1].tolist())
    kept = torch.isfinite(top_p_filter(logits[i], 0.9)).nonzero().flatten()
    chars = "".join(label(tok.decode([c])) for c in kept.tolist())
    print(f"{name}: after ...{context!r}: {len(kept)} kept: {chars}")
""")

md(r"""
At the start of a line or of a word many characters are plausible; in the middle of a
word or a name often one or two are. A fixed $k = 10$ is wrong in both places.

## Temperature

The temperature $T > 0$ reshapes the whole distribution instead of truncating it. It
divides the logits $a_i$ before the softmax {cite:p}`bishop2024`:

$$
p_i(T) = \frac{\exp(a_i / T)}{\sum_j \exp(a_j / T)}.
$$

- $T \to 0$: the largest logit dominates every other, so all the mass goes to the most
  probable token and sampling becomes greedy decoding;
- $T = 1$: the model's own distribution;
- $T \to \infty$: every $a_i / T \to 0$, so the distribution becomes uniform over the
  $V$ tokens, whatever the model learned.

Between these, $T < 1$ sharpens the distribution (a softer version of truncation: the
tail shrinks but is never cut) and $T > 1$ flattens it. The limits, measured on the
model's distributions at the positions above (the mean entropy in nats, and the mean
probability of the most probable character):
""")

code(r"""
def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(dim=-1)


print(f"{'T':>8} {'entropy':>8} {'max prob':>9}")
for T in [0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0, 10_000.0]:
    p = (logits / T).softmax(dim=-1)
    print(f"{T:>8g} {entropy(p).mean():>8.3f} {p.max(dim=-1).values.mean():>9.4f}")
print(f"{'limit':>8} {'0 .. log V':>8}   1 .. 1/V = {1 / V:.4f};  log V = {math.log(V):.3f}")
""")

code(r"""
temperatures = torch.logspace(-2, 3, 60)
ent = [float(entropy((logits / T).softmax(dim=-1)).mean()) for T in temperatures]
top1 = [float((logits / T).softmax(dim=-1).max(dim=-1).values.mean()) for T in temperatures]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].semilogx(temperatures, ent)
axes[0].axhline(math.log(V), color="gray", ls=":", label=f"log V = {math.log(V):.2f} (uniform)")
axes[0].set_ylabel("mean entropy (nats)")
axes[1].semilogx(temperatures, top1)
axes[1].axhline(1 / V, color="gray", ls=":", label=f"1/V = {1 / V:.3f} (uniform)")
axes[1].axhline(1, color="k", ls="--", lw=0.8, label="1 (greedy)")
axes[1].set_ylabel("mean probability of the top character")
for ax in axes:
    ax.axvline(1, color="C3", lw=0.8, label="T = 1 (the model)")
    ax.set_xlabel("temperature T")
    ax.legend(fontsize=8)
fig.suptitle("Temperature interpolates between greedy decoding and a uniform distribution")
plt.tight_layout()
plt.show()
""")

md(r"""
As $T$ falls, the distribution becomes one-hot at more and more positions, and
sampling follows the greedy text for longer before a draw first differs (it can differ
only where the two most probable characters are almost tied):
""")

code(r"""
ids = torch.tensor([tok.encode("DUKE VINCENTIO:\n")])
n = 200
greedy_text = model.generate(ids, n)[0]
for T in [1.0, 0.5, 0.2, 0.1, 0.01]:
    agree = []
    for seed in range(3):
        out = model.generate(ids, n, strategy="sample", temperature=T,
                             generator=torch.Generator().manual_seed(seed))[0]
        differ = (out != greedy_text).nonzero()
        agree.append(int(differ[0]) - ids.shape[1] if len(differ) else n)
    print(f"T = {T:<4}: the first {agree} characters equal greedy decoding's (3 seeds)")
""")

md(r"""
## Exploring the distribution

`llmkit.widgets.decoding_explorer` puts the three settings on sliders. It shows the
model's next-token distribution for a prompt (outlined bars) and the distribution that
is actually sampled from after temperature, top-k and top-p (filled bars; the removed
tokens are marked), with a continuation sampled under the same setting. Run the cell
in Jupyter to use it. The book is built from saved notebooks, and saved notebooks keep
no widget state, so **in the HTML version the widget does not appear**; the static
figure after it shows the same view for six fixed settings.
""")

code(r"""
explorer_prompt = "JULIET:\nO Romeo, Romeo! wherefore art thou"
decoding_explorer(model, tok, explorer_prompt, n_show=20, sample_tokens=120)
""", tags=["remove-output"])

code(r"""
settings = [
    dict(),
    dict(temperature=0.5),
    dict(temperature=2.0),
    dict(top_k=5),
    dict(top_p=0.9),
    dict(temperature=0.7, top_p=0.9),
]
fig = plot_settings_grid(
    next_token_logprobs(explorer_prompt), settings, labels=tok, n_show=15, ncols=3,
    suptitle=f"The next character after {explorer_prompt[-26:]!r}",
)
plt.show()
""")

md(r"""
## Repetition loops

Maximising probability has a failure that sampling avoids: **loops**. Greedy decoding
and beam search often fall into a cycle that repeats one phrase until the length limit
{cite:p}`holtzman2020,welleck2020`. In GPT-2, {cite:t}`holtzman2020` found that a phrase
becomes more probable with every repetition, so the search, which always takes the
most probable continuation, is drawn further in. We decode a long continuation and look
for the shortest unit that the text repeats at its end:
""")

code(r"""
def find_loop(text: str, min_repeats: int = 3) -> tuple[int, str] | None:
    # (start, unit) of the longest run of a repeated unit at the end of text
    for period in range(1, len(text) // min_repeats + 1):
        unit = text[-period:]
        if text.endswith(unit * min_repeats):
            start = len(text) - period
            while start >= period and text[start - period : start] == unit:
                start -= period
            while start > 0 and text[start - 1] == text[start - 1 + period]:
                start -= 1  # the loop may begin part-way through a unit
            return start, text[start : start + period]
    return None


prompt = "ROMEO:\nI will "
p_ids = torch.tensor([tok.encode(prompt)])
loops = {}
for name, kwargs in [("greedy", {}), ("beam (B=4)", dict(strategy="beam", beam_width=4))]:
    out = model.generate(p_ids, cfg["loop_tokens"], **kwargs)[0]
    text = tok.decode(out[len(prompt):].tolist())
    loops[name] = (out, find_loop(text))
    print(f"--- {name}:\n{text[:360]}")
    if loops[name][1]:
        start, unit = loops[name][1]
        print(f"==> loops from character {start}: {unit!r} repeated "
              f"{(len(text) - start) // len(unit)} times")
    print()
""")

code(r"""
out, loop = loops["greedy"]
p_tok = token_logprobs(out, len(prompt)).exp()
fig, ax = plt.subplots(figsize=(10, 3.2))
if loop:
    start, unit = loop
    shown = min(len(p_tok), start + 3 * len(unit))  # the text before the loop, 3 cycles
    ax.plot(range(shown), p_tok[:shown], lw=0.9)
    ax.axvspan(start, shown, color="C3", alpha=0.08, label="inside the loop")
    for c in range(start, shown, len(unit)):
        ax.axvline(c, color="C3", ls=":", lw=1)
    ax.legend(loc="lower left")
else:
    ax.plot(p_tok, lw=0.9)
ax.set_xlabel("position in the greedy continuation (characters); dotted: a new cycle")
ax.set_ylabel("p(chosen character)")
ax.set_ylim(0, 1.02)
ax.set_title("Greedy decoding: the probability of each chosen character")
plt.show()
if loop:
    start, unit = loop
    cycles = range(start, len(p_tok) - len(unit) + 1, len(unit))
    means = [f"{p_tok[c : c + len(unit)].mean():.3f}" for c in cycles]
    print(f"mean p before the loop: {p_tok[:start].mean():.3f}; "
          f"in each cycle of the loop: {', '.join(means)}")
    P, c1, c2 = len(prompt), cycles[-2], cycles[-1]
    same = torch.equal(out[max(0, P + c1 - block) : P + c1], out[P + c2 - block : P + c2])
    print(f"the {block} characters before the last two cycles are identical: {same}")
""")

md(r"""
Our small model is trapped by something simpler than rising probabilities: the
characters of the loop are not more probable than those before it, and every cycle
has the same probabilities (to three decimals), because the model sees the same recent
text. Greedy
decoding is a deterministic function of the last 128 characters; once that window has
held the same text twice, everything that follows repeats forever. Beam search is just
as deterministic, and its outputs (above) circle around a few phrases too. Sampling
escapes, because a draw of a less probable token breaks the cycle; this, and the
dullness of the most probable text, is why open-ended generation samples, and why
search is kept for tasks such as translation, where the output is short and nearly
determined by the input.

## Comparing the strategies

We now run six strategies on the same prompts: the opening words of speeches from the
validation text, which the model never trained on. Each continuation has `n_new`
characters (200 in the `book` profile); the sampling strategies draw `n_samples`
continuations per prompt. Three numbers describe each strategy:

- **log-likelihood per character**: the mean of $\log p(x_t \mid x_{<t})$ over the
  generated characters, under the model itself (at $T = 1$, unfiltered): how typical
  the text is *for the model*. Higher is more probable;
- **distinct-n** {cite:p}`li2016`: the number of different word $n$-grams divided by
  the number of word $n$-grams, over the continuations of all prompts (one continuation
  per prompt in each pool, so every strategy is measured on the same amount of text).
  Higher is more diverse;
- **repetition**: the share of word 4-grams in a continuation that already occurred
  earlier in it, averaged over continuations (seq-rep-4 of {cite:t}`welleck2020`).

The last row measures the text that really follows each prompt in the validation text,
the human reference.
""")

code(r"""
def speech_prompts(text: str, n: int) -> list[tuple[str, str]]:
    # (prompt, true continuation) at n speech openings spread over the text: the
    # speaker's name and the first words, at most prompt_chars characters
    starts = [m.start() + 2 for m in re.finditer(r"\n\n[A-Z][A-Za-z ]+:\n", text)]
    picks = [starts[round(i * (len(starts) - 2) / (n - 1))] for i in range(n)]
    pairs = []
    for s in picks:
        end = text.index(" ", text.index(":\n", s) + 2)  # after the first word
        nxt = text.index(" ", end + 1)
        while nxt - s <= cfg["prompt_chars"]:  # more words while they fit
            end, nxt = nxt, text.index(" ", nxt + 1)
        start = max(s, end - cfg["prompt_chars"])
        pairs.append((text[start:end], text[end : end + cfg["n_new"]]))
    return pairs


pairs = speech_prompts(val_text, cfg["n_prompts"])
for p, _ in pairs:
    print(repr(p))
""")

code(r"""
strategies = {
    "greedy": dict(strategy="greedy"),
    "beam (B=4)": dict(strategy="beam", beam_width=4),
    "pure sampling": dict(strategy="sample"),
    "top-k (k=10)": dict(strategy="sample", top_k=10),
    "top-p (p=0.9)": dict(strategy="sample", top_p=0.9),
    "temperature 0.7": dict(strategy="sample", temperature=0.7),
}
t0 = time.perf_counter()
generations = {}  # name -> list over prompts of lists over samples of (ids, prompt_len)
for name, kwargs in strategies.items():
    rows = []
    for i, (p, _) in enumerate(pairs):
        ids = torch.tensor([tok.encode(p)])
        if kwargs["strategy"] == "sample":
            g = torch.Generator().manual_seed(SEED + i)
            ids = ids.repeat(cfg["n_samples"], 1)
            out = model.generate(ids, cfg["n_new"], generator=g, **kwargs)
        else:
            out = model.generate(ids, cfg["n_new"], **kwargs)
        rows.append([(o, ids.shape[1]) for o in out])
    generations[name] = rows
generations["human (validation text)"] = [
    [(torch.tensor(tok.encode(p + c)), len(p))] for p, c in pairs
]
print(f"generated in {time.perf_counter() - t0:.0f} s")
""")

code(r"""
def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct(texts: list[str], n: int) -> float:
    grams = [g for t in texts for g in ngrams(t, n)]
    return len(set(grams)) / max(1, len(grams))


def repetition(text: str, n: int = 4) -> float:
    grams = ngrams(text, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


table = {}
for name, rows in generations.items():
    lls, texts_by_sample = [], {}
    for per_prompt in rows:
        for j, (ids, plen) in enumerate(per_prompt):
            lls.append(float(token_logprobs(ids, plen).mean()))
            texts_by_sample.setdefault(j, []).append(tok.decode(ids[plen:].tolist()))
    pools = list(texts_by_sample.values())
    all_texts = [t for pool in pools for t in pool]
    table[name] = dict(
        ll=sum(lls) / len(lls),
        **{f"d{n}": sum(distinct(pool, n) for pool in pools) / len(pools) for n in (1, 2, 3)},
        rep=sum(repetition(t) for t in all_texts) / len(all_texts),
    )

header = f"{'strategy':<24} {'log-lik/char':>12} {'distinct-1':>10} {'distinct-2':>10} "
print(header + f"{'distinct-3':>10} {'repeated 4-grams':>16}")
for name, r in table.items():
    print(f"{name:<24} {r['ll']:>12.3f} {r['d1']:>10.3f} {r['d2']:>10.3f} "
          f"{r['d3']:>10.3f} {r['rep']:>16.1%}")
""")

code(r"""
fig, ax = plt.subplots(figsize=(7.5, 4.2))
for i, (name, r) in enumerate(table.items()):
    marker = "*" if name.startswith("human") else "o"
    ax.scatter(r["ll"], r["d1"], s=120 if marker == "*" else 40, marker=marker)
    ax.annotate(name, (r["ll"], r["d1"]), textcoords="offset points",
                xytext=(6, 6 if i % 2 == 0 else -12), fontsize=8)
ax.set_xlabel("log-likelihood per character under the model (higher: more probable)")
ax.set_ylabel("distinct-1 (higher: more diverse)")
ax.margins(x=0.15, y=0.1)
ax.set_title("Probability against diversity")
plt.tight_layout()
plt.show()
""")

code(r"""
for name in ["greedy", "beam (B=4)", "pure sampling", "top-p (p=0.9)"]:
    ids, plen = generations[name][0][0]
    print(f"--- {name}:\n{tok.decode(ids.tolist())[:plen + 160]}\n")
""")

md(r"""
The table has the shape that {cite:t}`holtzman2020` found with GPT-2. The two search
strategies write text that the model finds far more probable than real Shakespeare
(compare their log-likelihood per character with the human row) and pay for it in
diversity: few distinct words and word pairs, the same phrases across prompts, and
repeated 4-grams within a continuation, where human text has almost none. Pure sampling
is the opposite. Its log-likelihood is close to that of the real text (a little higher:
real text also holds what the model fails to predict, the model's own samples do not),
and it is as diverse as the real text, partly for a bad reason: it draws misspelt,
invented words from the tail, and every invented word counts as a distinct one.
Truncation (top-k, top-p) and a temperature below 1 sit in between, far more diverse
than search and with fewer tail characters than pure sampling. A good decoder aims at
text that is as probable as human text, not more {cite:p}`holtzman2020`; that is why
sampling with top-p around 0.9 (often with a temperature a little below 1) is the usual
default for open-ended generation, and beam search is kept for translation and
summarisation.

## Summary

- A decoding strategy turns next-token distributions into text; with the same model it
  decides between loops, gibberish and plausible text.
- **Greedy** decoding is deterministic and cheap, but the most probable token at each
  step does not give the most probable sequence; exhaustive search finds that one only
  for tiny horizons.
- **Beam search** keeps $B$ hypotheses, extends each by its $B$ best tokens and prunes the
  $B^2$ candidates back to $B$. Ranked by raw log-probability it prefers short outputs;
  dividing by the length (to a power $\alpha$) removes that bias.
- Search for the most probable text produces **repetition loops**, because repetition
  makes itself more probable.
- **Pure sampling** is diverse but draws from the long tail of improbable tokens;
  **top-k** cuts the tail at a fixed size, **top-p** at a fixed probability mass, which
  adapts to how sure the model is.
- **Temperature** rescales the logits: $T \to 0$ is greedy decoding, $T = 1$ the model,
  $T \to \infty$ the uniform distribution.

### This chapter's numbers

The record below is printed by the notebook itself. The published anchor is qualitative:
{cite:t}`holtzman2020` report, for GPT-2 Large, that beam search and greedy decoding
produce text of much higher likelihood and much more repetition than human text, and
pure sampling text of too little likelihood, with nucleus sampling closest to human
text on both counts.
""")

code(r"""
print(f"profile      : {profile.current()} (seed {SEED})")
print(f"hardware     : {platform.machine()} CPU, {torch.get_num_threads()} threads, "
      f"torch {torch.__version__}")
print(f"model        : chapter-3 character GPT, {info['n_parameters']:,} parameters, "
      f"val loss {info['val_loss']:.3f}, {info['steps']} steps in "
      f"{info['train_seconds']:.0f} s on {info['hardware']}")
print(f"prompts      : {len(pairs)} x {cfg['n_new']} characters, "
      f"{cfg['n_samples']} sample(s) per prompt for the sampling strategies")
for name in ["greedy", "beam (B=4)", "pure sampling", "top-p (p=0.9)", "human (validation text)"]:
    r = table[name]
    print(f"{name:<24}: log-lik/char {r['ll']:.3f}, distinct-2 {r['d2']:.3f}, "
          f"repeated 4-grams {r['rep']:.1%}")
print(f"notebook time: {time.perf_counter() - started:.0f} s")
""")

md(r"""
## References

Greedy decoding, beam search, sampling, top-k and temperature as presented here follow
{cite:t}`bishop2024` and the lecture notes of {cite:t}`kamper2024` and
{cite:t}`pellert2024`. Top-k sampling is due to {cite:t}`fan2018`; nucleus sampling and
the analysis of degeneration (the long tail, repetition, likelihood against
diversity) to {cite:t}`holtzman2020`; length normalisation in beam search to
{cite:t}`wu2016`. {cite:t}`meister2020` discuss why beam search's errors can help;
distinct-n is from {cite:t}`li2016` and the repetition measure from
{cite:t}`welleck2020`. Full entries are in the [bibliography](../bibliography).
""")

build(cells, "ch04", "/work/main/chapters/04_decoding.ipynb")
print("built", len(cells), "cells")
