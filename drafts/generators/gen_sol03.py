import sys

sys.path.insert(0, "/work/main/.notes")
from nbgen import build

cells = []
md = lambda s, **m: cells.append(("md", s, m))
code = lambda s, **m: cells.append(("code", s, m))


def solution(ex, s):
    cells.append(("code", s, {"llmkit": {"exercise": ex}}))


def check(ex, points, s):
    cells.append(("code", s, {"tags": ["grade"], "llmkit": {"exercise": ex, "points": points}}))


md(r"""
# Lab 3: GPT

In this lab you write the parts of chapter 3 that make a GPT a language model: the loss
that scores every next token at once, the whole forward pass from a table of weights,
greedy generation with a KV cache, and the parameter count.

**How it works.** Each exercise is a function whose body raises
`NotImplementedError`. Replace that line with your code and run the cell. The cell after
it is a *check*: it calls your function on fresh random inputs, compares the results
with `llmkit`'s GPT, and prints one line when everything matches. When a check fails it
says what differs and gives a hint.

**Where to work.** Work on a copy, so that regenerating the labs never touches your
answers: `make lab` (from the repository root) copies every lab into `work/` and opens
JupyterLab there.

**Grading.** When you are done, save the notebook and run, from the repository root:

```bash
.venv/bin/llmkit grade work/03_gpt.ipynb
```

The grader takes your functions (the `def`s, classes, imports and constants in your
notebook), puts them into the official lab, runs the official checks with a time limit
per cell, and prints your points per exercise. There are 10 points in all.

Use only Python and PyTorch in your answers; `llmkit`'s own GPT is what your functions
are compared with, so do not call it.
""")

code(r"""
import math

import torch
import torch.nn.functional as F
""")

md(r"""
## Exercise 1: the language-model loss (2 points)

A GPT predicts every next token at once. For a batch of windows `x` of shape
`(batch, seq)`, `model(x)` returns `logits` of shape `(batch, seq, K)`, where row `n`
scores the token that follows `x[:, n]`; `targets` has shape `(batch, seq)` and holds
those next tokens (the inputs shifted by one, so they are already aligned with the
logits).

Write `lm_loss(logits, targets)`: the mean, over all positions, of the negative
log-probability that the softmax of the logits gives the target token. Positions whose
target is `-100` are ignored: they count neither in the sum nor in the number of
positions (chapter 9 uses this to train on the answers of a chat and not on its
prompts).

Compute it yourself with `log_softmax` (or `logsumexp`) and `gather`, not with
`F.cross_entropy`, and return a scalar tensor, so that `loss.backward()` works.
""")

solution("lm_loss", r"""
def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # logits: (batch, seq, K); targets: (batch, seq), -100 = ignore. Returns a scalar.
    ### BEGIN SOLUTION
    log_probs = logits.log_softmax(dim=-1)                      # (batch, seq, K)
    keep = targets != -100
    safe = targets.masked_fill(~keep, 0)                        # any valid index
    nll = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (batch, seq)
    return (nll * keep).sum() / keep.sum()
    ### END SOLUTION
""")

check("lm_loss", 2, r"""
from llmkit.course.checks import ch03

ch03.check_lm_loss(lm_loss)
""")

md(r"""
## Exercise 2: the forward pass from the weights (4 points)

Now the whole model. `params` is the `state_dict()` of an `llmkit` GPT: a dict from names
to tensors. With `d` the model width, `K` the vocabulary size and `L` the number of
blocks, it holds:

| name | shape | what |
|---|---|---|
| `wte.weight` | `(K, d)` | token embedding $E$ (also the output projection) |
| `wpe.weight` | `(block_size, d)` | position embedding, one row per position |
| `blocks.{i}.ln_1.weight`, `.bias` | `(d,)` | LayerNorm before attention |
| `blocks.{i}.attn.qkv.weight`, `.bias` | `(3d, d)`, `(3d,)` | queries, keys and values in one matrix |
| `blocks.{i}.attn.proj.weight`, `.bias` | `(d, d)`, `(d,)` | attention output projection |
| `blocks.{i}.ln_2.weight`, `.bias` | `(d,)` | LayerNorm before the MLP |
| `blocks.{i}.mlp.fc.weight`, `.bias` | `(4d, d)`, `(4d,)` | MLP, first layer |
| `blocks.{i}.mlp.proj.weight`, `.bias` | `(d, 4d)`, `(d,)` | MLP, second layer |
| `ln_f.weight`, `.bias` | `(d,)` | final LayerNorm |
| `lm_head.weight` | `(K, d)` | the same tensor as `wte.weight` (weight tying) |

The linear layers are PyTorch's: `y = x @ W.T + b`. Write
`gpt_forward(params, ids, n_head)`, returning the logits `(batch, seq, K)` for `ids` of
shape `(batch, seq)`:

1. `x = wte[ids] + wpe[:seq]`;
2. for each block `i = 0 .. L-1` (count them from the keys):
   - `h = LayerNorm_1(x)`; `q, k, v` = the three `d`-wide thirds of `h @ qkv.T + b`, each
     split into `n_head` heads of width `d // n_head` (shape `(batch, n_head, seq, d // n_head)`);
   - causal attention per head: scores `q k^T / sqrt(d // n_head)`, `-inf` above the
     diagonal, softmax over the keys, times `v`; heads concatenated back to `(batch, seq, d)`;
   - `x = x + proj(attention)`;
   - `x = x + mlp_proj(GELU(mlp_fc(LayerNorm_2(x))))`, with GPT-2's tanh approximation
     `F.gelu(..., approximate="tanh")`;
3. `x = LayerNorm_f(x)`; logits `= x @ wte.T`.

All LayerNorms use `eps=1e-5`; `F.layer_norm(x, (d,), weight, bias, eps=1e-5)` is
allowed, and so is `F.scaled_dot_product_attention`. The check compares your logits with
`llmkit`'s GPT on random small models, in float64.
""")

solution("gpt_forward", r"""
def gpt_forward(
    params: dict[str, torch.Tensor], ids: torch.Tensor, n_head: int
) -> torch.Tensor:
    # params: a GPT state dict; ids: (batch, seq). Returns logits (batch, seq, K).
    ### BEGIN SOLUTION
    def linear(x, name):
        return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def layer_norm(x, name):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        return F.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)

    batch, seq = ids.shape
    x = params["wte.weight"][ids] + params["wpe.weight"][:seq]  # (batch, seq, d)
    d = x.shape[-1]
    head = d // n_head
    n_layer = len({key.split(".")[1] for key in params if key.startswith("blocks.")})
    future = torch.ones(seq, seq, dtype=torch.bool).triu(diagonal=1)
    for i in range(n_layer):
        p = f"blocks.{i}"
        q, k, v = linear(layer_norm(x, f"{p}.ln_1"), f"{p}.attn.qkv").split(d, dim=-1)
        q, k, v = (z.view(batch, seq, n_head, head).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(head)  # (batch, heads, seq, seq)
        scores = scores.masked_fill(future, float("-inf"))
        att = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, seq, d)
        x = x + linear(att, f"{p}.attn.proj")
        h = F.gelu(linear(layer_norm(x, f"{p}.ln_2"), f"{p}.mlp.fc"), approximate="tanh")
        x = x + linear(h, f"{p}.mlp.proj")
    return layer_norm(x, "ln_f") @ params["wte.weight"].T
    ### END SOLUTION
""")

check("gpt_forward", 4, r"""
from llmkit.course.checks import ch03

ch03.check_gpt_forward(gpt_forward)
""")

md(r"""
## Exercise 3: greedy generation with a KV cache (3 points)

At inference time a GPT predicts one token at a time. Without a cache, every step runs
the model over the whole sequence so far; with a KV cache, the keys and values of the
earlier positions are kept, and each step feeds only the newest token.

An `llmkit` GPT offers the cache protocol:

- `cache = model.new_cache()` makes an empty cache;
- `logits, cache = model.forward_with_cache(new_ids, cache)` runs the model on the
  tokens `new_ids` of shape `(batch, m)`, which continue the sequence already in the cache;
  it returns their logits `(batch, m, K)` and the extended cache.

Write `generate_with_cache(model, ids, n)`: greedy decoding of `n` new tokens after the
prompt `ids` of shape `(batch, t)`. Feed the prompt once; then, `n` times, take the
`argmax` of the *last* position's logits as the next token and feed only that token.
Return the prompt followed by the `n` new tokens, `(batch, t + n)`. You may assume
`t + n <= model.config.block_size`.

The check compares your tokens with greedy decoding by full recomputation, and counts
the tokens your function feeds to the model: recomputing the whole sequence at each
step gives the right answer, but not the points.
""")

solution("generate_with_cache", r"""
def generate_with_cache(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    # Greedy decoding of n tokens after ids (batch, t), feeding one new token per step.
    ### BEGIN SOLUTION
    logits, cache = model.forward_with_cache(ids, model.new_cache())
    out = ids
    for step in range(n):
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (batch, 1)
        out = torch.cat([out, next_id], dim=1)
        if step < n - 1:
            logits, cache = model.forward_with_cache(next_id, cache)
    return out
    ### END SOLUTION
""")

check("generate_with_cache", 3, r"""
from llmkit.course.checks import ch03

ch03.check_generate_with_cache(generate_with_cache)
""")

md(r"""
## Exercise 4: counting parameters (1 point)

Write `gpt_num_parameters(vocab_size, block_size, n_layer, d_model, tied=True)`: the
number of parameters of a GPT with the names in the table of exercise 2 (with biases).
With `tied=True` the output projection is the token embedding and counts once; with
`tied=False` it is a separate `(vocab_size, d_model)` matrix without bias. The number of
heads does not matter (why?). Check your formula on GPT-2 small: 124,439,808.
""")

solution("gpt_num_parameters", r"""
def gpt_num_parameters(
    vocab_size: int, block_size: int, n_layer: int, d_model: int, tied: bool = True
) -> int:
    ### BEGIN SOLUTION
    d = d_model
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d)
    per_block += 4 * d * d + d
    total = vocab_size * d + block_size * d + n_layer * per_block + 2 * d
    return total if tied else total + vocab_size * d
    ### END SOLUTION
""")

check("gpt_num_parameters", 1, r"""
from llmkit.course.checks import ch03

ch03.check_num_parameters(gpt_num_parameters)
""")

md(r"""
## Putting it together

Your functions, applied to the character-level GPT of chapter 3: `char_gpt()` loads it
from the cache if you ran the chapter, and otherwise trains it first (seconds in the
`smoke` profile, about seven minutes on two CPU cores in the `book` profile). Your
forward pass and loss should reproduce the model's, your generator its greedy
continuation, and your formula its size. This cell is not graded.
""")

code(r"""
from llmkit.pretrained import char_gpt

model, tok, info = char_gpt()
model = model.cpu()
params = model.state_dict()
text = "ROMEO:\nBut soft, what light through yonder window breaks?"
ids = torch.tensor([tok.encode(text)])[:, : model.config.block_size + 1]
with torch.no_grad():
    mine = gpt_forward(params, ids[:, :-1], model.config.n_head)
    print("logits match:", torch.allclose(mine, model(ids[:, :-1]), atol=1e-4))
    print(f"loss on the line: {lm_loss(mine, ids[:, 1:]):.4f} "
          f"(model.loss: {model.loss(ids[:, :-1], ids[:, 1:]):.4f})")
    prompt = torch.tensor([tok.encode("ROMEO:\n")])
    out = generate_with_cache(model, prompt, 60)
    print("same as model.generate:", torch.equal(out, model.generate(prompt, 60)))
print(repr(tok.decode(out[0].tolist())))
c = model.config
count = gpt_num_parameters(c.vocab_size, c.block_size, c.n_layer, c.d_model,
                           tied=True)
print(f"{count:,} parameters by your formula, {model.num_parameters():,} in the model")
""")

build(cells, "lab03", "/work/main/solutions/03_gpt.ipynb", nb_meta={"llmkit": {"lab": "03_gpt"}})
print("built", len(cells))
