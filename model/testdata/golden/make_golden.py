#!/usr/bin/env python3
"""Write the golden fixtures that the Go Qwen3 model is checked against.

The script builds a small Qwen3 in plain torch, with the semantics of Hugging Face
transformers' src/transformers/models/qwen3/modeling_qwen3.py, and writes into its own
directory:

    config.json                  Hugging Face Qwen3 config, in the layout of transformers 4.51
    model.safetensors            the weights under Hugging Face names, F32, embedding tied
    case_<name>.safetensors      inputs, loss, logits of row 0 and gradients of one batch
    case_<name>.json             a summary of the same case and of the checks it passed

README.md in this directory lists every tensor and the conventions.

Precision: the weights and LoRA adapters are drawn once, rounded to float32 and stored
as F32. The whole computation (forward, loss, autograd) then runs in float64 from those
float32 values, and only the results are rounded to float32 when written. The reference
error is therefore about 1e-16, plus 6e-8 relative from the final rounding, so the Go
test's tolerance (max|delta| / max|ref| < 1e-4 per tensor) is left entirely to the Go
float32 implementation. Storing F64 would double the size for no gain, and the Go
checkpoint reader converts only F32, F16 and BF16 to float32.

Before writing, the script checks every case:
  * every example of a row, run alone, gives the same logits, loss sum and gradient
    contributions as the batch (the packed-row mask is right, and padding changes nothing);
  * the segments that Hugging Face derives from position_ids equal those from `starts`;
  * central differences in float64 agree with autograd on a few gradient coordinates;
  * a list of plausible implementation mistakes (wrong rotary pairing, q/k norm after
    rotary, wrong kv-head mapping, no packed-row mask, ...) each change some stored tensor
    by more than 10x the Go tolerance, so the fixture rejects them.

Run with Debian's python3-torch (package 1.13.1+dfsg, torch.__version__ "1.13.0a0"):
    /usr/bin/python3 model/testdata/golden/make_golden.py
The output is deterministic, so rerunning it must leave the committed files unchanged.
"""

import dataclasses
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

SEED = 20250613
IGNORE_INDEX = -100  # targets with this value take no loss, as in torch and transformers

# Model shape. hidden_size differs from num_attention_heads * head_dim (48 vs 64), as in
# Qwen3-0.6B (1024 vs 2048), so an implementation that derives head_dim from hidden_size
# or mixes up the q_proj and o_proj shapes fails to load. The sizes are small so that
# all files stay under 1 MB. The weights and two full-model gradients contain the
# parameters three times, which rules out vocab_size 1000 with hidden_size 64.
VOCAB_SIZE = 250
HIDDEN_SIZE = 48
INTERMEDIATE_SIZE = 80
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
HEAD_DIM = 16
RMS_NORM_EPS = 1e-6
ROPE_THETA = 1_000_000
MAX_POSITION_EMBEDDINGS = 512
BOS_ID = VOCAB_SIZE - 2  # plays Qwen's <|endoftext|>, which is also its pad token
EOS_ID = VOCAB_SIZE - 1  # plays Qwen's <|im_end|>
PAD_ID = BOS_ID

BATCH_SIZE = 2
SEQ_LEN = 24

# Weight scales. With normal(0, 0.02) for every weight, Hugging Face's initializer_range,
# the logits are nearly uniform at this width (mean loss 5.57 against ln 250 = 5.52), so
# the embedding is larger to give the tied head peaked logits. Next to that embedding,
# linears at 0.02 would change the residual stream by 0.6% to 6% per block. Linears
# scaled by fan-in change it by 40% to 260% (both measured on the packed batch).
# Norm weights are 1 plus noise: with weights of exactly 1, q/k norm commutes with the
# rotary embedding, and applying it after rotary would leave the logits unchanged.
EMBED_STD = 0.3
LINEAR_GAIN = 1.0  # std of a linear weight is LINEAR_GAIN / sqrt(in_features)
NORM_NOISE_STD = 0.15

# LoRA as PEFT applies it to a Linear: y = W x + (alpha / r) * B (A x), with dropout 0.
LORA_RANK = 4
LORA_ALPHA = 8
LORA_SCALING = LORA_ALPHA / LORA_RANK
# PEFT initializes lora_B to zero, which makes the gradient of lora_A zero at the start
# and would let a wrong lora_A gradient pass. The fixture uses a nonzero lora_B, as in
# an adapter that has trained for a while.
LORA_B_STD = 0.05
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_TARGETS = ATTENTION_TARGETS + ("gate_proj", "up_proj", "down_proj")
TARGET_MODULES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}

GO_TOLERANCE = 1e-4  # max|delta| / max|ref| per tensor, as the Go test compares
SIZE_LIMIT_BYTES = 1_000_000


@dataclasses.dataclass(frozen=True)
class Semantics:
    """Choices in the model's computation: Hugging Face's by default, otherwise one of
    the mistakes that VARIANTS tries against the fixture."""

    packed_mask: bool = True  # False: plain causal mask, tokens see earlier examples
    rotary: str = "half"  # "interleaved": rotate pairs (2i, 2i+1) as GPT-J does
    qk_norm: str = "before_rotary"  # or "after_rotary" or "none"
    kv_head_map: str = "hf"  # "modulo": query head h reads kv head h % num_kv_heads
    rope_theta: float = float(ROPE_THETA)
    rms_norm_eps: float = RMS_NORM_EPS
    loss_reduction: str = "tokens"  # "rows": mean of the per-row means
    lora_scaling: float = LORA_SCALING
    absolute_positions: bool = False  # True: rotary angles from 0..T-1, ignoring position_ids


HF = Semantics()

# Each variant, and when the fixture must reject it. A variant is listed for information
# where it cannot change the stored tensors (padding outputs only, an equivalent formula)
# or changes them by no more than the Go tolerance.
VARIANTS = {
    "causal_mask_only": (Semantics(packed_mask=False), "packed"),
    "interleaved_rotary": (Semantics(rotary="interleaved"), "always"),
    "qk_norm_after_rotary": (Semantics(qk_norm="after_rotary"), "always"),
    "no_qk_norm": (Semantics(qk_norm="none"), "always"),
    "kv_head_modulo": (Semantics(kv_head_map="modulo"), "always"),
    "rope_theta_10000": (Semantics(rope_theta=10000.0), "always"),
    "loss_mean_per_row": (Semantics(loss_reduction="rows"), "always"),
    "lora_scaling_1": (Semantics(lora_scaling=1.0), "lora"),
    "rms_norm_eps_1e-5": (Semantics(rms_norm_eps=1e-5), "never"),
    # Rotary scores depend only on the offset between query and key, so with the packed
    # mask in place, positions that do not restart give the same results.
    "absolute_positions": (Semantics(absolute_positions=True), "never"),
}


# ---------------------------------------------------------------------------------------
# Configuration and weights


def hf_config():
    """Return config.json with the keys and order that transformers 4.51 writes for Qwen3."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN_SIZE,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE_SIZE,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "max_window_layers": NUM_LAYERS,
        "model_type": "qwen3",
        "num_attention_heads": NUM_HEADS,
        "num_hidden_layers": NUM_LAYERS,
        "num_key_value_heads": NUM_KV_HEADS,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
    }


def linear_shapes():
    """Return (out_features, in_features) of each linear module of a decoder layer."""
    q_features = NUM_HEADS * HEAD_DIM
    kv_features = NUM_KV_HEADS * HEAD_DIM
    return {
        "self_attn.q_proj": (q_features, HIDDEN_SIZE),
        "self_attn.k_proj": (kv_features, HIDDEN_SIZE),
        "self_attn.v_proj": (kv_features, HIDDEN_SIZE),
        "self_attn.o_proj": (HIDDEN_SIZE, q_features),
        "mlp.gate_proj": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
        "mlp.up_proj": (INTERMEDIATE_SIZE, HIDDEN_SIZE),
        "mlp.down_proj": (HIDDEN_SIZE, INTERMEDIATE_SIZE),
    }


def normal(gen, shape, std):
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std


def norm_weight(gen, size):
    return 1.0 + normal(gen, (size,), NORM_NOISE_STD)


def make_weights(gen):
    """Draw the model weights, rounded to float32, under Hugging Face names.

    There is no lm_head.weight: with tie_word_embeddings the head is the embedding.
    """
    weights = {"model.embed_tokens.weight": normal(gen, (VOCAB_SIZE, HIDDEN_SIZE), EMBED_STD)}
    for layer in range(NUM_LAYERS):
        prefix = f"model.layers.{layer}."
        weights[prefix + "input_layernorm.weight"] = norm_weight(gen, HIDDEN_SIZE)
        for module, (out_features, in_features) in linear_shapes().items():
            std = LINEAR_GAIN / math.sqrt(in_features)
            weights[prefix + module + ".weight"] = normal(gen, (out_features, in_features), std)
        weights[prefix + "self_attn.q_norm.weight"] = norm_weight(gen, HEAD_DIM)
        weights[prefix + "self_attn.k_norm.weight"] = norm_weight(gen, HEAD_DIM)
        weights[prefix + "post_attention_layernorm.weight"] = norm_weight(gen, HIDDEN_SIZE)
    weights["model.norm.weight"] = norm_weight(gen, HIDDEN_SIZE)
    return {name: t.float() for name, t in weights.items()}


def lora_key(layer, target):
    """Return PEFT's saved key prefix of an adapted module, without .lora_A.weight."""
    return f"base_model.model.model.layers.{layer}.{TARGET_MODULES[target]}"


def make_lora(gen):
    """Draw LoRA adapters for all seven target modules, rounded to float32, under PEFT's keys.

    lora_A is uniform in +-1/sqrt(in_features), PEFT's kaiming_uniform(a=sqrt(5)) bound.
    lora_B is normal with LORA_B_STD instead of PEFT's zeros.
    """
    shapes = linear_shapes()
    adapters = {}
    for layer in range(NUM_LAYERS):
        for target in ALL_TARGETS:
            out_features, in_features = shapes[TARGET_MODULES[target]]
            bound = 1.0 / math.sqrt(in_features)
            a = (torch.rand((LORA_RANK, in_features), generator=gen, dtype=torch.float64) * 2 - 1) * bound
            key = lora_key(layer, target)
            adapters[key + ".lora_A.weight"] = a
            adapters[key + ".lora_B.weight"] = normal(gen, (out_features, LORA_RANK), LORA_B_STD)
    return {name: t.float() for name, t in adapters.items()}


def select_lora(adapters, targets):
    selected_keys = {lora_key(layer, t) for layer in range(NUM_LAYERS) for t in targets}
    return {name: t for name, t in adapters.items() if name.rsplit(".", 2)[0] in selected_keys}


# ---------------------------------------------------------------------------------------
# Batches


def make_example(gen, length, ignored, truncated):
    """Return (ids, targets) of one example of `length` tokens.

    targets[t] is the token at t+1, already shifted. The last token predicts the first
    token that truncation cut off when `truncated`, and nothing otherwise, as the data
    package builds rows. Positions in `ignored` take no loss, like prompt tokens in SFT.
    """
    tokens = torch.randint(0, VOCAB_SIZE - 2, (length + 1,), generator=gen, dtype=torch.int64)
    ids = tokens[:length].tolist()
    targets = tokens[1:].tolist()
    if not truncated:
        targets[-1] = IGNORE_INDEX
    for t in ignored:
        targets[t] = IGNORE_INDEX
    return ids, targets


def make_batch(gen, rows):
    """Lay out rows of examples as the data package does.

    Each row is a list of (length, ignored positions, truncated). Positions restart at 0
    at every example start, padding is PAD_ID with target IGNORE_INDEX, and its
    positions count up from 0 again, as data.Rows does.
    """
    max_examples = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), SEQ_LEN), PAD_ID, dtype=torch.int32)
    targets = torch.full((len(rows), SEQ_LEN), IGNORE_INDEX, dtype=torch.int32)
    position_ids = torch.zeros((len(rows), SEQ_LEN), dtype=torch.int32)
    starts = torch.full((len(rows), max_examples), -1, dtype=torch.int32)
    lengths = torch.zeros((len(rows),), dtype=torch.int32)
    for b, row in enumerate(rows):
        offset = 0
        for k, (length, ignored, truncated) in enumerate(row):
            ids, tgt = make_example(gen, length, ignored, truncated)
            input_ids[b, offset : offset + length] = torch.tensor(ids, dtype=torch.int32)
            targets[b, offset : offset + length] = torch.tensor(tgt, dtype=torch.int32)
            position_ids[b, offset : offset + length] = torch.arange(length, dtype=torch.int32)
            starts[b, k] = offset
            offset += length
        assert offset <= SEQ_LEN, f"row {b} holds {offset} tokens, more than SEQ_LEN={SEQ_LEN}"
        lengths[b] = offset
        position_ids[b, offset:] = torch.arange(SEQ_LEN - offset, dtype=torch.int32)
    return {
        "input_ids": input_ids,
        "targets": targets,
        "position_ids": position_ids,
        "starts": starts,
        "lengths": lengths,
    }


def unpacked_rows():
    """Return the unpacked rows, one example each. Row 0 fills the row and was truncated,
    so its last token predicts a token outside the row. Row 1 ends in 7 padding tokens."""
    return [
        [(24, list(range(0, 5)) + list(range(14, 17)), True)],
        [(17, list(range(0, 4)) + [9], False)],
    ]


def packed_rows():
    """Return the packed rows, several examples each. Row 1 has a 2-token example and
    ends in 6 padding tokens."""
    return [
        [(9, [0, 1, 2], False), (8, [0, 1, 5], False), (7, [0, 1], True)],
        [(11, [0, 1, 2, 3, 7, 8], False), (2, [], False), (5, [0], False)],
    ]


def segment_ids(batch):
    """Return (B, T) example indices: example k of a row gets k, and its padding gets the
    number of examples, so padding is a segment of its own."""
    batch_size, seq_len = batch["input_ids"].shape
    segments = torch.empty((batch_size, seq_len), dtype=torch.int64)
    for b in range(batch_size):
        row_starts = [int(s) for s in batch["starts"][b] if s >= 0]
        length = int(batch["lengths"][b])
        for t in range(seq_len):
            if t >= length:
                segments[b, t] = len(row_starts)
            else:
                segments[b, t] = sum(1 for s in row_starts if s <= t) - 1
    return segments


def hf_segment_ids(position_ids):
    """Return the segments that transformers' masking_utils.find_packed_sequence_indices
    derives when attention_mask is None: a new sequence wherever a position does not
    follow the previous one by exactly 1."""
    position_ids = position_ids.long()
    first = position_ids[:, :1] - 1
    diff = torch.diff(position_ids, prepend=first, dim=-1)
    return (diff != 1).cumsum(-1)


# ---------------------------------------------------------------------------------------
# Model


def rms_norm(x, weight, eps):
    """Apply Qwen3RMSNorm: x / sqrt(mean(x^2) + eps) over the last axis, times weight."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotary_cos_sin(position_ids, theta):
    """Return cos and sin of shape (B, T, head_dim) for the rotate_half convention:
    inv_freq[i] = theta^(-2i/head_dim), and the angles repeat once, cat(freqs, freqs).

    transformers computes inv_freq, cos and sin in float32 even for a float64 model. At
    positions 0..23 its cos and sin differ from these float64 values by at most 1.3e-7.
    """
    exponents = torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM
    inv_freq = 1.0 / (theta**exponents)
    freqs = position_ids.to(torch.float64)[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x, cos, sin, convention):
    """Rotate x of shape (B, heads, T, head_dim) by the angles in cos and sin (B, T, head_dim)."""
    cos = cos[:, None]
    sin = sin[:, None]
    if convention == "half":
        return x * cos + rotate_half(x) * sin
    # GPT-J pairs (2i, 2i+1) with angle i, a mistake the fixture must reject.
    half = HEAD_DIM // 2
    cos_pairs = cos[..., :half].repeat_interleave(2, dim=-1)
    sin_pairs = sin[..., :half].repeat_interleave(2, dim=-1)
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * cos_pairs + rotated * sin_pairs


def project(x, weights, adapters, layer, module, scaling):
    """Apply a linear module without bias, plus its LoRA adapter when there is one."""
    y = x @ weights[f"model.layers.{layer}.{module}.weight"].T
    key = f"base_model.model.model.layers.{layer}.{module}"
    if key + ".lora_A.weight" in adapters:
        a = adapters[key + ".lora_A.weight"]
        b = adapters[key + ".lora_B.weight"]
        y = y + scaling * ((x @ a.T) @ b.T)
    return y


def attention(h, weights, adapters, layer, cos, sin, allowed, sem):
    batch_size, seq_len, _ = h.shape
    prefix = f"model.layers.{layer}.self_attn."
    q = project(h, weights, adapters, layer, "self_attn.q_proj", sem.lora_scaling)
    k = project(h, weights, adapters, layer, "self_attn.k_proj", sem.lora_scaling)
    v = project(h, weights, adapters, layer, "self_attn.v_proj", sem.lora_scaling)
    q = q.view(batch_size, seq_len, NUM_HEADS, HEAD_DIM)
    k = k.view(batch_size, seq_len, NUM_KV_HEADS, HEAD_DIM)
    v = v.view(batch_size, seq_len, NUM_KV_HEADS, HEAD_DIM)

    # q_norm and k_norm are RMSNorms over head_dim, one weight shared by all heads,
    # applied to each head before the rotary embedding.
    if sem.qk_norm == "before_rotary":
        q = rms_norm(q, weights[prefix + "q_norm.weight"], sem.rms_norm_eps)
        k = rms_norm(k, weights[prefix + "k_norm.weight"], sem.rms_norm_eps)
    q = q.transpose(1, 2)
    k = k.transpose(1, 2)
    v = v.transpose(1, 2)
    q = apply_rotary(q, cos, sin, sem.rotary)
    k = apply_rotary(k, cos, sin, sem.rotary)
    if sem.qk_norm == "after_rotary":
        q = rms_norm(q, weights[prefix + "q_norm.weight"], sem.rms_norm_eps)
        k = rms_norm(k, weights[prefix + "k_norm.weight"], sem.rms_norm_eps)

    # Grouped-query attention: query head h reads kv head h // (num_heads / num_kv_heads),
    # which is what transformers' repeat_kv produces.
    group = NUM_HEADS // NUM_KV_HEADS
    if sem.kv_head_map == "hf":
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    else:
        k = k.repeat(1, group, 1, 1)
        v = v.repeat(1, group, 1, 1)

    scores = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(batch_size, seq_len, NUM_HEADS * HEAD_DIM)
    return project(out, weights, adapters, layer, "self_attn.o_proj", sem.lora_scaling)


def mlp(h, weights, adapters, layer, sem):
    gate = project(h, weights, adapters, layer, "mlp.gate_proj", sem.lora_scaling)
    up = project(h, weights, adapters, layer, "mlp.up_proj", sem.lora_scaling)
    return project(F.silu(gate) * up, weights, adapters, layer, "mlp.down_proj", sem.lora_scaling)


def attention_allowed(batch, sem):
    """Return (B, T, T) booleans: query i may attend key j when j <= i and, with the
    packed-row mask, both lie in the same example (padding is a segment of its own)."""
    seq_len = batch["input_ids"].shape[1]
    positions = torch.arange(seq_len)
    causal = positions[:, None] >= positions[None, :]
    if not sem.packed_mask:
        return causal.expand(batch["input_ids"].shape[0], seq_len, seq_len)
    segments = segment_ids(batch)
    return causal[None] & (segments[:, :, None] == segments[:, None, :])


def forward(weights, adapters, batch, sem=HF):
    """Return the logits (B, T, vocab_size) of Qwen3ForCausalLM with a tied head."""
    embedding = weights["model.embed_tokens.weight"]
    x = embedding[batch["input_ids"].long()]
    position_ids = batch["position_ids"]
    if sem.absolute_positions:
        position_ids = torch.arange(position_ids.shape[1]).expand(position_ids.shape)
    cos, sin = rotary_cos_sin(position_ids, sem.rope_theta)
    allowed = attention_allowed(batch, sem)
    for layer in range(NUM_LAYERS):
        prefix = f"model.layers.{layer}."
        h = rms_norm(x, weights[prefix + "input_layernorm.weight"], sem.rms_norm_eps)
        x = x + attention(h, weights, adapters, layer, cos, sin, allowed, sem)
        h = rms_norm(x, weights[prefix + "post_attention_layernorm.weight"], sem.rms_norm_eps)
        x = x + mlp(h, weights, adapters, layer, sem)
    x = rms_norm(x, weights["model.norm.weight"], sem.rms_norm_eps)
    return x @ embedding.T


def loss_sum_and_count(logits, targets):
    """Return the summed cross-entropy over targets that are not IGNORE_INDEX, and their count."""
    flat_targets = targets.long().reshape(-1)
    loss_sum = F.cross_entropy(
        logits.reshape(-1, VOCAB_SIZE), flat_targets, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, int((flat_targets != IGNORE_INDEX).sum())


def mean_loss(logits, targets, sem=HF):
    """Return loss_sum / target_count over the whole batch, or, for the "rows" mistake,
    the mean of the per-row means."""
    if sem.loss_reduction == "rows":
        row_losses = [
            loss_sum_and_count(logits[b : b + 1], targets[b : b + 1]) for b in range(logits.shape[0])
        ]
        return sum(s / c for s, c in row_losses) / len(row_losses)
    loss_sum, count = loss_sum_and_count(logits, targets)
    return loss_sum / count


# ---------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class Case:
    name: str
    description: str
    mode: str  # "full" or "lora"
    layout: str  # "unpacked" or "packed"
    batch: dict
    lora_targets: tuple = ()


def to_float64(tensors, trainable):
    return {name: t.double().requires_grad_(trainable) for name, t in tensors.items()}


def trainable_params(case, weights, adapters):
    return weights if case.mode == "full" else adapters


def evaluate(case, weights, adapters, sem=HF):
    """Return logits, loss_sum, target_count, loss and the gradients of the loss."""
    logits = forward(weights, adapters, case.batch, sem)
    loss_sum, count = loss_sum_and_count(logits, case.batch["targets"])
    loss = mean_loss(logits, case.batch["targets"], sem)
    params = trainable_params(case, weights, adapters)
    names = sorted(params)
    # allow_unused because the no_qk_norm variant leaves q_norm and k_norm out of the graph.
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    return {
        "logits": logits.detach(),
        "loss_sum": loss_sum.detach(),
        "target_count": count,
        "loss": loss.detach(),
        "grads": dict(zip(names, grads)),
    }


def check_examples_alone(case, weights, adapters, result):
    """Check that running every example alone gives the batch's logits, loss sum and
    gradient, and return the largest differences."""
    batch = case.batch
    params = trainable_params(case, weights, adapters)
    names = sorted(params)
    summed_grads = {n: torch.zeros_like(params[n]) for n in names}
    total_loss_sum = 0.0
    max_logit_diff = 0.0
    for b in range(batch["input_ids"].shape[0]):
        row_starts = [int(s) for s in batch["starts"][b] if s >= 0]
        ends = row_starts[1:] + [int(batch["lengths"][b])]
        for start, end in zip(row_starts, ends):
            length = end - start
            assert batch["position_ids"][b, start:end].tolist() == list(range(length)), (
                f"{case.name}: positions of row {b} example at {start} do not count from 0"
            )
            alone = {
                "input_ids": batch["input_ids"][b : b + 1, start:end],
                "targets": batch["targets"][b : b + 1, start:end],
                "position_ids": batch["position_ids"][b : b + 1, start:end],
                "starts": torch.zeros((1, 1), dtype=torch.int32),
                "lengths": torch.tensor([length], dtype=torch.int32),
            }
            logits = forward(weights, adapters, alone)
            diff = (logits.detach()[0] - result["logits"][b, start:end]).abs().max().item()
            max_logit_diff = max(max_logit_diff, diff)
            loss_sum, count = loss_sum_and_count(logits, alone["targets"])
            if count == 0:
                continue
            total_loss_sum += loss_sum.item()
            grads = torch.autograd.grad(loss_sum, [params[n] for n in names])
            for n, g in zip(names, grads):
                summed_grads[n] += g

    loss_sum_diff = abs(total_loss_sum - result["loss_sum"].item())
    grad_diff = max(
        (summed_grads[n] / result["target_count"] - result["grads"][n]).abs().max().item() for n in names
    )
    assert max_logit_diff < 1e-10, f"{case.name}: examples alone change logits by {max_logit_diff}"
    assert loss_sum_diff < 1e-10, f"{case.name}: examples alone change the loss sum by {loss_sum_diff}"
    assert grad_diff < 1e-12, f"{case.name}: examples alone change a gradient by {grad_diff}"
    return {"logits": max_logit_diff, "loss_sum": loss_sum_diff, "grad": grad_diff}


def check_hf_segments(case):
    """Check that transformers' segments from position_ids equal those from `starts`."""
    ours = segment_ids(case.batch)
    theirs = hf_segment_ids(case.batch["position_ids"])
    assert torch.equal(ours, theirs), f"{case.name}: segments from starts {ours} != from positions {theirs}"


def finite_difference_picks(case, result):
    """Pick gradient coordinates to check: the largest |gradient| of a few tensors and, for
    the embedding, a token that no input uses, whose gradient comes from the head alone."""
    if case.mode == "full":
        names = [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.self_attn.o_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.post_attention_layernorm.weight",
            "model.norm.weight",
        ]
    else:
        names = [
            lora_key(0, "q_proj") + ".lora_A.weight",
            lora_key(1, "v_proj") + ".lora_B.weight",
            lora_key(1, case.lora_targets[-1]) + ".lora_A.weight",
        ]
    picks = [(n, int(result["grads"][n].abs().argmax())) for n in names]
    if case.mode == "full":
        used = set(case.batch["input_ids"].flatten().tolist())
        unused = min(set(range(VOCAB_SIZE)) - used)
        picks.append(("model.embed_tokens.weight", unused * HIDDEN_SIZE))
    return picks


def check_finite_differences(case, weights, adapters, result):
    """Compare central differences of the mean loss, in float64, with autograd."""
    params = trainable_params(case, weights, adapters)
    step = 1e-5
    records = []
    for name, index in finite_difference_picks(case, result):
        flat = params[name].view(-1)
        original = flat[index].item()
        with torch.no_grad():
            flat[index] = original + step
            plus = mean_loss(forward(weights, adapters, case.batch), case.batch["targets"]).item()
            flat[index] = original - step
            minus = mean_loss(forward(weights, adapters, case.batch), case.batch["targets"]).item()
            flat[index] = original
        numeric = (plus - minus) / (2 * step)
        analytic = result["grads"][name].view(-1)[index].item()
        assert abs(numeric - analytic) <= 1e-8 + 1e-5 * abs(analytic), (
            f"{case.name}: {name}[{index}] autograd {analytic} != central difference {numeric}"
        )
        assert analytic != 0.0, f"{case.name}: {name}[{index}] has a zero gradient"
        records.append({"tensor": name, "flat_index": index, "autograd": analytic, "finite_difference": numeric})
    return records


def relative_error(reference, other):
    """Return the Go test's metric, max|other - reference| / max|reference|."""
    return ((other - reference).abs().max() / reference.abs().max()).item()


def check_variants(case, weights, adapters, result):
    """Evaluate every mistake in VARIANTS, and return for each the largest relative error
    that it causes over the stored tensors and whether the fixture must reject it.
    Assert that the fixture rejects the ones it must."""
    metrics = {}
    for name, (sem, when) in VARIANTS.items():
        if when == "lora" and case.mode != "lora":
            continue
        other = evaluate(case, weights, adapters, sem)
        errors = [
            relative_error(result["loss"].reshape(1), other["loss"].reshape(1)),
            relative_error(result["logits"][0], other["logits"][0]),
        ]
        errors += [relative_error(result["grads"][n], other["grads"][n]) for n in result["grads"]]
        must_reject = when == "always" or when == case.mode or when == case.layout
        metrics[name] = {"max_relative_error": max(errors), "must_reject": must_reject}
        if must_reject:
            assert max(errors) > 10 * GO_TOLERANCE, (
                f"{case.name}: variant {name} changes the stored tensors by only {max(errors):.2e}"
            )
    return metrics


# ---------------------------------------------------------------------------------------
# Output


def write_safetensors(path, tensors, metadata):
    """Write tensors, given as name -> (dtype, tensor), in the safetensors format.

    Tensors are laid out in name order, which is what safetensors' own writer does when,
    as here, all dtypes have the same alignment (F32 and I32). The JSON header is padded
    with spaces to a multiple of 8 bytes.
    """
    assert sys.byteorder == "little", "the raw tensor bytes must be little-endian"
    header = {"__metadata__": metadata}
    data = bytearray()
    for name in sorted(tensors):
        dtype, t = tensors[name]
        raw = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        f.write(data)


def f32(t):
    return ("F32", t.detach().to(torch.float32))


def i32(t):
    return ("I32", t.to(torch.int32))


def case_tensors(case, adapters, result):
    tensors = {name: i32(case.batch[name]) for name in ("input_ids", "targets", "position_ids", "starts", "lengths")}
    tensors["loss"] = f32(result["loss"].reshape(1))
    tensors["loss_sum"] = f32(result["loss_sum"].reshape(1))
    tensors["target_count"] = i32(torch.tensor([result["target_count"]]))
    tensors["logits_row0"] = f32(result["logits"][0])
    for name, grad in result["grads"].items():
        tensors["grad." + name] = f32(grad)
    if case.mode == "lora":
        for name, t in adapters.items():
            tensors["lora." + name] = f32(t)
        tensors["lora_rank"] = i32(torch.tensor([LORA_RANK]))
        tensors["lora_alpha"] = f32(torch.tensor([float(LORA_ALPHA)]))
        tensors["lora_scaling"] = f32(torch.tensor([LORA_SCALING]))
    return tensors


def adapter_config(case):
    """Return the adapter_config.json that PEFT would write for this adapter."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": LORA_RANK,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "target_modules": list(case.lora_targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
    }


def case_summary(case, tensors, result, checks):
    starts = [[int(s) for s in row if s >= 0] for row in case.batch["starts"]]
    return {
        "case": case.name,
        "description": case.description,
        "mode": case.mode,
        "layout": case.layout,
        "batch_size": BATCH_SIZE,
        "seq_len": SEQ_LEN,
        "example_starts": starts,
        "lengths": case.batch["lengths"].tolist(),
        "loss": result["loss"].item(),
        "loss_sum": result["loss_sum"].item(),
        "target_count": result["target_count"],
        "loss_definition": "loss_sum / target_count; loss_sum sums the cross-entropy of every "
        "target that is not -100 over the whole batch; every grad.* is the gradient of loss",
        "lora": adapter_config(case) if case.mode == "lora" else None,
        "tensors": {name: f"{dtype} {list(t.shape)}" for name, (dtype, t) in sorted(tensors.items())},
        "checks": checks,
        "torch_version": torch.__version__,
    }


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def build_cases(gen):
    unpacked = make_batch(gen, unpacked_rows())
    packed = make_batch(gen, packed_rows())
    return [
        Case("full_unpacked", "all parameters trainable, one example per row", "full", "unpacked", unpacked),
        Case("full_packed", "all parameters trainable, several examples per row", "full", "packed", packed),
        Case(
            "lora_unpacked",
            "LoRA on q_proj, k_proj, v_proj, o_proj, one example per row",
            "lora",
            "unpacked",
            unpacked,
            ATTENTION_TARGETS,
        ),
        Case(
            "lora_packed",
            "LoRA on q_proj, k_proj, v_proj, o_proj, several examples per row",
            "lora",
            "packed",
            packed,
            ATTENTION_TARGETS,
        ),
        Case(
            "lora_all_packed",
            "LoRA on all seven linear modules of each layer, several examples per row",
            "lora",
            "packed",
            packed,
            ALL_TARGETS,
        ),
    ]


def main():
    torch.set_num_threads(1)  # fixed reduction order, so reruns give identical bytes
    gen = torch.Generator().manual_seed(SEED)
    weights32 = make_weights(gen)
    adapters32 = make_lora(gen)
    cases = build_cases(gen)

    write_json(os.path.join(HERE, "config.json"), hf_config())
    write_safetensors(
        os.path.join(HERE, "model.safetensors"),
        {name: ("F32", t) for name, t in weights32.items()},
        {"format": "pt"},
    )

    for case in cases:
        weights = to_float64(weights32, trainable=case.mode == "full")
        adapters = to_float64(select_lora(adapters32, case.lora_targets), trainable=case.mode == "lora")
        result = evaluate(case, weights, adapters)

        check_hf_segments(case)
        checks = {
            "examples_alone_max_abs_diff": check_examples_alone(case, weights, adapters, result),
            "finite_differences": check_finite_differences(case, weights, adapters, result),
            "variants": check_variants(case, weights, adapters, result),
        }

        tensors = case_tensors(case, select_lora(adapters32, case.lora_targets), result)
        metadata = {"format": "pt", "mode": case.mode, "layout": case.layout}
        if case.mode == "lora":
            metadata["lora_target_modules"] = ",".join(case.lora_targets)
        path = os.path.join(HERE, f"case_{case.name}.safetensors")
        write_safetensors(path, tensors, metadata)
        write_json(os.path.join(HERE, f"case_{case.name}.json"), case_summary(case, tensors, result, checks))

        rejected = {n: v["max_relative_error"] for n, v in checks["variants"].items() if v["must_reject"]}
        weakest = min(rejected, key=rejected.get)
        print(
            f"case_{case.name}: loss {result['loss'].item():.6f} over {result['target_count']} targets, "
            f"{len(result['grads'])} gradients, {os.path.getsize(path)} bytes; "
            f"{len(rejected)} mistakes rejected, the weakest by {rejected[weakest]:.2f} ({weakest})"
        )

    total = 0
    for name in sorted(os.listdir(HERE)):
        path = os.path.join(HERE, name)
        if os.path.isfile(path):
            total += os.path.getsize(path)
    print(f"{len(os.listdir(HERE))} files in {HERE}, {total} bytes in all")
    assert total < SIZE_LIMIT_BYTES, f"the fixtures take {total} bytes, over the {SIZE_LIMIT_BYTES}-byte limit"


if __name__ == "__main__":
    main()
