import sys

sys.path.insert(0, "/work/main/.notes")
from nbgen import build

CHECK = "# NBVAL_CHECK_OUTPUT\n"
cells = []
md = lambda s, **m: cells.append(("md", s, m))
code = lambda s, **m: cells.append(("code", s, m))

md(r"""
# GPT

A GPT is a transformer language model and nothing more: a stack of the causal
self-attention blocks of chapter 2, an embedding of the tokens at the bottom, and a
projection to next-token probabilities at the top {cite:p}`radford2018,radford2019`.
There is no encoder and no second input; the model reads a sequence and, at every
position, predicts the token that comes next. The architecture has hardly changed since
the first GPT {cite:p}`kamper2024`.

The same network is used in two different ways:

- **at training time it predicts all the next tokens at once**: one forward pass over
  a sequence of $N$ tokens produces $N$ next-token distributions, each scored against
  the token that really follows;
- **at inference time it predicts one token at a time**: it picks a next token, appends
  it to the input, and runs again.

The causal mask of chapter 2 is what makes the two agree: the prediction at position
$n$ never sees tokens after $n$ during training, exactly as it cannot during generation.

This chapter builds the path from token ids to probabilities, explains the `<start>`
offset that turns a sentence into training pairs, looks at the output projection and
its weight tying, pretrains a character-level GPT on tinyshakespeare with the course's
training loop, samples from it, and measures what the KV cache saves when generating.
""")

code(r"""
import json
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from llmkit import data, profile
from llmkit.bigram import BigramLM, bigram_counts, evaluate
from llmkit.gpt import GPT, GPTConfig
from llmkit.pretrained import char_gpt, char_gpt_recipe
from llmkit.tokenizers import CharTokenizer
from llmkit.train import random_batches
from llmkit.viz import plot_history

SEED = 1337
torch.manual_seed(SEED)
started = time.perf_counter()

# Every size in this notebook is read here, once. The GPT's own recipe
# (llmkit.pretrained.CHAR_GPT_RECIPES) is chosen by the same profile.
cfg = profile.choose(
    smoke=dict(sample_chars=200, context_windows=64, kv_repeats=1),
    book=dict(sample_chars=600, context_windows=512, kv_repeats=3),
    full=dict(sample_chars=600, context_windows=512, kv_repeats=3),
)
print(f"profile: {profile.current()}  {cfg}")
""")

md(r"""
## From token ids to next-token probabilities

Write the input as a sequence of $N$ token ids $x_1, \dots, x_N$ from a vocabulary of
$K$ tokens. A GPT turns it into next-token probabilities in three steps
{cite:p}`bishop2024,pellert2024`:

1. **Embed.** Each id selects a row of the token embedding matrix
   $E \in \mathbb{R}^{K \times D}$, and a learned position embedding is added, so the
   input is a matrix $X \in \mathbb{R}^{N \times D}$, one row of width $D$ per token.
2. **Transform.** $L$ transformer blocks (chapter 2), each causal self-attention and an
   MLP with residual connections and LayerNorm, map $X$ to a matrix $\tilde X$ of the same
   shape. Row $n$ of $\tilde X$ depends on rows $1 \dots n$ of $X$ only.
3. **Project and normalise.** Each output row has width $D$, but it must become a
   distribution over $K$ tokens. A linear map $W^{(p)} \in \mathbb{R}^{D \times K}$
   followed by a softmax over the vocabulary does it:

$$
Y = \operatorname{Softmax}\!\big[\tilde X\, W^{(p)}\big] \in \mathbb{R}^{N \times K},
\qquad \sum_{k=1}^{K} Y_{nk} = 1 \text{ for every row } n.
$$

Row $n$ of $Y$ is the model's distribution $p_\theta(x_{n+1} \mid x_1, \dots, x_n)$.
The matrix before the softmax, $\tilde X W^{(p)}$, holds the *logits*: that is what
`GPT.forward` returns, because the loss and the decoding strategies of chapter 4 want the
unnormalised scores. (GPT-2 also applies a final LayerNorm to $\tilde X$ before the
projection.)

Here are the three steps done by hand on a freshly initialised model of the size we
train below, with the shapes at every stage:
""")

code(CHECK + r"""
splits = data.load_tinyshakespeare()
chars = CharTokenizer.train(splits["train"] + splits["val"])
torch.manual_seed(SEED)
demo = GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=128, n_layer=4,
                     n_head=4, d_model=128))

ids = torch.tensor([chars.encode("To be, or not to be")])       # (batch, N)
with torch.no_grad():
    X = demo.wte(ids) + demo.wpe(ids.shape[1])                  # embed: (batch, N, D)
    h = X
    for block in demo.blocks:                                   # transform
        h, _ = block(h)
    X_tilde = demo.ln_f(h)                                      # (batch, N, D)
    W_p = demo.lm_head.weight.T                                 # (D, K)
    logits = X_tilde @ W_p                                      # (batch, N, K)
    Y = logits.softmax(dim=-1)

for name, t in [("ids", ids), ("X", X), ("X_tilde", X_tilde), ("W_p", W_p),
                ("Y", Y)]:
    print(f"{name:>8}: {tuple(t.shape)}")
print("rows of Y sum to 1:", torch.allclose(Y.sum(dim=-1), torch.ones(1, ids.shape[1])))
with torch.no_grad():
    print("same logits as demo(ids):", torch.allclose(logits, demo(ids), atol=1e-6))
""")

md(r"""
The library's forward pass is exactly these lines, with an optional KV cache that we
meet at the end of the chapter:

```{literalinclude} ../lib/llmkit/gpt.py
:pyobject: GPT.forward
:language: python
```
""")

md(r"""
## Training: every next token at once

### The `<start>` offset

Take the sentence of the lecture notes, "I swam across the river". To train the model
to predict each word from the words before it, the input is the sentence *offset by
one*: a special `<start>` token is put in front, and the targets are the sentence itself
{cite:p}`pellert2024,bishop2024`. Position $n$ reads the input token $n$ and must output
target $n$, which is input token $n+1$. With the causal mask, position $n$ attends to
inputs $1 \dots n$ only:
""")

code(CHECK + r"""
words = ["I", "swam", "across", "the", "river"]
inputs = ["<start>"] + words[:-1]
targets = words
print(f"{'n':>2}  {'input':<8} {'may attend to':<26} target")
for n, (x, y) in enumerate(zip(inputs, targets), start=1):
    print(f"{n:>2}  {x:<8} {' '.join(inputs[:n]):<26} {y}")
""")

md(r"""
The row of "across" is the picture of the lecture notes: its output may depend only on
`<start>`, "I" and "swam" {cite:p}`pellert2024`. Two things follow from the offset.
First, every word of the sentence is a target, the first one included: without
`<start>`, no position would ever predict "I". Second, generation has somewhere to
begin: feed `<start>` alone, and the first output is a distribution over first words.

One forward pass over the five inputs yields five predictions, and the loss is the
average of their five cross-entropies. A text of a million tokens is a million
training examples, and a batch of windows processes thousands of them in parallel; this
is what makes a decoder cheap to train compared with models that predict one label per
sequence.

### Windows of characters

Our model reads characters. In a long stream of text no special token is needed: a
training example is a window of $T + 1$ consecutive characters, its first $T$ the input
`x` and its last $T$ the target `y`. The first character of the window plays the role
of `<start>`; it is the context of the first prediction. `llmkit.train.random_batches`
draws such windows at random positions of the training text:
""")

code(r"""
train_ids = torch.tensor(chars.encode(splits["train"]))
val_ids = torch.tensor(chars.encode(splits["val"]))
x, y = random_batches(train_ids, block_size=24, batch_size=2,
                      generator=torch.Generator().manual_seed(SEED))
for row in range(2):
    print("x:", repr(chars.decode(x[row].tolist())))
    print("y:", repr(chars.decode(y[row].tolist())))
""")

md(r"""
To *generate* from nothing, the character model still needs a first token. We use the
newline: in tinyshakespeare every speech starts after one, so `"\n"` is this corpus's
natural `<start>`.

### One forward pass, one loss per position

The forward pass maps `x` of shape (batch, $T$) to logits of shape (batch, $T$, $K$).
The cross-entropy compares each of the batch × $T$ rows with its target; averaged, it is
the training loss that `GPT.loss` returns. The model is still untrained, so every
position scores close to the loss of a uniform guess, $\log K = \log 65 \approx 4.17$:
""")

code(r"""
with torch.no_grad():
    logits = demo(x)                                              # (2, 24, 65)
    per_position = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
print("logits:", tuple(logits.shape), " loss per position:", tuple(per_position.shape))
print("first row:", [round(v, 2) for v in per_position[0, :8].tolist()], "...")
with torch.no_grad():
    print(f"mean {per_position.mean():.4f} == demo.loss(x, y) {demo.loss(x, y):.4f}; "
          f"log K = {math.log(chars.vocab_size):.4f}")
""")

md(r"""
## The output projection and weight tying

The output projection $W^{(p)}$ has shape $D \times K$; the token embedding $E$ has shape
$K \times D$. Both relate tokens to the same $D$-dimensional space, one on the way in,
one on the way out, and GPT-2 uses one matrix for both, $W^{(p)} = E^{\top}$
{cite:p}`press2017,radford2019`. This *weight tying* saves $K \times D$ parameters and
tends to help: every output gradient also trains the embedding of the token it is about.
In `llmkit`, `lm_head.weight` *is* `wte.weight`, one tensor.

How much it saves depends on the vocabulary. For our 65 characters it is about one per
cent of the model; for GPT-2's 50,257 subword tokens it is 38.6 million parameters, as
many as 31 % of the whole tied model. (The GPT-2 model below is built on PyTorch's
`meta` device: shapes only, no memory.)
""")

code(CHECK + r"""
print("lm_head.weight is wte.weight:", demo.lm_head.weight is demo.wte.weight)
with torch.device("meta"):
    gpt2_small = GPT(GPTConfig(vocab_size=50_257, block_size=1024, n_layer=12,
                               n_head=12, d_model=768))

print(f"{'model':<22} {'tied':>12} {'untied':>12} {'K x D saved':>12}")
for name, m in [("characters (this one)", demo), ("GPT-2 small", gpt2_small)]:
    tied = m.num_parameters()
    saved = m.config.vocab_size * m.config.d_model
    print(f"{name:<22} {tied:>12,} {tied + saved:>12,} {saved:>12,} "
          f"({saved / tied:.0%} of tied)")
""")

md(r"""
GPT-2 small's count, 124,439,808, is the one usually quoted as "124M"; chapter 7 returns
to counting parameters.

### Scaled residual initialisation

Every block *adds* to the residual stream twice: $x \leftarrow x + \mathrm{attn}(\mathrm{LN}(x))$,
then $x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$. At initialisation these additions are
roughly independent, so their variances add up and the stream grows with depth. GPT-2
initialises the two projections that write into the stream with a standard deviation
scaled by $1/\sqrt{2L}$ (0.02 for every other weight) {cite:p}`radford2019`, so
that the $2L$ additions together have the size of one. The figure measures the
standard deviation of the stream after each block of a freshly initialised 24-block
model, with and without the scaling:
""")

code(r"""
def residual_stds(model: GPT, ids: torch.Tensor) -> list[float]:
    stds = []
    with torch.no_grad():
        h = model.wte(ids) + model.wpe(ids.shape[1])
        stds.append(h.std().item())
        for block in model.blocks:
            h, _ = block(h)
            stds.append(h.std().item())
    return stds

torch.manual_seed(SEED)
deep = GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=128, n_layer=24,
                     n_head=4, d_model=128))
probe = torch.randint(0, chars.vocab_size, (8, 128), generator=torch.Generator().manual_seed(SEED))
scaled = residual_stds(deep, probe)
with torch.no_grad():
    for block in deep.blocks:  # undo the scaling: plain N(0, 0.02^2)
        torch.nn.init.normal_(block.attn.proj.weight, std=0.02)
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.02)
unscaled = residual_stds(deep, probe)

fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(unscaled, "s-", ms=3, label="std 0.02 everywhere")
ax.plot(scaled, "o-", ms=3, label=r"residual projections std $0.02/\sqrt{2L}$")
ax.set_xlabel("blocks applied")
ax.set_ylabel("std of the residual stream")
ax.set_title("A 24-block GPT at initialisation")
ax.legend()
plt.show()
print(f"after 24 blocks: {unscaled[-1]:.3f} unscaled, {scaled[-1]:.3f} scaled "
      f"(embeddings: {scaled[0]:.3f})")
""")

md(r"""
## Pretraining a character-level GPT

We now train a GPT on tinyshakespeare: 1.0 million training characters, 65 distinct
ones, the same split as chapter 1. The recipe depends on the profile. In the `book`
profile it is a 4-block model of width 128 with a context of 128 characters, trained
with batches of 32 windows for 2,000 steps: small enough to train on two CPU cores in
about seven minutes, large enough to go well below nanoGPT's CPU configuration
{cite:p}`karpathy2022nanogpt`. Dropout is off, because a model this small trained this
briefly underfits rather than overfits. The `full` profile uses nanoGPT's GPU
configuration (6 blocks, width 384, context 256, dropout 0.2, 5,000 steps).
""")

code(r"""
recipe = char_gpt_recipe()
print(json.dumps(recipe, indent=1))
""")

md(r"""
Training uses `llmkit.train.train`, the one loop of the course: AdamW with weight decay
on the matrices only, a linear warm-up and a cosine decay of the learning rate to a
tenth of its peak, gradient clipping at norm 1, and an evaluation on the same
validation windows every 100 steps.

`llmkit.pretrained.char_gpt()` wraps it: the first call trains the model and saves it in
the cache (`~/.cache/llmkit/models/`, or `$LLMKIT_CACHE`), and later calls load it.
Chapter 4 calls the same function, so it decodes with this very model, and each notebook
still runs on its own from a fresh clone. The lines below are printed during training
(or say where the model was loaded from):
""")

code(r"""
model, tok, info = char_gpt()
device = next(model.parameters()).device
history = info["history"]
assert tok.vocab == chars.vocab
print(f"{info['n_parameters']:,} parameters, {info['steps']} steps, "
      f"{info['tokens_seen']:,} training characters seen, {info['train_seconds']:.0f} s")
""")

md(r"""
The loss curves, against steps and against wall time. The training loss (every step,
smoothed) and the validation loss (every 100 steps, on 10 fixed batches) stay close
together: the model is not overfitting.
""")

code(r"""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
plot_history(history, ax=axes[0], x="step", smooth=0.9)
plot_history(history, ax=axes[1], x="seconds", smooth=0.9)
for ax in axes:
    ax.set_ylim(1.0, 3.0)
axes[0].set_title("against optimizer steps")
axes[1].set_title(f"against wall time ({info['hardware']})")
plt.tight_layout()
plt.show()
""")

md(r"""
### The validation loss

The number we report is the loss on the *whole* validation split: its 111,540 characters
are cut into consecutive windows of the context length, and every character is
predicted once (`llmkit.pretrained.evaluate_lm`). nanoGPT averages 200 random windows
instead; on the same split, both estimate the same quantity. Chapter 1's character bigram
model is the baseline:
""")

code(r"""
bigram = BigramLM.from_counts(bigram_counts(train_ids, chars.vocab_size), alpha=1.0)
bigram_loss = evaluate(bigram, val_ids)

anchors = [
    ("character bigram (chapter 1)", bigram_loss),
    ("nanoGPT, CPU configuration", 1.88),
    ("target of the book profile", 1.70),
    ("nanoGPT, GPU configuration", 1.47),
]
fig, ax = plt.subplots(figsize=(8, 4.2))
ax.plot(history.val_seconds, history.val_loss, "o-", ms=3, color="C1",
        label="this GPT, validation (10 batches)")
ax.plot([info["train_seconds"]], [info["val_loss"]], "*", ms=14, color="C3",
        label=f"final, whole validation split: {info['val_loss']:.3f}")
styles = ["-.", ":", "--", ":"]
for (name, value), style in zip(anchors, styles):
    ax.axhline(value, color="gray", ls=style, lw=1)
    ax.annotate(f"{name}: {value:.2f}", (0, value), xytext=(4, 3),
                textcoords="offset points", fontsize=8, color="dimgray")
ax.set_ylim(1.3, 3.0)
ax.set_xlabel("wall time of training (s)")
ax.set_ylabel("validation loss (nats/character)")
ax.set_title(f"Character-level GPT on tinyshakespeare: {profile.current()} profile, "
             f"{info['steps']} steps, seed {info['seed']}\n{info['hardware']}",
             fontsize=10)
ax.legend(loc="upper right")
plt.show()
""")

md(r"""
### What the context buys

The bigram model sees one character; the GPT sees up to 128 (in the `book` profile).
Scoring every position of many validation windows separately shows how much each extra
character of context is worth. At the first position the GPT, like the bigram model,
knows a single character; the loss falls steeply over the first few characters (the
rest of the current word) and keeps falling slowly across the whole window:
""")

code(r"""
T = model.config.block_size
n_windows = min(cfg["context_windows"], (len(val_ids) - 1) // T)
xv = val_ids[: n_windows * T].view(n_windows, T).to(device)
yv = val_ids[1 : n_windows * T + 1].view(n_windows, T).to(device)
with torch.no_grad():
    by_position = torch.cat([
        F.cross_entropy(model(xv[i : i + 64]).transpose(1, 2), yv[i : i + 64],
                        reduction="none")
        for i in range(0, n_windows, 64)
    ]).mean(dim=0).cpu()

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(range(1, T + 1), by_position, lw=1.5, label="GPT")
ax.axhline(bigram_loss, color="gray", ls="-.", label="character bigram")
ax.set_xscale("log")
ax.set_xlabel("characters of context (position in the window)")
ax.set_ylabel("validation loss (nats)")
ax.set_title(f"Loss by position, {n_windows} validation windows")
ax.legend()
plt.show()
print(f"position 1: {by_position[0]:.3f}   position {T}: {by_position[-1]:.3f}")
""")

md(r"""
### Samples

Generation starts from the newline and draws each next character from the model's
distribution (temperature 1, no filtering; chapter 4 compares the alternatives). With
the `book` model the text has names, line breaks and mostly real words, though no
sense:
""")

code(r"""
start = torch.tensor([tok.encode("\n")], device=device)
out = model.generate(start, cfg["sample_chars"], strategy="sample",
                     generator=torch.Generator(device=device).manual_seed(SEED))
print(tok.decode(out[0].tolist()))
""")

md(r"""
## Inference: one token at a time

Generation is a loop. Each step runs the model on everything so far, keeps only the
last row of logits (the distribution of the next token), picks a token, here the most
probable one (greedy decoding), and appends it. The first steps from the prompt
`"ROMEO:\nI"`, with the three most probable next characters at each:
""")

code(r"""
ids = torch.tensor([tok.encode("ROMEO:\nI")], device=device)
with torch.no_grad():
    for step in range(8):
        logits = model(ids)                       # (1, n, K): one row per position
        probs = logits[0, -1].softmax(dim=-1)     # only the last row is used
        top = probs.topk(3)
        shown = "  ".join(f"{tok.decode([int(i)])!r} {p:.2f}"
                          for p, i in zip(top.values, top.indices))
        ids = torch.cat([ids, top.indices[:1].view(1, 1)], dim=1)
        print(f"step {step + 1}: n = {ids.shape[1] - 1:>2} tokens in  ->  {shown}")
print(repr(tok.decode(ids[0].tolist())))
""")

md(r"""
Each step ran the model over the whole prefix and threw away all but one row. That is
the price of using the training-time computation at inference time, and it is avoidable.

## The KV cache

In causal attention, the key and value vectors of position $m$ depend only on the
tokens at positions $\le m$. Appending a token changes nothing at the earlier positions:
their keys and values, in every layer, are the same as in the previous step. So we keep
them. The *KV cache* stores each layer's keys and values, and each generation step

1. runs the model on the **new token only**, computing its query, key and value in
   every layer,
2. appends the new key and value to that layer's cache,
3. lets the new query attend over all the cached keys and values.

The result is the same next-token distribution, computed from one row instead of $n$.
`GPT.forward_with_cache(ids, cache)` implements this protocol (the first call passes the
prompt and an empty cache, later calls one token each).

What it saves: without the cache, step $n$ pushes all $n$ tokens through the $L$ blocks,
so generating $N$ tokens processes $1 + 2 + \dots + N = N(N+1)/2$ token positions:
quadratic in $N$. With the cache, each step processes one position: $N$ in all, linear in
$N$. (The attention of the new token still reads all $n$ cached keys, but that is a
$D$-wide dot product per cached token, small next to the $12 D^2$ multiply-adds per token
in each block's matrices.) The price is memory, $2 \times L \times n \times D$ numbers
per sequence.

We time both loops, greedy, from the newline up to the full context window, recording
the time of each step:
""")

code(r"""
def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()

@torch.no_grad()
def greedy_timed(model: GPT, ids: torch.Tensor, n: int, use_cache: bool):
    # Greedy decoding; returns the ids and the seconds of each step.
    seconds = []
    cache, new = model.new_cache(), ids
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        if use_cache:
            logits, cache = model.forward_with_cache(new, cache)   # only new tokens
        else:
            logits = model(ids)                                    # everything so far
        new = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, new], dim=1)
        sync()
        seconds.append(time.perf_counter() - t0)
    return ids, seconds

n_new = model.config.block_size - 1  # fill the context window exactly
runs = {True: [], False: []}
for _ in range(cfg["kv_repeats"]):
    for use_cache in (False, True):
        out, secs = greedy_timed(model, start, n_new, use_cache)
        runs[use_cache].append((out, secs))

with_cache = runs[True][0][0]
without_cache = runs[False][0][0]
print("identical tokens with and without the cache:", torch.equal(with_cache, without_cache))
print("identical to model.generate(use_cache=False):",
      torch.equal(with_cache, model.generate(start, n_new, use_cache=False)))
step_ms = {c: torch.tensor([s for _, s in runs[c]]).median(dim=0).values * 1e3
           for c in runs}
total = {c: float(step_ms[c].sum()) / 1e3 for c in runs}
print(f"{n_new} tokens: {total[False]:.3f} s without the cache, {total[True]:.3f} s with it "
      f"({total[False] / total[True]:.1f}x faster)")
print(f"token positions processed: {n_new * (n_new + 1) // 2:,} without, {n_new} with")
""")

code(r"""
n_axis = torch.arange(1, n_new + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(n_axis, step_ms[False], lw=1, label="without cache")
axes[0].plot(n_axis, step_ms[True], lw=1, label="with KV cache")
axes[0].set_xlabel("tokens in the context at this step")
axes[0].set_ylabel("time of the step (ms)")
axes[0].set_title("One step")
axes[1].plot(n_axis, step_ms[False].cumsum(0) / 1e3, label="without cache")
axes[1].plot(n_axis, step_ms[True].cumsum(0) / 1e3, label="with KV cache")
axes[1].set_xlabel("tokens generated")
axes[1].set_ylabel("total time (s)")
axes[1].set_title("All steps so far")
for ax in axes:
    ax.legend()
fig.suptitle(f"Greedy generation, {device.type}, median of {cfg['kv_repeats']} run(s)")
plt.tight_layout()
plt.show()
""")

md(r"""
Without the cache, the time of a step grows with the number of tokens already
generated, so the total grows quadratically; with the cache, each step costs about the
same, so the total grows linearly. On a CPU and with a model this small, a fixed cost per
step (Python and the launch of each operation) hides part of the difference for short
contexts; the gap widens with longer contexts and bigger models. Both loops produce the
same tokens: the cache changes the cost, not the result.

The cache's memory grows with the context. For GPT-2 small, at its full context of
1,024 tokens, in 32-bit floats:
""")

code(CHECK + r"""
L, D, n_ctx = 12, 768, 1024
numbers = 2 * L * n_ctx * D  # a key and a value per layer, position and channel
print(f"{numbers:,} numbers = {numbers * 4 / 2**20:.0f} MiB per sequence")
""")

md(r"""
## Summary

- A GPT is a decoder-only transformer: embeddings, $L$ causal blocks, and an output
  projection $W^{(p)}$ with a softmax that turns each position's vector into a
  distribution over the $K$ tokens of the vocabulary.
- Training predicts every next token at once: the input is the sequence offset by one
  (a `<start>` token in front, or the first character of a window), the targets are the
  sequence itself, and the causal mask keeps each prediction from seeing its answer.
- Inference predicts one token at a time and feeds it back. The KV cache keeps the keys
  and values of earlier positions, which never change, so each step processes one token:
  linear instead of quadratic total work, for the same output.
- GPT-2 ties the output projection to the token embedding, saving $K \times D$
  parameters (38.6 million in GPT-2 small), and scales the initialisation of the
  residual projections by $1/\sqrt{2L}$.
- A 0.8-million-parameter character-level GPT, trained for a few minutes on two CPU
  cores with the course's training loop, predicts Shakespeare far better than the
  bigram model of chapter 1.

### This chapter's numbers

The record below is printed by the notebook. nanoGPT reports a validation loss of about
1.88 for its CPU configuration (4 blocks, width 128, context 64, batch 12, 2,000
steps, about three minutes on a laptop CPU) and 1.47 for its GPU configuration (the
`full` recipe here, about three minutes on an A100) {cite:p}`karpathy2022nanogpt`.
Our `book` recipe sits between the two: a longer context and a larger batch than the
CPU configuration, trained for about seven minutes on two cores.
""")

code(r"""
print(f"profile           : {profile.current()} (seed {info['seed']})")
print(f"hardware          : {info['hardware']}, torch {info['torch_version']}")
mc = info["model_config"]
print(f"model             : {info['n_parameters']:,} parameters; {mc['n_layer']} blocks, "
      f"{mc['n_head']} heads, width {mc['d_model']}, context {mc['block_size']}")
print(f"training          : {info['steps']} steps of {info['batch_size']} windows, "
      f"{info['tokens_seen']:,} characters, {info['train_seconds']:.0f} s")
print(f"validation loss   : {info['val_loss']:.4f} nats/character (whole split), "
      f"perplexity {math.exp(info['val_loss']):.2f}")
print(f"anchors           : nanoGPT 1.88 (CPU configuration), 1.47 (GPU configuration); "
      f"character bigram {bigram_loss:.4f}")
print(f"KV cache          : {n_new} greedy tokens {total[False] / total[True]:.1f}x faster")
print(f"notebook time     : {time.perf_counter() - started:.0f} s "
      f"({'model loaded from the cache' if info['cached'] else 'model trained here'})")
""")

md(r"""
## References

The GPT architecture is from {cite:t}`radford2018` and GPT-2 {cite:p}`radford2019`,
built on the transformer of {cite:t}`vaswani2017`. The decoder with its `<start>`
offset and output projection follows {cite:t}`bishop2024`, as presented in the lecture
notes of {cite:t}`pellert2024` and {cite:t}`kamper2024`. Weight tying is due to
{cite:t}`press2017`. The character-level configurations and their validation losses are
nanoGPT's {cite:p}`karpathy2022nanogpt`, and Karpathy's lecture {cite:p}`karpathy2023`
builds the same model step by step; the data set is from {cite:t}`karpathy2015`. Full
entries are in the [bibliography](../bibliography).
""")

build(cells, "ch03", "/work/main/chapters/03_gpt.ipynb")
print("built", len(cells), "cells")
