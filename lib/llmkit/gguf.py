"""Reading GGUF files: metadata, dequantized tensors and a :class:`~llmkit.llama.Llama`.

GGUF is llama.cpp's single-file format: a header of key/value metadata (the architecture's
sizes, the tokenizer's vocabulary and merges, the chat template) followed by the tensors,
often quantized (e.g. ``Q4_1``: blocks of 32 weights stored as 4-bit integers with one scale
and one offset per block; ``Q8_0``: 8-bit integers with one scale). This module reads both
with the ``gguf`` package (``gguf.GGUFReader``; ``gguf.quants.dequantize`` turns every
tensor back into float32) and maps a ``llama``-architecture file onto llmkit's
:class:`~llmkit.llama.Llama`:

* :func:`read_metadata` -- the key/value metadata as plain Python values (``str``, ``int``,
  ``float``, ``bool``, lists of them), e.g. ``llama.block_count`` or the tokenizer's
  ``tokenizer.ggml.tokens`` / ``tokenizer.ggml.merges`` / ``tokenizer.chat_template``;
* :func:`read_tensors` -- every tensor dequantized to float32, under its GGUF name
  (``blk.0.attn_q.weight``), shaped as PyTorch stores it (``(out, in)`` for a matrix);
* :func:`config_from_metadata` -- the :class:`~llmkit.llama.LlamaConfig`;
* :func:`llama_state_dict` -- the tensors under llmkit's names (:data:`TENSOR_NAMES`);
* :func:`load_llama` -- all of the above: a model in evaluation mode and the metadata.

**RoPE layout.** llama.cpp's converter permutes the query and key projections of Hugging
Face Llama checkpoints into the ``"adjacent"`` layout (pairs ``(2i, 2i+1)``, as Meta's
original checkpoints), so a model built from a GGUF file uses ``rope_layout="adjacent"``
and its weights are loaded unchanged. (``transformers``' GGUF loader undoes the permutation
instead, to run them with its ``"rotate_half"`` code; the two give the same logits.)

The quantization is undone, not its error: the float32 weights are exactly those that
llama.cpp (and ``transformers`` on the same file) computes with.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from llmkit import validate
from llmkit.llama import Llama, LlamaConfig, permute_qk
from llmkit.nn import ROPE_LAYOUTS

__all__ = [
    "TENSOR_NAMES",
    "read_metadata",
    "read_tensors",
    "config_from_metadata",
    "llama_state_dict",
    "load_llama",
]

#: GGUF tensor names of a ``llama`` file and llmkit's (``{i}``: the block index).
TENSOR_NAMES: dict[str, str] = {
    "token_embd.weight": "wte.weight",
    "output_norm.weight": "norm_f.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "blocks.{i}.norm_1.weight",
    "blk.{i}.attn_q.weight": "blocks.{i}.attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "blocks.{i}.attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "blocks.{i}.attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "blocks.{i}.attn.proj.weight",
    "blk.{i}.ffn_norm.weight": "blocks.{i}.norm_2.weight",
    "blk.{i}.ffn_gate.weight": "blocks.{i}.mlp.gate.weight",
    "blk.{i}.ffn_up.weight": "blocks.{i}.mlp.up.weight",
    "blk.{i}.ffn_down.weight": "blocks.{i}.mlp.down.weight",
}

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _reader(path: str | os.PathLike[str]) -> Any:
    """A ``gguf.GGUFReader`` over a plain ``ndarray`` view of the file's memory map.

    ``GGUFReader`` parses the header into many small ``np.memmap`` slices (one per token
    string); slices of a plain array view of the same mapping are several times cheaper to
    make (1.5 s instead of 8 s for SmolLM2's 49,152 tokens). Nothing is read eagerly.
    """
    import gguf  # imported here: only GGUF loading needs the package

    class Reader(gguf.GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._data = value.view(np.ndarray)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no GGUF file at {path}")
    return Reader(path)


def _metadata(reader: Any) -> dict[str, Any]:
    return {
        name: field.contents()
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.")  # the header's version and counts
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file, as plain Python values.

    Keys as in the file (``general.architecture``, ``llama.block_count``,
    ``tokenizer.ggml.tokens``, ``tokenizer.chat_template``, ...); values ``str``, ``int``,
    ``float``, ``bool`` or lists of them. The header's own fields (``GGUF.version``, the
    tensor and key counts) are left out. Tensors are not read.
    """
    return _metadata(_reader(path))


def _tensors(reader: Any) -> dict[str, torch.Tensor]:
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        array = dequantize(t.data, t.tensor_type)  # float32, PyTorch's (out, in) order
        out[t.name] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
    return out


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a GGUF file, dequantized to float32, by GGUF name.

    Shapes are PyTorch's: GGUF lists dimensions innermost first (``[576, 1536]`` for
    ``ffn_gate``), the tensors here are ``(1536, 576)``, the ``nn.Linear`` layout.
    """
    return _tensors(_reader(path))


def config_from_metadata(
    metadata: Mapping[str, Any], tensor_names: set[str] | None = None
) -> LlamaConfig:
    """The :class:`~llmkit.llama.LlamaConfig` of a ``llama``-architecture GGUF file.

    Args:
        metadata: from :func:`read_metadata`.
        tensor_names: the file's tensor names, if known: a file without ``output.weight``
            ties its output projection to the embedding. Default: tied.
    Returns:
        the config, with ``rope_layout="adjacent"`` (the layout of GGUF weights).
    """
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"only general.architecture 'llama' is supported, got {arch!r}")

    def get(key: str, default: Any = None) -> Any:
        value = metadata.get(f"llama.{key}", default)
        if value is None:
            raise ValueError(f"GGUF metadata has no llama.{key}")
        return value

    d_model, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    rope_dim = metadata.get("llama.rope.dimension_count", d_model // n_head)
    if rope_dim != d_model // n_head:
        raise ValueError(
            f"llama.rope.dimension_count={rope_dim}: only RoPE over whole heads "
            f"({d_model // n_head}) is supported"
        )
    if metadata.get("llama.rope.scaling.type", "none") not in ("none", None):
        raise ValueError(f"RoPE scaling {metadata['llama.rope.scaling.type']!r} is unsupported")
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab = metadata.get("llama.vocab_size", len(tokens) if tokens is not None else None)
    if vocab is None:
        raise ValueError("GGUF metadata has neither llama.vocab_size nor tokenizer.ggml.tokens")
    return LlamaConfig(
        vocab_size=int(vocab),
        block_size=int(get("context_length")),
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_kv_head=int(get("attention.head_count_kv", n_head)),
        d_model=d_model,
        hidden=int(get("feed_forward_length")),
        rope_base=float(get("rope.freq_base", 10000.0)),
        rope_layout="adjacent",
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings=tensor_names is None or "output.weight" not in tensor_names,
    )


def llama_state_dict(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename GGUF tensors to llmkit's :class:`~llmkit.llama.Llama` keys (:data:`TENSOR_NAMES`).

    Unknown tensors are an error (e.g. Llama 3.1's ``rope_freqs.weight``, whose RoPE
    scaling llmkit does not implement).
    """
    out = {}
    unknown = []
    for name, tensor in tensors.items():
        match = _BLOCK.match(name)
        pattern = f"blk.{{i}}.{match.group(2)}" if match else name
        ours = TENSOR_NAMES.get(pattern)
        if ours is None:
            unknown.append(name)
            continue
        out[ours.format(i=match.group(1)) if match else ours] = tensor
    if unknown:
        raise ValueError(f"GGUF tensors with no llmkit counterpart: {sorted(unknown)}")
    return out


def load_llama(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    rope_layout: str = "adjacent",
) -> tuple[Llama, dict[str, Any]]:
    """Build a :class:`~llmkit.llama.Llama` from a ``llama``-architecture GGUF file.

    Args:
        path: the ``.gguf`` file.
        dtype: the model's dtype (the weights are dequantized to float32 first).
        rope_layout: ``"adjacent"`` (default), the layout of the file's weights, loaded as
            they are; or ``"rotate_half"``: the query and key projections are permuted
            (:func:`~llmkit.llama.permute_qk`), as ``transformers`` does with the same file.
            Same logits up to float32 rounding (the sums run in another order); with
            ``"rotate_half"`` they are bit for bit those of ``transformers``.
    Returns:
        ``(model, metadata)``: the model in evaluation mode on the CPU and
        :func:`read_metadata`'s dict.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    validate.one_of("rope_layout", rope_layout, ROPE_LAYOUTS)
    reader = _reader(path)
    metadata = _metadata(reader)
    config = config_from_metadata(metadata, {t.name for t in reader.tensors})
    state = llama_state_dict(_tensors(reader))
    if rope_layout != config.rope_layout:
        config = dataclasses.replace(config, rope_layout=rope_layout)
        for i in range(config.n_layer):
            for name, heads in (("q_proj", config.n_head), ("k_proj", config.n_kv_head)):
                key = f"blocks.{i}.attn.{name}.weight"
                state[key] = permute_qk(state[key], heads, to=rope_layout)
    model = Llama.from_state_dict(state, config)
    return model.to(dtype).eval(), metadata
