"""Benchmark: SmolLM2-135M-Instruct in llmkit against transformers, load time and generation.

Both models come from the same GGUF file (``llmkit.data.path("smollm2-135m-instruct-q4_1")``):
llmkit through :func:`llmkit.gguf.load_llama` (the ``adjacent`` RoPE layout, the file's
weights as they are), ``transformers`` through ``AutoModelForCausalLM.from_pretrained(folder,
gguf_file=name)`` (its own dequantization and q/k permutation), both in float32 (or
``--dtype``). Two tables, measured in one run:

1. **Load time**: seconds from the file to a ready model (median of ``--load-repeats``,
   alternating). transformers' loader is timed as it ships.

       implementation | load seconds

2. **Greedy generation**: new tokens/s of ``--new-tokens`` tokens after each prompt (a chat
   prompt and a story opening), batch 1: llmkit's ``model.generate`` with its KV cache and
   ``transformers``' ``generate(do_sample=False)`` (its ``DynamicCache``; end-of-sequence
   disabled so both produce exactly ``--new-tokens`` tokens). The two take turns run by run
   (``--repeats`` timed runs each after one warm-up), under ``torch.inference_mode``; the
   median is reported, with whether the tokens are identical.

       prompt | implementation | new tokens/s | ratio vs transformers | tokens identical

Usage (about two minutes on 2 CPU cores)::

    python bench/bench_smollm2.py [--new-tokens 64] [--repeats 3] [--load-repeats 1]
        [--dtype float32|bfloat16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from llmkit import data, gguf  # noqa: E402
from llmkit.pretrained import SMOLLM2  # noqa: E402

# token ids from the file's tokenizer (transformers' AutoTokenizer on the GGUF)
PROMPTS = {
    # ChatML, SmolLM2's default system prompt, "What is the capital of France? Answer in one
    # sentence.", the assistant's turn opened
    "chat (42 tokens)": [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519,
                         28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260,
                         3575, 282, 4649, 47, 19842, 281, 582, 6330, 30, 2, 198, 1, 520, 9531,
                         198],
    # "Once upon a time, in a small village,"
    "story (10 tokens)": [6403, 1980, 253, 655, 28, 281, 253, 1165, 6560, 28],
}  # fmt: skip


def load_hf(path: Path, dtype: torch.dtype):
    import transformers

    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / path.name
        os.symlink(path, link)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=path.name, dtype=dtype
        )
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-repeats", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    path = data.path(SMOLLM2)
    import transformers

    print(
        f"# SmolLM2-135M-Instruct (Q4_1 GGUF), {args.dtype}, CPU threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {platform.processor() or platform.machine()}, load "
        f"average {os.getloadavg()[0]:.1f}"
    )
    loads: dict[str, list[float]] = {"llmkit": [], "transformers": []}
    ours = theirs = None
    for _ in range(args.load_repeats):
        seconds, (ours, _) = timed(lambda: gguf.load_llama(path, dtype=dtype))
        loads["llmkit"].append(seconds)
        seconds, theirs = timed(lambda: load_hf(path, dtype))
        loads["transformers"].append(seconds)
    print("\n| implementation | load seconds |\n|---|---|")
    for name, values in loads.items():
        print(f"| {name} | {statistics.median(values):.2f} |")

    n = args.new_tokens
    print(
        "\n| prompt | implementation | new tokens/s | ratio vs transformers | tokens identical |"
        "\n|---|---|---|---|---|"
    )
    with torch.inference_mode():
        for label, ids in PROMPTS.items():
            x = torch.tensor([ids])
            mask = torch.ones_like(x)
            runs = {
                "llmkit (KV cache)": lambda x=x: ours.generate(x, n),
                "transformers generate": lambda x=x, mask=mask: theirs.generate(
                    x, attention_mask=mask, max_new_tokens=n, do_sample=False
                ),
            }
            outputs, times = {}, {name: [] for name in runs}
            for name, run in runs.items():  # warm-up
                outputs[name] = run()
            for _ in range(args.repeats):
                for name, run in runs.items():
                    seconds, out = timed(run)
                    times[name].append(seconds)
            same = torch.equal(*outputs.values())
            base = n / statistics.median(times["transformers generate"])
            for name in runs:
                rate = n / statistics.median(times[name])
                print(
                    f"| {label} | {name} | {rate:.1f} | {rate / base:.2f}x | "
                    f"{'yes' if same else 'no'} |"
                )


if __name__ == "__main__":
    main()
