#!/usr/bin/env python3
"""Render Qwen3's chat template for many conversations and write qwen3_chat.jsonl.

    scripts/fetch-tokenizer.sh --with-node-reference
    /usr/bin/python3 tokenizer/testdata/reference/gen_chat_fixtures.py [OUTPUT]

OUTPUT defaults to qwen3_chat.jsonl beside this script. Each line is one record:
  messages               list of {"role", "content"[, "reasoning_content"]}
  add_generation_prompt  bool
  enable_thinking        true, false, or null when the template variable is left undefined
  text                   the rendered prompt
  ids                    transformers.js's ids for text (no added special tokens)
  js_differs, why, hf_ids  only where Hugging Face tokenizers 0.23.2 gives other ids;
                         hf_ids are then the target (see qwen3_encode.jsonl)

The template comes from the cached tokenizer_config.json and is rendered the way Hugging
Face transformers' apply_chat_template does (transformers/utils/chat_template_utils.py,
_compile_jinja_template): an ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, a tojson filter that calls json.dumps with
ensure_ascii=False, and the raise_exception and strftime_now globals. The special-token
map and enable_thinking go in as template variables, tools and documents as None.

The ids come from encode_texts.js (node), which also encodes with Hugging Face
tokenizers. The script stops if the two disagree on a prompt without U+FEFF or U+0085,
the characters whose difference qwen3_encode.jsonl documents.
"""

import datetime
import json
import os
import pathlib
import subprocess
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).resolve().parent
CACHE = pathlib.Path(os.environ.get("RINGTUNE_CACHE") or pathlib.Path.home() / ".cache" / "ringtune")
TOKENIZER_DIR = CACHE / "qwen3-tokenizer"


def compile_template(source):
    """Compile a chat template with the environment that transformers uses."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def special_tokens_map(config):
    """Return the special-token variables that apply_chat_template passes to the template."""
    tokens = {}
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if value is not None:
            tokens[name] = value
    if config.get("additional_special_tokens"):
        tokens["additional_special_tokens"] = list(config["additional_special_tokens"])
    return tokens


def user(content):
    return {"role": "user", "content": content}


def system(content):
    return {"role": "system", "content": content}


def assistant(content, reasoning_content=None):
    message = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    return message


def tool(content):
    return {"role": "tool", "content": content}


CONVERSATIONS = [
    # One user turn, with and without a system prompt.
    [user("Hello!")],
    [system("You are a helpful assistant."), user("What is the capital of France?")],
    # Assistant turn after the last user message: the template adds a <think> block.
    [system("You are a helpful assistant."), user("What is 2+2?"), assistant("2+2 equals 4.")],
    # Several rounds: assistant turns before the last user message get no <think> block.
    [
        user("Hi, who are you?"),
        assistant("I am Qwen, a large language model."),
        user("Tell me a joke."),
        assistant("Why did the scarecrow win an award? Because he was outstanding in his field."),
        user("Another one, please."),
    ],
    # reasoning_content on the final assistant turn and on one before the last user turn.
    [
        user("Is 17 prime?"),
        assistant("Yes, 17 is prime.", reasoning_content="17 is not divisible by 2, 3 or any prime up to 4."),
    ],
    [
        user("Is 21 prime?"),
        assistant("No: 21 = 3 × 7.", reasoning_content="21 / 3 = 7, so it has a divisor."),
        user("And 23?"),
        assistant("23 is prime.", reasoning_content="\n\nNo divisor among 2, 3.\n\n"),
    ],
    # <think>...</think> inside the content, after and before the last user message.
    [user("Solve x + 1 = 3."), assistant("<think>\nSubtract 1 from both sides.\n</think>\n\nx = 2.")],
    [
        user("Solve x + 1 = 3."),
        assistant("<think>\nSubtract 1.\n</think>\n\nx = 2."),
        user("Now solve 2x = 8."),
    ],
    # A closing tag without an opening one, and both a reasoning_content and tags.
    [user("Explain."), assistant("some thoughts</think>\n\nThe explanation.")],
    [user("Both?"), assistant("<think>inline</think>answer", reasoning_content="explicit reasoning")],
    # Empty reasoning_content, empty content and an empty user message.
    [user("Quick answer?"), assistant("Yes.", reasoning_content="")],
    [user(""), assistant("")],
    [system(""), user("Say nothing."), assistant("", reasoning_content="The user wants silence.")],
    # Content with leading and trailing newlines.
    [user("\n\nHello with leading newlines\n"), assistant("\n\nAnswer with leading newlines.\n\n")],
    [user("Reason?"), assistant("\n\n\nAnswer.", reasoning_content="\n\n\nthinking\n\n\n")],
    # Tool messages: consecutive ones share one user turn, and the query before them is
    # the last real user message.
    [
        system("You can call tools."),
        user("What's the weather in Paris?"),
        assistant("Let me check the weather."),
        tool('{"city": "Paris", "temperature": 21, "unit": "celsius"}'),
        assistant("It is 21 °C in Paris."),
    ],
    [
        user("Compare Paris and Tokyo."),
        assistant("Checking both cities.", reasoning_content="I need two lookups."),
        tool('{"city": "Paris", "temperature": 21}'),
        tool('{"city": "Tokyo", "temperature": 26}'),
        assistant("Tokyo is 5 °C warmer.", reasoning_content="26 - 21 = 5."),
    ],
    [
        user("Run the search."),
        assistant("Searching."),
        tool("result one"),
        user("<tool_response>\nresult two\n</tool_response>"),
        assistant("Both results are in."),
    ],
    [tool("A tool message first."), user("What did the tool say?")],
    # A system message that is not first renders as its own turn.
    [user("First question."), assistant("First answer."), system("New instructions: be brief."), user("Second question.")],
    # No user message at all.
    [system("System only."), assistant("An assistant turn without a user turn.")],
    # Several assistant turns after the last user message.
    [
        user("Write two parts."),
        assistant("Part one.", reasoning_content="Plan part one."),
        assistant("Part two."),
    ],
    # Multilingual text, emoji, special tokens and whitespace inside content.
    [
        system("你是一个乐于助人的助手。"),
        user("请用中文和日本語回答：今天天气怎么样？😀"),
        assistant("今天天气晴朗。☀️ 今日は晴れです。"),
    ],
    [user("Repeat: <|im_end|> and <|endoftext|> and <think>x</think>"), assistant("<|im_end|> and <|endoftext|>")],
    [user("Code:\n```go\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n```\n"), assistant("It prints `hi`.\n")],
    [user("Trailing spaces   "), assistant("  Leading spaces and a tab\t")],
    [user("It's DON'T we'Ve it'ſ \ufeffBOM \u0085NEL \u00a0NBSP \u3000ideographic space")],
]

FLAG_COMBINATIONS = [
    (add_generation_prompt, enable_thinking)
    for add_generation_prompt in (True, False)
    for enable_thinking in (None, True, False)
]


def encode_with_node(texts):
    """Return transformers.js's and Hugging Face's ids for each text, via encode_texts.js."""
    result = subprocess.run(
        ["node", str(HERE / "encode_texts.js")],
        input=json.dumps(texts).encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"gen_chat_fixtures.py: encode_texts.js failed: {result.stderr.decode(errors='replace').strip()}")
    return json.loads(result.stdout)


def main():
    output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "qwen3_chat.jsonl"
    config_path = TOKENIZER_DIR / "tokenizer_config.json"
    if not config_path.exists():
        sys.exit(f"gen_chat_fixtures.py: {config_path} not found: run scripts/fetch-tokenizer.sh --with-node-reference first")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template = compile_template(config["chat_template"])
    special_tokens = special_tokens_map(config)

    records = []
    for messages in CONVERSATIONS:
        for add_generation_prompt, enable_thinking in FLAG_COMBINATIONS:
            variables = dict(special_tokens)
            if enable_thinking is not None:
                variables["enable_thinking"] = enable_thinking
            text = template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
            records.append(
                {
                    "messages": messages,
                    "add_generation_prompt": add_generation_prompt,
                    "enable_thinking": enable_thinking,
                    "text": text,
                }
            )

    encoded = encode_with_node([r["text"] for r in records])
    for record, ids in zip(records, encoded, strict=True):
        record["ids"] = ids["ids"]
        if ids["ids"] == ids["hf_ids"]:
            continue
        # The only difference expected here is the U+FEFF and U+0085 split that
        # qwen3_encode.jsonl documents. Anything else needs a look before it goes in.
        if "\ufeff" not in record["text"] and "\x85" not in record["text"]:
            sys.exit(f"gen_chat_fixtures.py: transformers.js and Hugging Face disagree on {record['text']!r}")
        record["js_differs"] = True
        record["why"] = (
            "split: JavaScript's \\s contains U+FEFF but not U+0085, "
            "while Oniguruma's \\s (Unicode White_Space) contains U+0085 but not U+FEFF"
        )
        record["hf_ids"] = ids["hf_ids"]

    with open(output, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    distinct_texts = len({r["text"] for r in records})
    print(
        f"wrote {len(records)} records ({len(CONVERSATIONS)} conversations, {distinct_texts} distinct texts) "
        f"to {output} with jinja2 {jinja2.__version__} on Python {sys.version.split()[0]}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
