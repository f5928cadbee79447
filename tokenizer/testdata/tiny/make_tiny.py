"""Build the small test tokenizer from Qwen3's tokenizer.json.

The tiny tokenizer keeps Qwen3's 256 byte tokens, its first 718 merges (whose results are
ids 256..973 in Qwen3 too) and its 26 added tokens renumbered to 974..999, so it has a
vocabulary of exactly 1000 ids and the same pipeline, added tokens and chat template.
Tests that do not need the real vocabulary use it; it is small enough to commit.

Usage: python3 make_tiny.py QWEN3_TOKENIZER_DIR OUT_DIR
"""
import json
import os
import sys

MERGES = 718


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)

    vocab = tok["model"]["vocab"]
    merges = tok["model"]["merges"][:MERGES]
    keep = {s: i for s, i in vocab.items() if i < 256 + MERGES}
    for left, right in merges:
        assert left in keep and right in keep and keep[left + right] < 256 + MERGES

    renumber = {}
    for n, added in enumerate(tok["added_tokens"]):
        renumber[str(added["id"])] = str(256 + MERGES + n)
        added["id"] = 256 + MERGES + n

    tok["model"]["vocab"] = keep
    tok["model"]["merges"] = merges
    cfg["added_tokens_decoder"] = {renumber[k]: v for k, v in cfg["added_tokens_decoder"].items()}

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
