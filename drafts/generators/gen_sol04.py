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
# Lab 4: Decoding strategies

A language model gives you a distribution over the next token; a *decoding strategy*
turns it into text. In this lab you write the pieces of chapter 4 that every text
generator is made of: the three ways of reshaping the next-token distribution before
sampling (temperature, top-k, top-p), the pipeline that combines them, and the pruning
step at the heart of beam search. Then you use your functions to generate Shakespeare
from a small model and compare the result, token for token, with `llmkit`.

**How it works.** Each exercise is a function whose body raises
`NotImplementedError`. Replace that line with your code and run the cell. The cell after
it is a *check*: it calls your function on fresh random inputs (ties and `-inf` entries
included), compares the results with `llmkit.decoding`, and prints one line when
everything matches. When a check fails it shows the first input where your answer
differs, what was expected, and a hint.

**Where to work.** Work on a copy, so that regenerating the labs never touches your
answers: `make lab` (from the repository root) copies every lab into `work/` (once;
it never overwrites) and opens JupyterLab there.

**Grading.** When you are done, save the notebook and run, from the repository root:

```bash
.venv/bin/llmkit grade work/04_decoding.ipynb
```

The grader takes your functions (the `def`s, classes, imports and constants in your
notebook), puts them into the official lab, runs the official checks with a time limit
per cell, and prints your points per exercise. Editing a check cell, or code outside
your functions, changes nothing. There are 10 points in all.

Use only Python and PyTorch in your answers; do not import the functions from
`llmkit` that you are asked to write.
""")

code(r"""
import torch
import torch.nn.functional as F

from llmkit import data
from llmkit.bigram import BigramLM, bigram_counts
from llmkit.decoding import beam_search, sample
from llmkit.tokenizers import CharTokenizer

splits = data.load_tinyshakespeare()
chars = CharTokenizer.train(splits["train"] + splits["val"])
train_ids = torch.tensor(chars.encode(splits["train"]))
# A small language model to generate with: chapter 1's bigram model, whose
# logits (batch, seq, vocab) depend on the previous character only.
model = BigramLM.from_counts(bigram_counts(train_ids, chars.vocab_size), alpha=1.0)
print(f"vocabulary of {chars.vocab_size} characters; model: {type(model).__name__}")
""")

md(r"""
## Conventions

All functions work on *logits*, the unnormalised scores a model outputs, of shape
`(..., V)`: the last dimension runs over the vocabulary of `V` tokens, and any leading
dimensions (batch, position) are left alone. The probabilities are
`torch.softmax(logits, dim=-1)`.

A filter removes a token by setting its logit to `float("-inf")`: its probability after
the softmax is exactly 0, and it can never be sampled. This is how Hugging Face
`transformers` does it, and it lets filters be chained: each one receives the logits the
previous one returned. Never modify the input tensor; return a new one.

## Exercise 1: temperature (1 point)

The temperature $T > 0$ divides the logits before the softmax:

$$
p_i = \frac{\exp(a_i / T)}{\sum_j \exp(a_j / T)}.
$$

$T < 1$ sharpens the distribution (as $T \to 0$ it puts all the mass on the most
probable token, like greedy decoding), $T = 1$ leaves it unchanged, and $T > 1$ flattens
it (as $T \to \infty$ it becomes uniform). Write `apply_temperature(logits, temperature)`,
which returns the scaled **logits** (no softmax).
""")

solution("apply_temperature", r"""
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # logits: (..., V) -> (..., V), divided by the temperature
    ### BEGIN SOLUTION
    return logits / temperature
    ### END SOLUTION
""")

check("apply_temperature", 1, r"""
from llmkit.course.checks import ch04

ch04.check_apply_temperature(apply_temperature)
""")

md(r"""
## Exercise 2: top-k (2 points)

Top-k sampling {cite:p}`fan2018` keeps, in each row, only the $k$ most probable tokens,
and renormalises over them. Write `top_k_filter(logits, k)`:

- find the $k$-th largest logit of each row (`torch.topk` returns the $k$ largest values,
  sorted; keep the last dimension with `values[..., -1:]` so that it broadcasts);
- set every logit **strictly smaller** than it to `-inf`.

Two details are graded, because they are where implementations differ:

- **ties**: logits equal to the $k$-th largest are all kept, so a row may keep more than
  $k$ tokens (`top_k_filter(torch.tensor([1., 3., 2., 3.]), 1)` keeps both 3s);
- **$k \ge V$** keeps every token (`torch.topk` refuses a $k$ larger than the row).
""")

solution("top_k_filter", r"""
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    # Keep the k largest logits of each row (and ties with the k-th); the rest -> -inf.
    ### BEGIN SOLUTION
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))
    ### END SOLUTION
""")

check("top_k_filter", 2, r"""
from llmkit.course.checks import ch04

ch04.check_top_k_filter(top_k_filter)
""")

md(r"""
## Exercise 3: top-p, nucleus sampling (3 points)

A fixed $k$ is too many tokens when the model is sure (a sharp distribution) and too few
when it is not (a flat one). Nucleus sampling {cite:p}`holtzman2020` adapts: it keeps
the **smallest set of most probable tokens whose total probability reaches $p$**, the
*nucleus*, and removes the long tail of improbable tokens.

Write `top_p_filter(logits, p)` for $0 < p \le 1$:

1. compute the probabilities and sort them in descending order, remembering where each
   came from (`sort` returns the indices);
2. for each sorted token, compute the probability of the tokens *before* it (the more
   probable ones): a cumulative sum, shifted by one;
3. keep the token if that mass is still below $p$, remove it otherwise: so the token
   whose probability crosses $p$ is **kept**;
4. map the decision back to the original token positions (`scatter` with the sort
   indices) and set the removed logits to `-inf`.

With probabilities $(0.5, 0.3, 0.15, 0.05)$ and $p = 0.7$ the nucleus is the first two
tokens: $0.5 < 0.7 \le 0.5 + 0.3$. The most probable token is always kept. Tokens that
are already `-inf` stay `-inf`. (When tied tokens straddle the threshold, you may keep
any of them: the check compares which logit *values* each row keeps.)
""")

solution("top_p_filter", r"""
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    # Keep the smallest set of most probable tokens whose probability reaches p.
    ### BEGIN SOLUTION
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    remove_sorted = mass_before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))
    ### END SOLUTION
""")

check("top_p_filter", 3, r"""
from llmkit.course.checks import ch04

ch04.check_top_p_filter(top_p_filter)
""")

md(r"""
## Exercise 4: the sampling distribution (1 point)

A sampler combines the three: first the temperature, then top-k, then top-p, then the
softmax. This is the order of `transformers`' `generate`, and the order matters: the
nucleus of a flattened distribution (high $T$) holds more tokens than that of a sharp
one, and top-p after top-k measures $p$ within the renormalised top $k$.

Write `sampling_probs(logits, temperature=1.0, top_k=None, top_p=None)`, which returns
the **probabilities** to sample from; `None` switches a filter off. Call your functions
from exercises 1 to 3 (the check grades this exercise with `llmkit`'s filters, so a
mistake there does not cost you points twice).
""")

solution("sampling_probs", r"""
def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    # (..., V) logits -> (..., V) probabilities: temperature, top-k, top-p, softmax.
    ### BEGIN SOLUTION
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)
    ### END SOLUTION
""")

check("sampling_probs", 1, r"""
from llmkit.course.checks import ch04

ch04.check_sampling_probs(sampling_probs)
""")

md(r"""
### Generating with your sampler

A sampler is now a loop: compute the logits of the text so far, turn the last position's
logits into probabilities with your `sampling_probs`, draw one token with
`torch.multinomial`, append it, repeat. With the same seeded generator, your loop should
produce exactly the text of `llmkit.decoding.sample`, character for character, because
both draw from the same distribution with the same random numbers. This cell is not
graded.
""")

code(r"""
@torch.no_grad()
def my_sample(model, ids, n_new, generator, **settings):
    for _ in range(n_new):
        logits = model(ids[None])[0, -1]  # (V,)
        probs = sampling_probs(logits, **settings)
        nxt = torch.multinomial(probs[None], 1, generator=generator)[0]
        ids = torch.cat([ids, nxt])
    return ids


prompt = torch.tensor(chars.encode("ROMEO:\n"))
for settings in [{}, {"temperature": 0.6}, {"top_k": 5}, {"top_p": 0.8}]:
    mine = my_sample(model, prompt, 60, torch.Generator().manual_seed(0), **settings)
    ref = sample(model, prompt, 60, generator=torch.Generator().manual_seed(0), **settings)
    same = "same as llmkit" if torch.equal(mine, ref) else "DIFFERS from llmkit"
    print(f"{str(settings):<22} {same}: {chars.decode(mine.tolist())[7:]!r}")
""")

md(r"""
## Exercise 5: the pruning step of beam search (3 points)

Beam search keeps the $B$ most probable partial sequences, the *beams* (the beam width
$B$). Each beam $i$ has a running score `sums[i]`, the sum of the log-probabilities of
its tokens. One step of the search:

1. run the model on every beam and take the log-probabilities of the next token,
   `logprobs[i, v]` for beam $i$ and token $v$ (shape `(n, V)` for $n$ live beams);
2. every extension of beam $i$ by token $v$ is a candidate with score
   `sums[i] + logprobs[i, v]`; there are $n \times V$ of them;
3. keep the $B$ best candidates, **all beams together**: a strong beam may supply
   several survivors and a weak one none.

The lecture describes step 3 as taking the $B$ best tokens of each beam, $B^2$
candidates, and pruning them to $B$; ranking all $n \times V$ at once gives the same
survivors, because no beam's $(B+1)$-th best token can beat $B$ candidates of its own.

Write `beam_search_step(sums, logprobs, beam_width)`, which returns a tuple
`(scores, parents, tokens)` of three 1-D tensors of length $\min(B, n V)$, **best
first**: the survivors' scores, the beam each survivor extends, and the token it
appends. (Hint: flatten the `(n, V)` candidate scores with `reshape(-1)`; candidate
`c = i * V + v` has parent `c // V` and token `c % V`.)
""")

solution("beam_search_step", r"""
def beam_search_step(
    sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # sums: (n,), logprobs: (n, V) -> scores, parents, tokens: (min(B, n * V),) each
    ### BEGIN SOLUTION
    n, vocab = logprobs.shape
    candidates = (sums[:, None] + logprobs).reshape(-1)
    scores, idx = torch.topk(candidates, min(beam_width, n * vocab))
    return scores, idx // vocab, idx % vocab
    ### END SOLUTION
""")

check("beam_search_step", 3, r"""
from llmkit.course.checks import ch04

ch04.check_beam_search_step(beam_search_step)
""")

md(r"""
### A whole beam search

With your step, beam search is a short loop: start from the prompt as the only beam with
score 0, and at every step extend, prune, and rebuild the beams from their parents. This
cell runs it on the bigram model and compares the best sequence with
`llmkit.decoding.beam_search` (which also handles end-of-sequence tokens and length
normalisation; without an EOS token every beam has the same length and the two must
agree). Width 1 is greedy decoding. This cell is not graded.
""")

code(r"""
@torch.no_grad()
def my_beam_search(model, prompt, beam_width, n_new):
    seqs, sums = prompt[None], torch.zeros(1)
    for _ in range(n_new):
        logprobs = F.log_softmax(model(seqs)[:, -1], dim=-1)  # (n, V)
        sums, parents, tokens = beam_search_step(sums, logprobs, beam_width)
        seqs = torch.cat([seqs[parents], tokens[:, None]], dim=1)
    return seqs[0], float(sums[0])


prompt = torch.tensor(chars.encode("JULIET:\nO"))
for width in [1, 2, 4, 8]:
    mine, score = my_beam_search(model, prompt, width, 30)
    ref = beam_search(model, prompt, width, 30)
    same = "same as llmkit" if torch.equal(mine, ref) else "DIFFERS from llmkit"
    text = chars.decode(mine.tolist())[len("JULIET:\n"):]
    print(f"B = {width}: log p = {score:7.2f}  {same}: {text!r}")
""")

md(r"""
Wider beams find continuations with a higher total log-probability, and they are
dull: the bigram model's most probable text is a loop of the commonest letter pairs.
Chapter 4 shows the same with the GPT of chapter 3, and why sampling with top-p is the
usual choice for open-ended text.
""")

build(cells, "lab04", "/work/main/solutions/04_decoding.ipynb", nb_meta={"llmkit": {"lab": "04_decoding"}})
print("built", len(cells))
