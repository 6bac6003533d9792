"""bench/bench_gpt.py runs on a tiny model and prints its two tables (no timing assertions)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--device cpu --threads 1 --n-layer 2 --n-head 2 --d-model 32 --block-size 32 "
    "--vocab-size 50 --batch-size 2 --steps 2 --warmup 1 --new-tokens 8 --prompt-len 4 "
    "--gen-repeats 1"
).split()


@pytest.fixture
def bench():
    """The benchmark module, imported from its file; torch's global state restored after."""
    spec = importlib.util.spec_from_file_location("bench_gpt", ROOT / "bench" / "bench_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    yield module
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def _rows(out: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown rows whose first cell is ``first_cell`` (regex)."""
    rows = []
    for line in out.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if re.fullmatch(first_cell, cells[0]):
                rows.append(cells)
    return rows


def _rate(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_bench_gpt_prints_both_tables(bench, capsys):
    bench.main(TINY)
    out = capsys.readouterr().out

    assert "## Training" in out and "## Generation" in out
    assert "| implementation " in out and "| batch | implementation " in out
    assert (
        "tokens/s" in out
        and "new tokens/s" in out
        and "vs transformers" in out
        and "vs plain" in out
    )
    train = _rows(out, r"transformers GPT2LMHeadModel.*|plain PyTorch GPT.*|llmkit GPT.*")
    assert [r[0] for r in train] == [
        "transformers GPT2LMHeadModel (sdpa)",
        "plain PyTorch GPT (bench/plain_gpt.py)",
        "llmkit GPT (sdpa)",
    ]
    assert train[0][2] == "1.00x" and train[1][3] == "1.00x"
    assert all(_rate(r[1]) > 0 and r[2].endswith("x") for r in train)
    # same weights, same batches: the two models' losses agree at every step
    gap = float(re.search(r"largest difference between the rows .*: (\S+)", out).group(1))
    assert gap < 1e-4

    gen = _rows(out, r"\d+")
    assert [(r[0], r[1]) for r in gen] == [
        (b, name)
        for b in ("1", "8")
        for name in (
            "transformers generate (KV cache)",
            "llmkit GPT, KV cache",
            "llmkit GPT, no cache (recompute)",
        )
    ]
    assert all(_rate(r[2]) > 0 for r in gen)
    assert gen[0][3] == gen[3][3] == "1.00x"
    assert "outputs identical: yes" in out


def test_bench_gpt_bfloat16_training_table(bench, capsys):
    bench.main([*TINY, "--dtype", "bfloat16", "--skip-generate", "--hf-attn", "eager"])
    out = capsys.readouterr().out
    assert "dtype bfloat16 (autocast)" in out
    assert "transformers GPT2LMHeadModel (eager)" in out
    assert "## Generation" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-len", "30", "--new-tokens", "8"], "must be at most --block-size"),
        (["--n-head", "3"], "divisible by n_head"),
        (["--steps", "0"], "must be >= 1"),
        (["--gen-batch-sizes", "1,x"], "comma-separated"),
    ],
)
def test_bench_gpt_rejects_bad_arguments(bench, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        bench.main([*TINY, *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
