"""Chat templates and chatting with a model (chapters 03b and 09).

An assistant model reads a conversation as one text, in the *chat template* it was
fine-tuned on. :func:`render` writes a conversation -- a list of ``{"role", "content"}``
messages -- in one of :data:`TEMPLATES`, and returns where each message is in the text
(chapter 09 trains on the assistant's tokens only, so it needs those spans):

* ``"chatml"`` -- SmolLM2's template (ChatML), as stored in its GGUF file::

      <|im_start|>system
      You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
      <|im_start|>user
      What is the capital of France?<|im_end|>
      <|im_start|>assistant
      The capital of France is Paris.<|im_end|>

  Every message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. When the first
  message is not a system message, SmolLM2's default system message comes first
  (:data:`CHATML_DEFAULT_SYSTEM`). A turn ends with ``<|im_end|>`` (id 2 for SmolLM2).
* ``"notes"`` -- the lecture notes' template: ``<user>\\n{content}\\n`` and
  ``<assistant>\\n{content}\\n`` (chapter 01 makes ``<user>`` and ``<assistant>``
  special tokens). A turn ends where the next ``<user>`` begins.

With ``add_generation_prompt=True`` the text ends with the opening of an assistant
message (``<|im_start|>assistant\\n`` or ``<assistant>\\n``), for the model to continue.

:func:`chat` renders a conversation, generates with :mod:`llmkit.decoding` and returns
the reply, stopped at the end of the assistant's turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmkit import decoding, validate

__all__ = [
    "TEMPLATES",
    "CHATML_DEFAULT_SYSTEM",
    "RenderedChat",
    "render",
    "default_system_prompt",
    "end_of_turn",
    "chat",
]

TEMPLATES = ("chatml", "notes")

#: SmolLM2-Instruct's default system message, from the chat template of its GGUF file
#: (:func:`default_system_prompt` reads it there; the tests check they agree).
CHATML_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

_NOTES_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RenderedChat:
    """A conversation written in a chat template.

    Attributes:
        text: the whole text.
        messages: the messages as rendered, ``{"role", "content"}`` each: the input's,
            preceded by the default system message where the template added one.
        spans: ``(start, end)`` of each message in ``text`` (``text[start:end]``), its
            markup included: ``<|im_start|>role\\n ... <|im_end|>\\n`` or
            ``<role>\\n ... \\n``.
        content_spans: ``(start, end)`` of each message's content only.
        generation_prompt: ``(start, end)`` of the assistant opening added by
            ``add_generation_prompt=True``, else ``None``.
        template: the template's name.
    """

    text: str
    messages: list[dict[str, str]]
    spans: list[tuple[int, int]]
    content_spans: list[tuple[int, int]]
    generation_prompt: tuple[int, int] | None
    template: str

    def char_mask(
        self, roles: Sequence[str] = ("assistant",), content_only: bool = False
    ) -> list[bool]:
        """One flag per character of :attr:`text`: inside a message of one of ``roles``.

        With ``content_only=False`` the markup counts too (for ChatML, training on the
        ``<|im_end|>`` teaches the model to end its turn).
        """
        mask = [False] * len(self.text)
        spans = self.content_spans if content_only else self.spans
        for message, (start, end) in zip(self.messages, spans, strict=True):
            if message["role"] in roles:
                mask[start:end] = [True] * (end - start)
        return mask


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if isinstance(messages, (str, Mapping)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"message {k} must be a dict with 'role' and 'content', got {m!r}")
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise TypeError(
                f"message {k}: role must be a non-empty str and content a str, got "
                f"{type(role).__name__} and {type(content).__name__}"
            )
        out.append({"role": role, "content": content})
    return out


def render(
    messages: Sequence[Mapping[str, Any]],
    template: str = "chatml",
    add_generation_prompt: bool = False,
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> RenderedChat:
    """Write a conversation in a chat template; see the module docstring.

    Args:
        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
        template: one of :data:`TEMPLATES`.
        add_generation_prompt: end with the opening of an assistant message.
        default_system: ChatML only: the system message put first when the first
            message is not one (SmolLM2's by default; ``None`` for none). As in SmolLM2's
            template, an empty conversation gets none.
    Returns:
        a :class:`RenderedChat`: the text and the span of every message.
    """
    validate.one_of("template", template, TEMPLATES)
    validate.boolean("add_generation_prompt", add_generation_prompt)
    msgs = _check_messages(messages)
    if template == "chatml":
        if msgs and msgs[0]["role"] != "system" and default_system is not None:
            msgs = [{"role": "system", "content": default_system}, *msgs]

        def parts(role: str) -> tuple[str, str]:
            return f"<|im_start|>{role}\n", "<|im_end|>\n"

    else:
        for k, m in enumerate(msgs):
            if m["role"] not in _NOTES_ROLES:
                raise ValueError(
                    f"message {k}: the notes template knows the roles {_NOTES_ROLES}, "
                    f"got {m['role']!r}"
                )

        def parts(role: str) -> tuple[str, str]:
            return f"<{role}>\n", "\n"

    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    content_spans: list[tuple[int, int]] = []
    pos = 0
    for m in msgs:
        head, tail = parts(m["role"])
        start = pos
        pieces += [head, m["content"], tail]
        c0 = start + len(head)
        c1 = c0 + len(m["content"])
        pos = c1 + len(tail)
        spans.append((start, pos))
        content_spans.append((c0, c1))
    gen = None
    if add_generation_prompt:
        head = parts("assistant")[0]
        pieces.append(head)
        gen = (pos, pos + len(head))
    return RenderedChat("".join(pieces), msgs, spans, content_spans, gen, template)


def default_system_prompt(chat_template: str) -> str | None:
    """The default system message written in a ChatML Jinja template (as SmolLM2's GGUF
    ``tokenizer.chat_template`` holds it), or ``None`` if it has none."""
    m = re.search(r"<\|im_start\|>system\\n(.*?)<\|im_end\|>", chat_template, re.S)
    if m is None:
        m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template, re.S)
    return None if m is None else m.group(1)


def end_of_turn(tokenizer: Any, template: str = "chatml") -> tuple[list[int], list[str]]:
    """The token ids and texts that end an assistant's turn in ``template``.

    ChatML: ``<|im_end|>`` (a special token of the tokenizer, else the text), and the
    tokenizer's EOS id if it has one. Notes: ``<user>`` (special token or text) and
    ``<|endoftext|>`` if the tokenizer has it.
    """
    validate.one_of("template", template, TEMPLATES)
    specials: Mapping[str, int] = getattr(tokenizer, "special_tokens", {}) or {}
    markers = ["<|im_end|>"] if template == "chatml" else ["<user>", "<|endoftext|>"]
    ids = [specials[s] for s in markers if s in specials]
    eos = getattr(tokenizer, "eos_token_id", None)
    if template == "chatml" and eos is not None and eos not in ids:
        ids.append(int(eos))
    texts = markers if template == "chatml" else ["<user>"]
    return ids, texts


def chat(
    model: Any,
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    template: str = "chatml",
    max_new_tokens: int = 256,
    strategy: str = "greedy",
    **decoding_options: Any,
) -> str:
    """Answer a conversation: render it with a generation prompt, generate, and return
    the reply up to the end of the assistant's turn (:func:`end_of_turn`).

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)`` (see :mod:`llmkit.decoding`).
        tokenizer: has ``encode(text) -> list[int]`` (special tokens recognised) and
            ``decode(ids) -> str``.
        messages: the conversation so far (see :func:`render`).
        template: one of :data:`TEMPLATES`.
        max_new_tokens: the most tokens to generate.
        strategy: ``"greedy"``, ``"sample"`` or ``"beam"`` (:func:`llmkit.decoding.generate`).
        **decoding_options: passed to :func:`llmkit.decoding.generate` (``temperature``,
            ``top_k``, ``top_p``, ``generator``, ``beam_width``, ...; also
            ``default_system`` for :func:`render`).
    Returns:
        the reply text, without the end-of-turn marker.
    """
    render_options = {}
    if "default_system" in decoding_options:
        render_options["default_system"] = decoding_options.pop("default_system")
    if "eos_token_id" in decoding_options:
        raise ValueError("chat() stops at the end of the turn itself; do not pass eos_token_id")
    rendered = render(messages, template, add_generation_prompt=True, **render_options)
    stop_ids, stop_texts = end_of_turn(tokenizer, template)
    prompt = list(tokenizer.encode(rendered.text))
    device = next((p.device for p in getattr(model, "parameters", list)()), torch.device("cpu"))
    ids = torch.tensor(prompt, dtype=torch.long, device=device)
    out = decoding.generate(
        model,
        ids,
        max_new_tokens,
        strategy,
        eos_token_id=stop_ids[0] if stop_ids else None,
        **decoding_options,
    )
    new = out[len(prompt) :].tolist()
    stopped = False
    stops = set(stop_ids)
    for k, i in enumerate(new):
        if i in stops:
            new, stopped = new[:k], True
            break
    reply = tokenizer.decode(new)
    for s in stop_texts:
        cut = reply.find(s)
        if cut >= 0:
            reply, stopped = reply[:cut], True
    if stopped and template == "notes" and reply.endswith("\n"):
        reply = reply[:-1]  # the newline that closes a message in the notes' template
    return reply
