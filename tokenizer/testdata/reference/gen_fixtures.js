#!/usr/bin/env node
// Generates qwen3_encode.jsonl: varied strings with their Qwen3 token ids.
//
//   scripts/fetch-tokenizer.sh --with-node-reference
//   node tokenizer/testdata/reference/gen_fixtures.js [OUTPUT]
//
// OUTPUT defaults to qwen3_encode.jsonl beside this script. Each line is one record:
//   text            the input string
//   ids             transformers.js's ids (encode with add_special_tokens false)
//   js_differs      true when Hugging Face tokenizers 0.23.2 gives other ids
//   why             the known causes of that difference found in text, joined by "; "
//   hf_ids          Hugging Face's ids, present only with js_differs; they are the target
//   unicode_added   newest Unicode version among the deliberately new characters in text
//                   (present only on those records). The tables differ: Debian's
//                   Oniguruma 6.9.8 has Unicode 14.0, Go 1.26's unicode package 15.0, the
//                   Oniguruma in tokenizers 0.23.2 16.0, and Node 20.20.2 (ICU 78.2) 17.0
//
// The strings come from fixed lists and a seeded PRNG, so a rerun writes the same file.
// Besides both tokenizers, the script compiles ../onig/split.c (needs cc and libonig-dev)
// and checks that Debian's Oniguruma splits every string like Hugging Face does, except
// where a string has characters newer than Unicode 14.0.
"use strict";

const { execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const reference = require("./qwen3_reference.js");

const SEED = 0x5eed2025;
const RANDOM_MIX_COUNT = 160;

// Returns a deterministic PRNG (mulberry32) yielding floats in [0, 1).
function mulberry32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Characters assigned after Unicode 14.0, by the version that added them. The strings in
// the "unicode versions" group use them to show where the references' tables differ.
const NEW_CHARACTERS = {
  "15.0": [0x31350, 0x11f04, 0x11f50, 0x1e4d0, 0x1e4f0], // CJK Ext. H, Kawi, Nag Mundari
  "15.1": [0x2ebf0], // CJK Ext. I
  "16.0": [0x10d50, 0x16d43, 0x16d70, 0x11bc0, 0x11bf0, 0x1e5d0, 0x1e5f1], // Garay, Kirat Rai, Sunuwar, Ol Onal
  "17.0": [0x10940, 0x16ea0, 0x1e6c0, 0x323b0], // Sidetic, Beria Erfe, Tai Yo, CJK Ext. J
};

function newestUnicodeAdded(text) {
  let newest = null;
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    for (const [version, codePoints] of Object.entries(NEW_CHARACTERS)) {
      if (codePoints.includes(cp) && (newest === null || version > newest)) newest = version;
    }
  }
  return newest;
}

const PROSE = [
  "The quick brown fox jumps over the lazy dog.",
  "Hello, world! How are you doing today?",
  "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out at 02:56 UTC.",
  "She said, \"It's not what you think\" — and then she left.",
  "Mr. O'Neill's dog (a 3-year-old beagle) doesn't like rain...",
  "Distributed training splits each batch across N workers, then all-reduces the gradients.",
  "Wait... what?! No way!!! That's *amazing*.",
  "e.g. i.e. etc. vs. Dr. St. Jr. U.S.A. a.m. p.m.",
  "   leading spaces and trailing spaces   ",
  "Tabs\tbetween\twords\tand\ttrailing\t",
  "Line one\nLine two\n\nLine four after a blank line\n",
  "Windows line endings\r\nsecond line\r\n\r\nfourth\r\n",
  "Old Mac line endings\rsecond\rthird",
  "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #@!",
  "camelCaseWords and snake_case_words and kebab-case-words and SCREAMING_SNAKE",
  "Price: $1,234.56 (≈ €1.130,00) — 15% off; 2×3=6; 10/3≈3.33",
  "naïve café résumé façade jalapeño Zürich Ångström Øresund",
  "Ünïcödé with dïäcrïtïcs everywhere: àáâãäå èéêë ìíîï òóôõö ùúûü",
  "straße STRASSE ẞ ß ﬁ ﬂ ﬀ ﬃ ﬄ ŉ ǅ ǈ ǋ",
  "Ελληνικά: Γειά σου Κόσμε! Σίσυφος ς σ Σ",
  "Русский текст: Привет, мир! Ёжик в тумане.",
  "Українська: Ґанок, їжак, є, і.",
  "עברית: שלום עולם! מה שלומך?",
  "العربية: مرحبا بالعالم! كيف حالك؟ ١٢٣٤٥٦٧٨٩٠",
  "فارسی: سلام دنیا ۱۲۳۴۵۶۷۸۹۰",
  "हिन्दी: नमस्ते दुनिया! क्षत्रिय, द्वार, श्री, कृष्ण। ०१२३४५६७८९",
  "বাংলা: আমি বাংলায় গান গাই। ০১২৩",
  "தமிழ்: வணக்கம் உலகம்! ௧௨௩",
  "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ ๑๒๓",
  "ລາວ: ສະບາຍດີ",
  "ქართული: გამარჯობა მსოფლიო",
  "Հայերեն: Բարեւ աշխարհ",
  "አማርኛ: ሰላም ለዓለም",
  "ᐃᓄᒃᑎᑐᑦ ᑕᑯᔪᖅ",
  "Tiếng Việt: Xin chào thế giới! Đây là một câu tiếng Việt có dấu.",
  "中文：你好，世界！今天天气很好，我们去公园散步吧。",
  "繁體中文：這是一個測試句子，包含標點符號「引號」與『書名號』。",
  "数学公式：设 x² + y² = r²，则圆的面积为 πr²。",
  "日本語：こんにちは世界！カタカナとひらがなと漢字が混ざっています。",
  "ｶﾀｶﾅ 半角カタカナ と 全角ＡＢＣ１２３ と 「括弧」。",
  "한국어: 안녕하세요 세계! 한글은 조합형 문자입니다.",
  "Mixed 中文 and English 和 日本語 and 한국어 in one line.",
  "The model 通义千问 (Qwen) was trained on 36T tokens.",
  "Emoji: 😀😃😄😁 😆 🙂🙃 👍🏽 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇯🇵🇨🇳 ❤️ ✨",
  "Keycaps and modifiers: 1️⃣ #️⃣ *️⃣ ✌🏿 🤝🏻 🧑🏾‍🚀 🫶",
  "Flags: 🇩🇪 🇫🇷 🇬🇧 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🏴‍☠️",
  "Math: ∀x∈ℝ, ∃y: x<y ∧ y≤x+1 ⇒ ∑ᵢ aᵢ ≠ ∏ⱼ bⱼ; ∫₀^∞ e^{-x²} dx = √π/2",
  "Symbols: © ® ™ § ¶ † ‡ • ‰ ′ ″ ← → ↑ ↓ ↔ ⇐ ⇒ ∞ ≈ ≡ ≠ ± × ÷",
  "Box drawing: ┌──┬──┐ │ a│ b│ └──┴──┘ ░▒▓█",
  "Fractions and numerals: ½ ⅓ ¼ ¾ ⅛ Ⅻ ⅻ ① ⑳ ² ³ ¹ ₀ ₉",
  "Non-ASCII digits: ٠١٢٣٤٥٦٧٨٩ ۰۱۲ ०१२ ০১২ ๐๑๒ ０１２３ 𝟎𝟏𝟐 𝟘𝟙",
  "Roman numerals: Ⅰ Ⅱ Ⅲ Ⅳ Ⅴ ⅰ ⅱ ⅲ ⅳ ⅴ and ideographic 〇〡〢〣",
  "Numbers: 3.14159 2.71828 -42 +7 1e-10 0x1F 0b1010 1_000_000 007",
  "Dates: 2024-01-15T08:30:00Z, 15/01/2024, Jan. 15th, 2024",
  "Phone: +1 (555) 123-4567, ext. 89",
  "URL: https://example.com/path/to/page?query=1&lang=en#section-2",
  "Email me at first.last+tag@example.co.uk or admin@例え.jp",
  "File paths: /usr/local/bin/go C:\\Users\\name\\Documents\\file.txt ~/.cache/ringtune",
  "Hashtags #MachineLearning and @mentions and $variables and %percent",
];

const CODE = [
  "func main() {\n\tfmt.Println(\"Hello, 世界\")\n}\n",
  "package tokenizer\n\nimport (\n\t\"errors\"\n\t\"fmt\"\n)\n\n// Load reads tokenizer.json.\nfunc Load(dir string) (*Tokenizer, error) {\n\tif dir == \"\" {\n\t\treturn nil, errors.New(\"empty dir\")\n\t}\n\treturn nil, fmt.Errorf(\"not implemented: %q\", dir)\n}\n",
  "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nprint(fib(10))  # 55\n",
  "class Foo:\n    def __init__(self, x: int) -> None:\n        self.x = x  # comment\n\n    def __repr__(self):\n        return f\"Foo({self.x!r})\"\n",
  "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`);\n// TODO: handle NaN\n",
  "#include <stdio.h>\n\nint main(int argc, char **argv) {\n    printf(\"%d\\n\", argc);\n    return 0;\n}\n",
  "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY name DESC;",
  "<!DOCTYPE html>\n<html lang=\"en\">\n  <body>\n    <p class=\"note\">Hello &amp; welcome!</p>\n  </body>\n</html>\n",
  "{\"name\": \"ringtune\", \"version\": \"0.1.0\", \"tags\": [\"qwen3\", \"bpe\"], \"nested\": {\"a\": 1, \"b\": [true, false, null]}}",
  "{\n  \"model\": \"Qwen3-0.6B\",\n  \"lr\": 3e-4,\n  \"betas\": [0.9, 0.95]\n}\n",
  "key: value\nlist:\n  - item one\n  - item two\nnested:\n    deep: true\n",
  "# Title\n\n## Subtitle\n\n- bullet **bold** and _italic_\n- `inline code`\n\n```go\nx := 1\n```\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
  "$ go test ./... -run TestEncode -count=1\nok  \tgithub.com/ringtune/ringtune/tokenizer\t0.123s\n",
  "if (x && !y || z != 0) { return x >> 2 << 1; } else if (a <= b) { a += b; a -= 1; a *= 2; a /= 3; a %= 4; }",
  "\t\tindented with two tabs\n    indented with four spaces\n  \t mixed indentation\n",
  "  \n\t\n   \n",
  "x = [1, 2, 3]\ny = {'a': 1, \"b\": 2}\nz = (x, y)\n",
  "regex: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$",
  "diff --git a/f.go b/f.go\n@@ -1,3 +1,3 @@\n-old line\n+new line\n context\n",
  "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
];

const SPECIAL_TOKENS = [
  "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_end|>",
  "<|vision_pad|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
  "<think>", "</think>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_sep|>",
];

const SPECIAL_TOKEN_TEXTS = [
  "<|im_start|>user\nhi<|im_end|>",
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>assistant\n<think>\nLet me think.\n</think>\n\nThe answer is 4.<|im_end|>\n",
  "<think>x</think>",
  "<think></think>",
  "<think>\n\n</think>\n\n",
  "abc<|endoftext|>def",
  "abc <|endoftext|> def",
  "<|endoftext|><|endoftext|><|endoftext|>",
  "  <|endoftext|>  ",
  "\n<|endoftext|>\n",
  "word<|im_end|>word<|im_start|>word",
  "<|im_end",
  "<|im_end|",
  "|im_end|>",
  "< |im_end| >",
  "<|IM_END|>",
  "<|endoftext|>'s",
  "don't<|endoftext|>'t",
  "<think >not a token</think >",
  "<<think>>",
  "<|<|im_start|>|>",
  "text<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>",
  "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>describe",
  "<tool_response>\n{\"temp\": 21}\n</tool_response>",
];

const EDGE_TEXTS = [
  "",
  " ",
  "  ",
  "\n",
  "\r\n",
  "\t",
  "a",
  "'",
  "''",
  "'s",
  "x'",
  "\ufeffHello world",
  "\ufeff\ufeffHello",
  "\ufeff",
  " \ufeff",
  "\ufeff ",
  "a \ufeff b",
  "Hello\ufeff world",
  "one\ufeff\ntwo",
  "a\u0085b",
  "a \u0085b",
  "a\u0085 b",
  "a \u0085 b",
  "line\u0085next line",
  "\u0085\u0085\u0085",
  "trailing\u0085",
  "x\u0085\n",
  "a\u00a0b",
  "a\u00a0\u00a0b",
  "a \u00a0b",
  "nbsp at end\u00a0",
  "a\u2028b",
  "a\u2029b",
  "a \u2028 b",
  "全角\u3000空白\u3000\u3000です",
  "a\u3000b",
  "a\u200bb",
  "a \u200b b",
  "a\u180eb",
  "a\u1680b",
  "a\u2003b\u2009c\u202fd\u205fe",
  "a\u000bb\u000cc",
  "e\u0301",
  "cafe\u0301 cafe\u0301s",
  "A\u030a ångström",
  "\u1100\u1161\u11a8 (conjoining jamo for 각)",
  "o\u0308\u0304 and u\u0308\u0301",
  "\u0301",
  "\u0301\u0301\u0301abc",
  " \u0301",
  "a \u0301b",
  "1\u0301",
  "\u20dd\u20dd",
  "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
  "क्षि द्ध्र ह्म ज्ञ",
  "\u0915\u093c \u0921\u093c\u0940 (nukta forms)",
  "\u0928\u093f\u0903",
  "\ufb01 \ufb02 \u2126 \u212b \u00c5",
  "\u0041\u030a\u0301",
  "\ud55c\uad6d\uc5b4",
  "\u1112\u1161\u11ab",
  "a\u1abf\u0301",
  "\u{11935}\u{11930}",
  "Siddham \u{115b8}\u{115af} Grantha \u{11347}\u{1133e}",
  "Kirat Rai \u{16d67}\u{16d67} and \u{16d63}\u{16d67}",
  "\u{1611e}\u{1611e} Gurung Khema",
  "\u{113c2}\u{113c2} Tulu-Tigalari",
  "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝 𝑰𝒕𝒂𝒍𝒊𝒄 𝙼𝚘𝚗𝚘",
  "\u{1d7ce}\u{1d7cf}\u{1d7d0} math digits",
  "Ⓐⓑⓒ ⑴⑵ ㈠㈡ ㊀㊁",
  "\u0000 null and \u0001 control \u007f delete",
  "\u200d\u200c zero width joiner and non-joiner",
  "\u202eright-to-left override\u202c",
  "\ue000\uf8ff private use",
  "\u{10ffff}\u{f0000} plane 15/16",
  "\ufffd replacement character",
  "!!!???...,,,;;;:::",
  "((()))[[[]]]{{{}}}",
  "---___===+++***",
  "....................................................................",
  "😀😀😀😀😀😀😀😀😀😀😀😀",
  "a😀b😀c",
  "😀 😀  😀   😀",
  "🇺🇸🇺🇸🇺🇸",
  "👨‍👩‍👧‍👦👨‍👩‍👧‍👦",
  "123456789012345678901234567890",
  "1 2 3 4 5",
  "12abc34def",
  "v1.2.3-rc.4+build.5",
];

const LONG_TEXTS = [
  "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(6),
  "a".repeat(700),
  "ab".repeat(300),
  "你好".repeat(150),
  "0123456789".repeat(30),
  " ".repeat(300),
  " ".repeat(50) + "x",
  "\n".repeat(80),
  "\t".repeat(40) + "end",
  "\r\n".repeat(40),
  " \n".repeat(60),
  "=".repeat(200),
  "😀".repeat(100),
  "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
  "supercalifragilisticexpialidocious ".repeat(12),
  "https://example.com/" + "very/long/path/segment/".repeat(12) + "index.html",
];

// Returns the contraction strings: every suffix in several letter cases and contexts,
// apostrophe look-alikes, and the long s (U+017F), which case-folds to s.
function contractionTexts() {
  const suffixes = ["s", "t", "re", "ve", "m", "ll", "d"];
  const out = [];
  for (const suffix of suffixes) {
    const cases = new Set([suffix, suffix.toUpperCase()]);
    if (suffix.length === 2) {
      cases.add(suffix[0].toUpperCase() + suffix[1]);
      cases.add(suffix[0] + suffix[1].toUpperCase());
    }
    for (const variant of cases) {
      out.push(`it'${variant}`);
      out.push(`IT'${variant} ok`);
      out.push(`x '${variant}x`);
      out.push(`'${variant}`);
    }
  }
  out.push("DON'T", "don't", "Don'T", "it'S", "we'Ve", "WE'VE", "they'RE", "I'M", "you'LL", "he'D");
  out.push("I'd've", "y'all'd've", "'tis", "o'clock", "rock 'n' roll", "'twas", "ma'am");
  out.push("it's it’s it‘s itʼs it＇s it`s it′s");
  out.push("don’t won’t can’t", "DON’T", "the dogs' bowls", "James' book", "'quoted' \"double\"");
  out.push("it'ſ", "IT'ſ", "'ſ", "it'ſa", "it'ſ a", "don'ſt", "we'ſ ", "it'ſſ", "it’ſ", "x 'ſ", "'ſ'ſ'ſ");
  out.push("'S'T'RE'VE'M'LL'D", "'s's's", "''s", "'ss", "'tt", "'rest", "'dd");
  out.push("it'K it'K (Kelvin sign after an apostrophe)");
  return out;
}

// Returns each whitespace-like character in several contexts: between words, doubled
// before a word, trailing, leading, before punctuation and before a newline.
function whitespaceTexts() {
  const chars = [
    " ", "\t", "\n", "\r", "\r\n", "\u000b", "\u000c", "\u0085", "\u00a0", "\u1680", "\u180e",
    "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006", "\u2007", "\u2008",
    "\u2009", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff",
  ];
  const out = [];
  for (const c of chars) {
    out.push(`a${c}b`);
    out.push(`word${c}${c} next`);
    out.push(`end${c}`);
    out.push(`${c}start`);
    out.push(`x${c}!`);
    out.push(`x ${c}\ny`);
  }
  return out;
}

function specialTokenContexts() {
  const out = [];
  for (const token of SPECIAL_TOKENS) {
    out.push(`hello${token}world`);
    out.push(` ${token} `);
    out.push(`${token}\n${token}`);
  }
  return out;
}

function unicodeVersionTexts() {
  const out = [];
  for (const [version, codePoints] of Object.entries(NEW_CHARACTERS)) {
    const chars = codePoints.map((cp) => String.fromCodePoint(cp)).join("");
    out.push(`Unicode ${version}: a${chars}b ${chars}`);
    for (const cp of codePoints) {
      const c = String.fromCodePoint(cp);
      out.push(`a${c}a ${c}${c} !${c}`);
    }
  }
  return out;
}

// Fragment pools for the random mixes. Each draw picks a pool, then a fragment.
const MIX_POOLS = [
  ["the", "The", "THE", "quick", "brown", "fox", "tokenizer", "Qwen", "gradient", "all-reduce"],
  ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'ſ", "’s", "'"],
  [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\u2028", "\u0085", "\ufeff", "\u200b", "\u000b"],
  ["0", "7", "42", "2024", "3.14", "½", "²", "٣", "۷", "५", "０", "Ⅻ", "①", "𝟗"],
  [".", ",", "!", "?", ";", ":", "...", "--", "(", ")", "[", "]", "{", "}", "\"", "#", "@", "$", "%", "&", "*", "/", "\\", "|", "~", "`", "^", "<", ">", "=", "+", "_"],
  ["中文", "你好", "世界", "模型", "こんにちは", "カタカナ", "漢字", "한국어", "안녕", "Привет", "Ελλάδα", "مرحبا", "שלום", "नमस्ते", "क्षि", "สวัสดี", "Tiếng"],
  ["😀", "👍🏽", "👩‍💻", "🇯🇵", "🏳️‍🌈", "❤️", "✨", "🫶", "1️⃣", "🧑🏾‍🚀"],
  ["e\u0301", "\u0301", "A\u030a", "\u0915\u094d", "\u093f", "\u20dd", "\u0903", "\u1100\u1161"],
  ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>"],
  ["func", "return", "if err != nil {", "\treturn err\n}", "def ", "print(x)", "x := 1", "=>", "::", "->", "&&", "||", "!=", "==", "+=", "i++"],
];

function randomMixes(random) {
  const pick = (list) => list[Math.floor(random() * list.length)];
  const out = [];
  for (let i = 0; i < RANDOM_MIX_COUNT; i++) {
    const fragments = 3 + Math.floor(random() * 25);
    let text = "";
    for (let j = 0; j < fragments; j++) {
      text += pick(pick(MIX_POOLS));
    }
    out.push(text);
  }
  return out;
}

function allTexts() {
  const random = mulberry32(SEED);
  const groups = [
    PROSE,
    CODE,
    SPECIAL_TOKEN_TEXTS,
    EDGE_TEXTS,
    LONG_TEXTS,
    contractionTexts(),
    whitespaceTexts(),
    specialTokenContexts(),
    unicodeVersionTexts(),
    randomMixes(random),
  ];
  const seen = new Set();
  const texts = [];
  for (const group of groups) {
    for (const text of group) {
      if (!seen.has(text)) {
        seen.add(text);
        texts.push(text);
      }
    }
  }
  return texts;
}

// Compiles ../onig/split.c into a temporary directory and returns the binary's path.
function buildOnigSplit() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "onig-split-"));
  const binary = path.join(dir, "split");
  const source = path.join(__dirname, "..", "onig", "split.c");
  try {
    execFileSync("cc", ["-O2", "-o", binary, source, "-lonig"], { stdio: ["ignore", "inherit", "inherit"] });
  } catch (err) {
    throw new Error(`compiling ${source} failed (needs cc and libonig-dev): ${err.message}`);
  }
  return binary;
}

// Returns, for each text, the byte offsets at which Debian's Oniguruma ends each piece.
function onigSplitBoundaries(binary, texts) {
  const chunks = [];
  for (const text of texts) {
    const bytes = Buffer.from(text, "utf8");
    const header = Buffer.alloc(4);
    header.writeUInt32LE(bytes.length);
    chunks.push(header, bytes);
  }
  const output = execFileSync(binary, { input: Buffer.concat(chunks), maxBuffer: 1 << 30 });
  const lines = output.toString("utf8").split("\n");
  lines.pop(); // the empty string after the final newline
  if (lines.length !== texts.length) {
    throw new Error(`split returned ${lines.length} lines for ${texts.length} texts`);
  }
  return lines.map((line) => (line === "" ? [] : line.split(" ").map(Number)));
}

function boundariesOf(pieces) {
  const ends = [];
  let offset = 0;
  for (const piece of pieces) {
    offset += Buffer.byteLength(piece, "utf8");
    ends.push(offset);
  }
  return ends;
}

// Quotes text as JSON with every non-ASCII UTF-16 unit escaped, so that invisible
// characters such as U+FEFF show in a terminal.
function asciiQuote(text) {
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

const sameArray = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// Explains why transformers.js gives other ids than Hugging Face for text: every known
// cause that the text contains, joined by "; ". A difference with none of them is
// reported as unknown so that a rerun shows it.
function explainDifference(text, jsNormalized, hfNormalized, splitsDiffer) {
  const causes = [];
  if (jsNormalized !== hfNormalized) {
    causes.push(
      "NFC: tokenizers 0.23.2 (unicode-normalization-alignments 0.1.12) has old Unicode " +
        "tables, so it skips compositions and combining classes it does not know, " +
        "which String.prototype.normalize applies",
    );
  }
  if (splitsDiffer) {
    if (text.includes("\ufeff")) {
      causes.push("split: JavaScript's \\s contains U+FEFF, but Oniguruma's \\s (Unicode White_Space) does not");
    }
    if (text.includes("\u0085")) {
      causes.push("split: Oniguruma's \\s (Unicode White_Space) contains U+0085, but JavaScript's \\s does not");
    }
    if (/'\u017f/.test(text)) {
      causes.push(
        "split: Oniguruma's (?i:'s) matches 'ſ because ſ (U+017F) case-folds to s, " +
          "but transformers.js rewrites the group as '[sS]",
      );
    }
    if (newestUnicodeAdded(text) === "17.0") {
      causes.push(
        `split: Node ${process.version} (Unicode ${process.versions.unicode}) classifies the characters ` +
          "added in Unicode 17.0 as \\p{L} or \\p{N}, but the Oniguruma in tokenizers 0.23.2 (Unicode 16.0) does not",
      );
    }
  }
  if (causes.length === 0) {
    causes.push("unknown: the splits and the NFC output agree, so the difference is in another step");
  }
  return causes.join("; ");
}

async function main() {
  const outputPath = process.argv[2] || path.join(__dirname, "qwen3_encode.jsonl");
  const texts = allTexts();

  const js = reference.loadTransformersJS();
  const hf = reference.loadHuggingFace();
  const hfSplit = reference.loadHuggingFaceSplit();
  const hfNormalizer = hf.getNormalizer();
  const onigBinary = buildOnigSplit();
  const onigVersion = execFileSync(onigBinary, ["--version"]).toString().trim();
  const onigBoundaries = onigSplitBoundaries(onigBinary, texts);

  const stats = { records: 0, jsDiffers: 0, jsSplitDiffers: 0, jsSplitDiffersSameIds: 0, unicodeAdded: 0 };
  const jsSplitExamples = [];
  const lines = [];
  for (let i = 0; i < texts.length; i++) {
    const text = texts[i];
    const record = { text, ids: reference.encodeTransformersJS(js, text) };
    const hfIds = await reference.encodeHuggingFace(hf, text);

    // Debian's Oniguruma must split like Hugging Face's bundled one, except on
    // characters that its Unicode 14.0 tables do not have.
    const hfBoundaries = boundariesOf(hfSplit(text));
    const unicodeAdded = newestUnicodeAdded(text);
    if (!sameArray(hfBoundaries, onigBoundaries[i]) && unicodeAdded === null) {
      throw new Error(
        `${onigVersion} and Hugging Face split ${JSON.stringify(text)} differently: ` +
          `[${onigBoundaries[i]}] vs [${hfBoundaries}]`,
      );
    }

    const jsSplitDiffers = !sameArray(boundariesOf(reference.splitTransformersJS(js, text)), hfBoundaries);
    if (jsSplitDiffers) {
      stats.jsSplitDiffers++;
      if (jsSplitExamples.length < 12) jsSplitExamples.push(text);
    }
    if (!sameArray(record.ids, hfIds)) {
      const jsNormalized = text.normalize("NFC");
      const hfNormalized = hfNormalizer.normalizeString(text);
      record.js_differs = true;
      record.why = explainDifference(text, jsNormalized, hfNormalized, jsSplitDiffers);
      record.hf_ids = hfIds;
      stats.jsDiffers++;
    } else if (jsSplitDiffers) {
      stats.jsSplitDiffersSameIds++;
    }
    if (unicodeAdded !== null) {
      record.unicode_added = unicodeAdded;
      stats.unicodeAdded++;
    }
    lines.push(JSON.stringify(record));
    stats.records++;
  }

  fs.writeFileSync(outputPath, lines.join("\n") + "\n");
  const size = fs.statSync(outputPath).size;
  console.error(`wrote ${stats.records} records (${size} bytes) to ${outputPath}`);
  console.error(
    `references: transformers.js via @lenml/tokenizers ${reference.packageVersion("@lenml/tokenizers")}, ` +
      `Hugging Face tokenizers ${reference.packageVersion("tokenizers")}, ${onigVersion}, Node ${process.version}`,
  );
  console.error(`ids differ between transformers.js and Hugging Face: ${stats.jsDiffers}`);
  console.error(
    `splits differ between transformers.js and Hugging Face's Oniguruma: ${stats.jsSplitDiffers} ` +
      `(${stats.jsSplitDiffersSameIds} of them with equal ids)`,
  );
  for (const text of jsSplitExamples) console.error(`  ${asciiQuote(text)}`);
  console.error(`records with characters newer than Unicode 14.0: ${stats.unicodeAdded}`);
  fs.rmSync(path.dirname(onigBinary), { recursive: true, force: true });
}

main().catch((err) => {
  console.error(`gen_fixtures.js: ${err.message}`);
  process.exit(1);
});
