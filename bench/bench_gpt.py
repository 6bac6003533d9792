"""Benchmark: llmkit's GPT against transformers' GPT-2, training and generation.

Builds one randomly initialised :class:`llmkit.gpt.GPT` and loads the same weights into a
``transformers.GPT2LMHeadModel`` (``GPT2Config(**config.to_hf_gpt2_kwargs())`` and the
state dict from ``GPT.to_hf_gpt2_state_dict()``), then prints two tables, each measured in
one run with the same weights for every row:

1. **Training throughput**, tokens/s of one optimizer step (forward, cross-entropy,
   backward, AdamW step) on the same batches, with the same AdamW settings
   (``llmkit.train.configure_optimizer``: fused on CUDA) and the same dtype. The
   implementations take turns step by step, so a change in the machine's load hits both;
   warm-up steps are excluded and the median of the timed steps is reported.
   ``--compile`` adds a row for ``torch.compile`` of llmkit's model.

       implementation | tokens/s | ratio vs transformers | ratio vs plain

   The rows: ``transformers``' GPT-2, the simplest plain-PyTorch GPT
   (``bench/plain_gpt.py``, the yardstick: llmkit's step should be at least as fast),
   and llmkit's GPT.

2. **Generation throughput**, new tokens/s of greedy decoding of ``--new-tokens`` tokens
   after a ``--prompt-len``-token prompt, for batch 1 and batch 8 (``--gen-batch-sizes``):
   llmkit with its KV cache, llmkit recomputing the whole sequence every step, and
   ``transformers``' ``generate(do_sample=False, use_cache=True)``. All three must produce
   the same tokens ("outputs identical: yes/no"; in bfloat16 the kernels' different rounding
   can flip a near-tie and make the sequences part). Median of ``--gen-repeats`` runs after
   one warm-up run each, under ``torch.inference_mode``.

       batch | implementation | new tokens/s | ratio vs transformers

Both sides use scaled-dot-product attention (``attn_implementation="sdpa"`` for
transformers; ``--hf-attn eager`` for its written-out attention). ``--dtype bfloat16`` runs
both under ``torch.autocast`` (weights and optimizer state stay float32); ``auto`` is
bfloat16 on a CUDA GPU that supports it, else float32. On CUDA, TF32 matmuls are allowed for
both and every timed region starts and ends with ``torch.cuda.synchronize()``.

Usage (defaults: the chapter-3 character model, about a minute on 2 CPU cores)::

    python bench/bench_gpt.py [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16]
        [--compile] [--n-layer 4 --n-head 4 --d-model 128 --block-size 128 --vocab-size 65]
        [--batch-size 16] [--steps 10] [--warmup 3] [--new-tokens 64] [--prompt-len 16]
        [--threads N]

Suggested on a GPU (GPT-2 small, 124M parameters)::

    python bench/bench_gpt.py --device cuda --dtype bfloat16 --compile --n-layer 12 \\
        --n-head 12 --d-model 768 --block-size 1024 --vocab-size 50257 --batch-size 8 \\
        --steps 20 --new-tokens 256
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from llmkit.device import select_device
from llmkit.gpt import GPT, GPTConfig
from llmkit.train import TrainConfig, configure_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_gpt import PlainGPT  # noqa: E402 - beside this file, not a package

try:
    import transformers
except ImportError:  # pragma: no cover - transformers is a test dependency
    sys.exit("bench_gpt.py needs transformers: pip install transformers")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="add torch.compile of llmkit's GPT")
    p.add_argument("--hf-attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--n-layer", type=_positive_int, default=4)
    p.add_argument("--n-head", type=_positive_int, default=4)
    p.add_argument("--d-model", type=_positive_int, default=128)
    p.add_argument("--block-size", type=_positive_int, default=128)
    p.add_argument("--vocab-size", type=_positive_int, default=65)
    p.add_argument("--batch-size", type=_positive_int, default=16, help="training batch")
    p.add_argument("--steps", type=_positive_int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    p.add_argument("--new-tokens", type=_positive_int, default=64, help="tokens to generate")
    p.add_argument("--prompt-len", type=_positive_int, default=16)
    p.add_argument("--gen-batch-sizes", type=_batch_sizes, default=[1, 8], help="e.g. 1,8")
    p.add_argument("--gen-repeats", type=_positive_int, default=3, help="timed generate runs")
    p.add_argument("--skip-train", action="store_true", help="only the generation table")
    p.add_argument("--skip-generate", action="store_true", help="only the training table")
    p.add_argument("--threads", type=_positive_int, default=None, help="default: all cores")
    p.add_argument("--seed", type=int, default=0)
    return p


# --------------------------------------------------------------------------- helpers


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Callable:
    """A factory of the autocast context for ``dtype`` (``None``: no autocast)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable, *args: object):
    """``(seconds, fn(*args))``, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    _sync(device)
    return time.perf_counter() - t0, out


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], align: str) -> None:
    """Print a markdown table; ``align`` holds one ``"l"`` or ``"r"`` per column."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def _hf_model(config: GPTConfig, state_dict: dict, attn: str, device: torch.device):
    """A ``GPT2LMHeadModel`` of the same shape holding ``state_dict``."""
    hf_config = transformers.GPT2Config(**config.to_hf_gpt2_kwargs(), attn_implementation=attn)
    model = transformers.GPT2LMHeadModel(hf_config)
    model.load_state_dict(state_dict, strict=True)
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise RuntimeError("transformers' GPT-2 lost its weight tying on load")
    return model.to(device)


# --------------------------------------------------------------------------- training


def bench_training(
    args: argparse.Namespace,
    config: GPTConfig,
    state_dict: dict,
    device: torch.device,
    amp: torch.dtype | None,
) -> None:
    """Print the training-throughput table (see the module docstring)."""
    autocast = _autocast(device, amp)
    opt_config = TrainConfig(lr=3e-4, weight_decay=0.1, progress=False)

    ours = GPT.from_hf_gpt2(state_dict, config=config).to(device).train()
    hf = _hf_model(config, state_dict, args.hf_attn, device).train()
    impls: list[tuple[str, torch.nn.Module, Callable]] = [
        (f"transformers GPT2LMHeadModel ({args.hf_attn})", hf, lambda x: hf(input_ids=x).logits)
    ]
    plain = PlainGPT(
        config.vocab_size, config.block_size, config.n_layer, config.n_head, config.d_model
    )
    plain = plain.load_gpt2(state_dict).to(device).train()
    impls.append(("plain PyTorch GPT (bench/plain_gpt.py)", plain, plain))
    impls.append((f"llmkit GPT ({config.impl})", ours, ours))
    if args.compile:
        compiled = torch.compile(copy.deepcopy(ours))
        impls.append((f"llmkit GPT ({config.impl}, torch.compile)", compiled, compiled))

    gen = torch.Generator().manual_seed(args.seed + 1)
    n = args.warmup + args.steps
    shape = (args.batch_size, config.block_size)
    batches = [
        (
            torch.randint(0, config.vocab_size, shape, generator=gen).to(device),
            torch.randint(0, config.vocab_size, shape, generator=gen).to(device),
        )
        for _ in range(n)
    ]

    def make_step(model: torch.nn.Module, logits_fn: Callable) -> Callable:
        opt = configure_optimizer(model, opt_config, device)

        def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with autocast():
                logits = logits_fn(x)  # (b, t, V)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        return step

    steps = [make_step(model, fn) for _, model, fn in impls]
    times: list[list[float]] = [[] for _ in impls]
    losses: list[list[float]] = [[] for _ in impls]
    for i, (x, y) in enumerate(batches):
        for k, step in enumerate(steps):  # take turns: load changes hit every row alike
            seconds, loss = _timed(device, step, x, y)
            losses[k].append(float(loss))
            if i >= args.warmup:
                times[k].append(seconds)

    tokens = args.batch_size * config.block_size
    rates = [tokens / statistics.median(t) for t in times]
    rows = [
        (name, f"{rate:,.0f}", f"{rate / rates[0]:.2f}x", f"{rate / rates[1]:.2f}x")
        for (name, _, _), rate in zip(impls, rates, strict=True)
    ]
    print(
        f"## Training: forward + backward + AdamW step, batch {args.batch_size} x "
        f"{config.block_size} = {tokens:,} tokens; median of {args.steps} steps after "
        f"{args.warmup} warm-up"
    )
    print()
    _table(("implementation", "tokens/s", "vs transformers", "vs plain"), rows, "lrrr")
    print()
    gap = max(abs(a - b) for other in losses[1:] for a, b in zip(losses[0], other, strict=True))
    print(
        f"losses: step 1 {losses[0][0]:.4f}, step {n} {losses[0][-1]:.4f} (transformers); "
        f"largest difference between the rows over all {n} steps: {gap:.1e}"
    )
    print()


# --------------------------------------------------------------------------- generation


def bench_generation(
    args: argparse.Namespace,
    config: GPTConfig,
    state_dict: dict,
    device: torch.device,
    amp: torch.dtype | None,
) -> bool:
    """Print the generation-throughput table; returns whether all outputs were identical."""
    autocast = _autocast(device, amp)
    ours = GPT.from_hf_gpt2(state_dict, config=config).to(device).eval()
    hf = _hf_model(config, state_dict, args.hf_attn, device).eval()
    n_new = args.new_tokens

    impls: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
        (
            "transformers generate (KV cache)",
            lambda ids: hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                use_cache=True,
            ),
        ),
        ("llmkit GPT, KV cache", lambda ids: ours.generate(ids, n_new, use_cache=True)),
        (
            "llmkit GPT, no cache (recompute)",
            lambda ids: ours.generate(ids, n_new, use_cache=False),
        ),
    ]

    gen = torch.Generator().manual_seed(args.seed + 2)
    rows: list[tuple[str, ...]] = []
    mismatches: list[str] = []
    for batch in args.gen_batch_sizes:
        prompt = torch.randint(0, config.vocab_size, (batch, args.prompt_len), generator=gen)
        prompt = prompt.to(device)
        times: list[list[float]] = [[] for _ in impls]
        outputs: list[torch.Tensor] = []
        with torch.inference_mode(), autocast():
            for _, fn in impls:  # warm-up, and the outputs to compare
                outputs.append(fn(prompt))
            for _ in range(args.gen_repeats):
                for k, (_, fn) in enumerate(impls):  # take turns, as in training
                    seconds, _ = _timed(device, fn, prompt)
                    times[k].append(seconds)
        expected_shape = (batch, args.prompt_len + n_new)
        for (name, _), out in zip(impls, outputs, strict=True):
            if tuple(out.shape) != expected_shape:
                raise RuntimeError(f"{name} returned {tuple(out.shape)}, not {expected_shape}")
        reference = outputs[0].cpu()
        for (name, _), out in zip(impls[1:], outputs[1:], strict=True):
            differ = (out.cpu() != reference).any(dim=0).nonzero()
            if len(differ):
                at = int(differ[0]) - args.prompt_len + 1
                mismatches.append(f"{name}, batch {batch}: from new token {at}")
        rates = [batch * n_new / statistics.median(t) for t in times]
        for (name, _), rate in zip(impls, rates, strict=True):
            rows.append((str(batch), name, f"{rate:,.0f}", f"{rate / rates[0]:.2f}x"))

    print(
        f"## Generation: greedy, {n_new} new tokens after a {args.prompt_len}-token prompt; "
        f"median of {args.gen_repeats} runs after 1 warm-up"
    )
    print()
    _table(("batch", "implementation", "new tokens/s", "ratio vs transformers"), rows, "rlrr")
    print()
    if mismatches:
        print("outputs identical: no (vs transformers: " + "; ".join(mismatches) + ")")
    else:
        print("outputs identical: yes")
    return not mismatches


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if not args.skip_generate and args.prompt_len + args.new_tokens > args.block_size:
        parser.error(
            f"--prompt-len + --new-tokens (= {args.prompt_len + args.new_tokens}) must be at "
            f"most --block-size (= {args.block_size}): transformers cannot go past its context"
        )
    try:
        device = select_device(args.device)
        config = GPTConfig(
            vocab_size=args.vocab_size,
            block_size=args.block_size,
            n_layer=args.n_layer,
            n_head=args.n_head,
            d_model=args.d_model,
        )
    except ValueError as err:
        parser.error(str(err))
    if args.dtype == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        args.dtype = "bfloat16" if use_bf16 else "float32"
    amp = torch.bfloat16 if args.dtype == "bfloat16" else None

    threads = args.threads or _cores()
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    transformers.logging.set_verbosity_error()

    torch.manual_seed(args.seed)
    model = GPT(config)
    state_dict = model.to_hf_gpt2_state_dict()  # the one set of weights every row uses
    del model

    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {threads} torch thread(s)"
    )
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"
    print(
        f"model: {config.n_layer} layers, {config.n_head} heads, d_model {config.d_model}, "
        f"block {config.block_size}, vocab {config.vocab_size}; "
        f"{sum(v.numel() for k, v in state_dict.items() if k != 'lm_head.weight'):,} parameters"
    )
    print(
        f"device: {device} ({hardware}); dtype {args.dtype}"
        f"{' (autocast)' if amp is not None else ''}; {_cores()} cores, load average {load}"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print()
    if not args.skip_train:
        bench_training(args, config, state_dict, device, amp)
    if not args.skip_generate:
        bench_generation(args, config, state_dict, device, amp)


if __name__ == "__main__":
    main()
