"""Records → text segments, each marked trained (in the loss) or not.

Alpaca and prompt/completion get a fixed prompt; chat turns go through a chat template: the
tokenizer's own, or a built-in one (`--chat-template chatml|llama3`) or a .jinja file for
tokenizers without one. The loss covers the response (alpaca output, completion, every
assistant turn) unless --train-on-prompt; plain text is trained whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train.data.formats import Chat, PromptCompletion, Record, Row, Text
from mgft_train.errors import UsageError

PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"

# The formats as their model families publish them, minus tool-calling extras.
BUILTIN_CHAT_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"),
}
TEMPLATE_FIX = ("pass --chat-template chatml (or llama3, or a .jinja file), or add a "
                "chat_template to the model's tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class Sample:
    segments: tuple[tuple[str, bool], ...]  # (text, trained), in order
    bos: bool  # tokenize the first segment with the tokenizer's special tokens (BOS)
    eos: bool  # append EOS, trained with the last segment, so the model learns to stop
    where: str
    last_turn_only: bool = False  # see _chat_segments


def render_prompt(row: Row) -> str:
    template = PROMPT_WITH_INPUT if row.input else PROMPT_NO_INPUT
    return template.format(instruction=row.instruction, input=row.input)


def resolve_chat_template(tokenizer: Any, name: str | None, model_dir: str) -> str:
    """The template for chat rows: --chat-template if given, else the tokenizer's own."""
    if name is None:
        own = tokenizer.chat_template
        if isinstance(own, dict):  # several named templates; "default" is the chat one
            own = own.get("default")
        if not own:
            raise UsageError("--chat-template", "(not set)",
                             f"the tokenizer in {model_dir} has no chat template to render "
                             "chat rows with", TEMPLATE_FIX)
        return own
    if name in BUILTIN_CHAT_TEMPLATES:
        return BUILTIN_CHAT_TEMPLATES[name]
    path = Path(name)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise UsageError("--chat-template", name, "neither a built-in template nor a file",
                     f"use one of {', '.join(BUILTIN_CHAT_TEMPLATES)}, or the path of a "
                     ".jinja file")


def to_sample(record: Record, tokenizer: Any, chat_template: str | None,
              train_on_prompt: bool) -> Sample:
    prompt_trained = train_on_prompt
    match record:
        case Row():
            return Sample(segments=((render_prompt(record), prompt_trained),
                                    (record.output, True)), bos=True, eos=True,
                          where=record.where)
        case PromptCompletion():
            return Sample(segments=((record.prompt, prompt_trained), (record.completion, True)),
                          bos=True, eos=True, where=record.where)
        case Text():
            return Sample(segments=((record.text, True),), bos=True, eos=True,
                          where=record.where)
        case Chat():
            assert chat_template is not None, "resolve_chat_template runs first for chat data"
            segments, last_only = _chat_segments(record, tokenizer, chat_template,
                                                 train_on_prompt)
            # The template writes the special tokens (BOS if it wants one, each turn's end).
            return Sample(segments=segments, bos=False, eos=False, where=record.where,
                          last_turn_only=last_only)
    raise TypeError(f"unknown record {record!r}")


def _chat_segments(chat: Chat, tokenizer: Any, template: str,
                   train_on_prompt: bool) -> tuple[tuple[tuple[str, bool], ...], bool]:
    """Find each assistant turn's text by rendering the conversation one turn at a time.

    For turn i, render turns[:i] with the generation prompt (what the model sees before it
    answers: masked) and turns[:i+1] (the answer and its end-of-turn marker: trained). This
    needs a template whose rendering of a longer conversation extends that of a shorter one;
    most do. Some rewrite earlier turns (e.g. dropping past reasoning): then only the last
    assistant turn is trained, and the sample says so (`last_turn_only`).
    """
    messages = list(chat.messages)
    full = _render(tokenizer, template, messages, False, chat.where)
    if train_on_prompt:
        return ((full, True),), False
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    segments: list[tuple[str, bool]] = []
    done = ""
    for i in answers:
        before = _render(tokenizer, template, messages[:i], True, chat.where)
        after = _render(tokenizer, template, messages[:i + 1], False, chat.where)
        if not (before.startswith(done) and after.startswith(before)):
            return _last_turn(chat, tokenizer, template, answers[-1], full), True
        segments += [(before[len(done):], False), (after[len(before):], True)]
        done = after
    if not full.startswith(done):
        return _last_turn(chat, tokenizer, template, answers[-1], full), True
    if full[len(done):]:
        segments.append((full[len(done):], False))
    return tuple(s for s in segments if s[0]), False


def _last_turn(chat: Chat, tokenizer: Any, template: str, last: int,
               full: str) -> tuple[tuple[str, bool], ...]:
    messages = list(chat.messages)
    before = _render(tokenizer, template, messages[:last], True, chat.where)
    after = _render(tokenizer, template, messages[:last + 1], False, chat.where)
    if not (after.startswith(before) and full.startswith(after)):
        raise UsageError("--dataset", chat.where, "the chat template renders this conversation "
                         "so that no assistant turn can be located in it",
                         "pass --chat-template chatml or llama3, or --train-on-prompt")
    segments = ((before, False), (after[len(before):], True), (full[len(after):], False))
    return tuple(s for s in segments if s[0])


def _render(tokenizer: Any, template: str, messages: list[dict[str, Any]],
            generation_prompt: bool, where: str) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except (TemplateError, TypeError, ValueError, KeyError, IndexError) as err:
        # Templates check their input with raise_exception ("roles must alternate ...").
        raise UsageError("--dataset", where, f"the chat template refused it: {err}",
                         "fix this conversation's turns, or pick another --chat-template") \
            from None
