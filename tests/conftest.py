"""Shared test settings.

Hypothesis runs derandomized: the same examples on every run and every machine, so a
test suite that passed once passes again (the course's tests must be deterministic).
Set ``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples instead.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "deterministic",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

# Under pytest-xdist each worker already has a core to itself: torch's own worker
# threads would only oversubscribe the machine (tiny tensors run 3-4x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


# -- tiny random Hugging Face models (no download), the references of the model tests --------


def _tiny_hf_gpt2(
    n_embd: int,
    n_layer: int,
    n_head: int,
    n_positions: int,
    vocab_size: int,
    seed: int = 0,
    initializer_range: float = 0.1,
    **overrides,
):
    """A random ``transformers.GPT2LMHeadModel`` in eval mode, without dropout.

    ``initializer_range=0.1`` (five times GPT-2's) gives peakier logits: no near-ties that
    rounding could flip in greedy decoding or beam search.
    """
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_positions=n_positions,
        vocab_size=vocab_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        initializer_range=initializer_range,
        **overrides,
    )
    import torch

    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def _tiny_hf_bert_config(hidden, layers, heads, inter, vocab, positions):
    """A ``transformers.BertConfig`` of the given sizes (``initializer_range=0.1``)."""
    transformers = pytest.importorskip("transformers")
    return transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=positions,
        initializer_range=0.1,
    )


@pytest.fixture(scope="session")
def hf_gpt2():
    """``hf_gpt2(n_embd, n_layer, n_head, n_positions, vocab_size, seed=0, ...)``."""
    return _tiny_hf_gpt2


@pytest.fixture(scope="session")
def hf_bert_config():
    """``hf_bert_config(hidden, layers, heads, intermediate, vocab, positions)``."""
    return _tiny_hf_bert_config
