"""Benchmark: batched generation of prompts of different lengths against one at a time.

SmolLM2-135M-Instruct (:func:`llmkit.pretrained.smollm2`) answers ``--prompts`` short
instructions (ChatML, no system message, the assistant's turn opened: prompts of different
lengths), greedy, at most ``--new-tokens`` tokens each, stopping at ``<|im_end|>``:

* **one at a time**: ``model.generate(ids, n, eos_token_id=...)`` for each prompt (KV
  cache, batch 1);
* **batched**: :func:`llmkit.decoding.generate_batch` on all of them (left padding,
  attention mask, KV cache; a row leaves the batch when it ends its turn), and, with
  ``--batch-sizes``, in chunks of those sizes.

Each mode runs ``--repeats`` times, taking turns; the table gives the median wall time, the
new tokens per second and the speed-up over one at a time, and says how many answers are
token for token those of one at a time (in float32 the batched matrix products round
differently, so a near-tie can rarely flip a token). The load average is printed before and
after: on a shared machine the numbers are only as good as it is quiet.

Usage (a few minutes on 2 CPU cores)::

    python bench/bench_generate_batch.py [--prompts 16] [--new-tokens 64] [--repeats 1]
        [--batch-sizes 16,4] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from llmkit import chat  # noqa: E402
from llmkit.decoding import generate_batch  # noqa: E402
from llmkit.pretrained import smollm2  # noqa: E402

INSTRUCTIONS = [
    "Name a primary colour.",
    "What is the capital of Italy?",
    "Give a synonym of 'happy'.",
    "Translate 'good morning' into French.",
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "List three fruits that are red.",
    "Explain in one sentence what a noun is.",
    "Rewrite this sentence in the passive voice: The cat chased the mouse.",
    "Suggest a name for a small bakery that sells bread and cakes near a train station.",
    "What is the boiling point of water at sea level, in degrees Celsius?",
    "Classify the sentiment of this review as positive or negative: The food was cold.",
    "Summarise in one sentence: The meeting was moved from Monday to Wednesday because "
    "the manager was travelling.",
    "Give two tips for learning a new language.",
    "Who wrote the play Romeo and Juliet?",
    "Convert 5 kilometres to metres, and explain how you did it.",
]


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=16, help=f"at most {len(INSTRUCTIONS)}")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--batch-sizes", type=_sizes, default=[], help="also chunks, e.g. 4,8")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    args = p.parse_args()
    if not 1 <= args.prompts <= len(INSTRUCTIONS):
        p.error(f"--prompts must be in [1, {len(INSTRUCTIONS)}]")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok, info = smollm2()
    eos = info["eos_token_id"]
    prompts = [
        tok.encode(
            chat.render(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                default_system=None,
            ).text
        )
        for text in INSTRUCTIONS[: args.prompts]
    ]
    n = args.new_tokens
    lengths = sorted(len(q) for q in prompts)
    print(
        f"SmolLM2-135M-Instruct, float32, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores; {len(prompts)} prompts of {lengths[0]}-{lengths[-1]} "
        f"tokens; greedy, at most {n} new tokens, stop at <|im_end|>"
    )
    print(f"load average before: {os.getloadavg()}")

    def one_at_a_time() -> list[list[int]]:
        outs = []
        for q in prompts:
            ids = model.generate(torch.tensor([q]), n, eos_token_id=eos)[0, len(q) :].tolist()
            outs.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
        return outs

    def batched(size: int) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            outs: list[list[int]] = []
            for i in range(0, len(prompts), size):
                outs += generate_batch(model, prompts[i : i + size], n, eos_token_id=eos)
            return outs

        return run

    modes: dict[str, Callable[[], list[list[int]]]] = {"one at a time": one_at_a_time}
    for size in [len(prompts), *args.batch_sizes]:
        modes[f"batched, batch {size}"] = batched(size)
    times: dict[str, list[float]] = {m: [] for m in modes}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for name, run in modes.items():
            start = time.perf_counter()
            with torch.inference_mode():
                outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    print(f"load average after:  {os.getloadavg()}")

    reference = outputs["one at a time"]
    base = statistics.median(times["one at a time"])
    print()
    print("| mode | seconds | new tokens | new tokens/s | speed-up | answers identical |")
    print("|------|---------|------------|--------------|----------|-------------------|")
    for name in modes:
        sec = statistics.median(times[name])
        new = sum(len(o) for o in outputs[name])
        same = sum(a == b for a, b in zip(outputs[name], reference, strict=True))
        print(
            f"| {name} | {sec:.1f} | {new} | {new / sec:.1f} | {base / sec:.2f}x "
            f"| {same}/{len(prompts)} |"
        )
    print()
    print("first answer:", repr(tok.decode(outputs[f"batched, batch {len(prompts)}"][0])))


if __name__ == "__main__":
    main()
