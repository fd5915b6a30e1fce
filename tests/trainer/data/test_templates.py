from __future__ import annotations

import pytest
from mgft_train.data.formats import Chat, PromptCompletion, Row, Text
from mgft_train.data.templates import (
    BUILTIN_CHAT_TEMPLATES,
    render_prompt,
    resolve_chat_template,
    to_sample,
)
from mgft_train.errors import UsageError

ROW = Row(instruction="Reverse the words.", input="red blue green", output="green blue red")
CHATML = BUILTIN_CHAT_TEMPLATES["chatml"]
TALK = Chat(messages=(
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"},
    {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"},
    {"role": "assistant", "content": "2"}), where="talk.jsonl:7")


def test_alpaca_prompt_has_an_input_section_only_when_input_is_given():
    with_input = render_prompt(ROW)
    without = render_prompt(Row(instruction="Say hi.", output="hi"))
    assert "### Input:\nred blue green\n" in with_input
    assert with_input.endswith("### Response:\n")
    assert without == "### Instruction:\nSay hi.\n\n### Response:\n"


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_fixed_formats_train_the_response_and_the_prompt_only_on_request(train_on_prompt):
    alpaca = to_sample(ROW, None, None, train_on_prompt)
    assert alpaca.segments == ((render_prompt(ROW), train_on_prompt), (ROW.output, True))
    assert (alpaca.bos, alpaca.eos) == (True, True)
    pc = to_sample(PromptCompletion(prompt="p", completion="c"), None, None, train_on_prompt)
    assert pc.segments == (("p", train_on_prompt), ("c", True))
    text = to_sample(Text(text="all of it"), None, None, train_on_prompt)
    assert text.segments == (("all of it", True),)


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer):
    sample = to_sample(TALK, tokenizer, CHATML, train_on_prompt=False)
    full = tokenizer.apply_chat_template(list(TALK.messages), chat_template=CHATML,
                                         tokenize=False)
    assert "".join(text for text, _ in sample.segments) == full
    assert [text for text, trained in sample.segments if trained] == [
        "1<|im_end|>\n", "2<|im_end|>\n"]
    assert sample.segments[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\none<|im_end|>\n"
        "<|im_start|>assistant\n", False)
    assert (sample.bos, sample.eos, sample.last_turn_only) == (False, False, False)


def test_train_on_prompt_trains_the_whole_conversation(tokenizer):
    sample = to_sample(TALK, tokenizer, BUILTIN_CHAT_TEMPLATES["llama3"], train_on_prompt=True)
    ((text, trained),) = sample.segments
    assert trained and text.startswith("<s><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("2<|eot_id|>")


def test_a_template_that_rewrites_earlier_turns_trains_the_last_turn_only(tokenizer):
    # Like templates that drop past reasoning: an earlier answer renders differently once
    # the conversation goes on, so its tokens cannot be located in the whole.
    rewriting = ("{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' and "
                 "not loop.last %}(earlier){% else %}{{ m['content'] }}{% endif %}; "
                 "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    sample = to_sample(TALK, tokenizer, rewriting, train_on_prompt=False)
    assert sample.last_turn_only
    assert [text for text, trained in sample.segments if trained] == ["2; "]
    assert "".join(t for t, _ in sample.segments) == (
        "system: Be brief.; user: one; assistant: (earlier); user: two; assistant: 2; ")


def test_a_template_refusing_a_conversation_names_the_row(tokenizer):
    strict = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(UsageError) as err:
        to_sample(TALK, tokenizer, strict, train_on_prompt=False)
    assert str(err.value) == (
        "--dataset talk.jsonl:7: the chat template refused it: Conversation roles must "
        "alternate user/assistant; fix this conversation's turns, or pick another "
        "--chat-template")


def test_a_tokenizer_without_a_chat_template_fails_naming_the_fix(tokenizer):
    assert tokenizer.chat_template is None
    with pytest.raises(UsageError) as err:
        resolve_chat_template(tokenizer, None, "/models/tiny")
    assert str(err.value) == (
        "--chat-template (not set): the tokenizer in /models/tiny has no chat template to "
        "render chat rows with; pass --chat-template chatml (or llama3, or a .jinja file), or "
        "add a chat_template to the model's tokenizer_config.json")


def test_the_tokenizers_own_template_is_the_default_and_a_name_or_file_overrides_it(
        tiny, tmp_path):
    from mgft_train.model import load_tokenizer

    own = load_tokenizer(str(tiny.model_dir))
    own.chat_template = "{{ 'mine' }}"
    assert resolve_chat_template(own, None, "m") == "{{ 'mine' }}"
    own.chat_template = {"default": "{{ 'd' }}", "tool_use": "{{ 't' }}"}
    assert resolve_chat_template(own, None, "m") == "{{ 'd' }}"
    assert resolve_chat_template(own, "chatml", "m") == CHATML
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{{ 'file' }}")
    assert resolve_chat_template(own, str(jinja), "m") == "{{ 'file' }}"
    with pytest.raises(UsageError, match="--chat-template chatl: neither a built-in template "
                                         "nor a file; use one of chatml, llama3"):
        resolve_chat_template(own, "chatl", "m")
