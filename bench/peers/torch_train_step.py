#!/usr/bin/python3
"""Time one Qwen3 training step in PyTorch: forward, backward and AdamW, fp32 on the CPU.

The PyTorch peer for `ringtune bench step`. It builds Qwen3 from plain torch modules
with random weights, trains it on random token batches with next-token cross-entropy
and torch.optim.AdamW, and reports the median step time, tokens per second and the
process's peak resident set size. Run one shape and mode per process, because the
peak RSS covers the whole process.

Debian's python3-torch 1.13 calls the BLAS behind the generic libblas.so.3, which can
be the reference BLAS (about 40 times slower at sgemm than OpenBLAS). The script
therefore re-runs itself with Debian's OpenBLAS OpenMP build (package
libopenblas0-openmp) first on LD_LIBRARY_PATH, and checks that a 1024³ torch.mm
reaches --min-matmul-gflops before it builds the model.

    /usr/bin/python3 bench/peers/torch_train_step.py --shape tiny --mode lora --batch 4 --seq 256 --json
"""

import argparse
import json
import logging
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
REEXEC_MARKER = "TORCH_TRAIN_STEP_REEXEC"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj"  # ringtune's model.DefaultLoRA

log = logging.getLogger("torch_train_step")


@dataclass(frozen=True)
class Shape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02  # standard deviation of the random linear and embedding weights


# The presets of ringtune's model package. qwen3-0.6b is the released Qwen3-0.6B.
PRESETS = {
    "tiny": Shape(vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "small": Shape(vocab_size=151936, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=64),
    "qwen3-0.6b": Shape(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=128),
}


# ---------------------------------------------------------------------------- arguments

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="tiny",
                        help="model shape: tiny, small, qwen3-0.6b, or the path of a Hugging Face "
                             "config.json or of its directory (default tiny)")
    parser.add_argument("--mode", choices=("full", "lora"), default="full",
                        help="full trains every weight, lora only the LoRA adapters (default full)")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (default 8)")
    parser.add_argument("--lora-alpha", type=float, default=16.0,
                        help="LoRA alpha, which scales adapter outputs by alpha/r (default 16)")
    parser.add_argument("--lora-targets", default=DEFAULT_LORA_TARGETS,
                        help=f"comma-separated projections that get adapters, or 'all' for all seven. "
                             f"Known: {', '.join(PROJECTIONS)} (default {DEFAULT_LORA_TARGETS})")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence (default 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones (default 1)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for PyTorch, OpenMP and OpenBLAS (default 2)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the weights and the token batches (default 0)")
    parser.add_argument("--min-matmul-gflops", type=float, default=20.0,
                        help="exit with status 1 when a 1024³ torch.mm runs below this many GFLOP/s, "
                             "which indicates the reference BLAS or another unoptimised one. "
                             "0 turns the check off (default 20)")
    parser.add_argument("--json", action="store_true",
                        help="print only one JSON object on stdout; logs still go to stderr")
    args = parser.parse_args()

    for name in ("batch", "seq", "steps", "threads", "lora_rank"):
        value = getattr(args, name)
        if value < 1:
            parser.error(f"--{name.replace('_', '-')}: invalid value {value}: use a positive integer")
    if args.warmup < 0:
        parser.error(f"--warmup: invalid value {args.warmup}: use 0 or more")
    if not args.lora_alpha > 0:
        parser.error(f"--lora-alpha: invalid value {args.lora_alpha:g}: use a positive number")
    if not args.lr > 0:
        parser.error(f"--lr: invalid value {args.lr:g}: use a positive number")
    if args.seq < 2:
        parser.error(f"--seq: invalid value {args.seq}: next-token loss needs at least 2 tokens")

    try:
        args.lora_target_list = parse_lora_targets(args.lora_targets)
    except ValueError as err:
        parser.error(f"--lora-targets: {err}")
    try:
        args.model_shape = resolve_shape(args.shape)
    except (OSError, ValueError) as err:
        parser.error(f"--shape: {err}")
    return args


def parse_lora_targets(text):
    if text == "all":
        return list(PROJECTIONS)
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise ValueError(f"no projection named: use any of {', '.join(PROJECTIONS)}, or 'all'")
    for t in targets:
        if t not in PROJECTIONS:
            raise ValueError(f"{t!r} is not a projection: use any of {', '.join(PROJECTIONS)}, or 'all'")
    duplicates = sorted({t for t in targets if targets.count(t) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(duplicates)} listed twice: name each projection once")
    return targets


def resolve_shape(name_or_path):
    """Return a preset by name, or read a Hugging Face config.json (the file or its directory)."""
    if name_or_path.lower() in PRESETS:
        return PRESETS[name_or_path.lower()]
    path = name_or_path
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found: use one of {', '.join(PRESETS)}, or the path of a config.json")
    with open(path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON: {err}") from err
    return shape_from_config(raw, path)


def shape_from_config(raw, path):
    """Read a Qwen3 config.json with the defaults and checks of ringtune's model.ParseConfig."""
    def config_error(message):
        return ValueError(f"{path}: {message}")

    if raw.get("model_type", "qwen3") != "qwen3":
        raise config_error(f"model_type {raw['model_type']!r} is not supported: only Qwen3 (\"qwen3\") is")
    if raw.get("hidden_act", "silu") != "silu":
        raise config_error(f"hidden_act {raw['hidden_act']!r} is not supported: Qwen3 uses silu")
    if raw.get("attention_bias"):
        raise config_error("attention_bias true is not supported: Qwen3's projections have no bias")
    if raw.get("use_sliding_window"):
        raise config_error("use_sliding_window true is not supported: only full attention is implemented")
    scaling = raw.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) != "default":
        raise config_error(f"rope_scaling {scaling} is not supported: only unscaled rotary embeddings are implemented")

    # transformers 5 moves rope_theta into rope_parameters.
    rope_parameters = raw.get("rope_parameters") or {}
    if rope_parameters.get("rope_type", "default") != "default":
        raise config_error(f"rope_parameters.rope_type {rope_parameters['rope_type']!r} is not supported: only the default rotary embedding is implemented")
    rope_theta = rope_parameters.get("rope_theta", raw.get("rope_theta")) or 10000.0

    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads")
    values = {}
    for key in required:
        value = raw.get(key)
        if not isinstance(value, int) or value <= 0:
            raise config_error(f"{key} is {value!r}: it must be a positive integer")
        values[key] = value
    head_dim = raw.get("head_dim") or values["hidden_size"] // values["num_attention_heads"]
    if not isinstance(head_dim, int) or head_dim <= 0:
        raise config_error(f"head_dim is {head_dim!r}: it must be a positive integer")
    shape = Shape(**values, head_dim=head_dim,
                  rms_norm_eps=float(raw.get("rms_norm_eps") or 1e-6),
                  rope_theta=float(rope_theta),
                  tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                  initializer_range=float(raw.get("initializer_range") or 0.02))
    if shape.num_attention_heads % shape.num_key_value_heads:
        raise config_error(f"num_attention_heads {shape.num_attention_heads} is not a multiple of "
                   f"num_key_value_heads {shape.num_key_value_heads}")
    if shape.head_dim % 2:
        raise config_error(f"head_dim {shape.head_dim} must be even for rotary embeddings")
    return shape


# ---------------------------------------------------------------------------- BLAS

def cpu_flags():
    """Return the feature flags of the first CPU in /proc/cpuinfo."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def reexec_with_openblas(threads):
    """Re-run this script once with OpenBLAS first on the library path and the thread counts set."""
    if os.environ.get(REEXEC_MARKER) == "1":
        return
    env = dict(os.environ)
    if os.path.isdir(OPENBLAS_DIR):
        path = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (":" + path if path else "")
    else:
        log.warning("%s not found, so torch uses the system's libblas.so.3: install Debian's "
                    "libopenblas0-openmp to time torch on OpenBLAS", OPENBLAS_DIR)
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    # The runtime CPU detection of OpenBLAS 0.3.21 (Debian 12) picks its Prescott (SSE3)
    # kernels for Intel models that it does not list, such as some newer Xeons. Upstream
    # changed that fallback in October 2023: https://github.com/OpenMathLib/OpenBLAS/pull/4268
    if "avx512f" in cpu_flags():
        env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
    env[REEXEC_MARKER] = "1"
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def describe_blas():
    """Return the path of the BLAS library mapped into this process, a description of it, and the
    name of the kernel set that OpenBLAS selected ("" for other libraries)."""
    import ctypes

    with open("/proc/self/maps") as f:
        paths = sorted({line.split()[-1] for line in f if "blas" in line.split()[-1]})
    if not paths:
        return "", "no BLAS library mapped", ""
    library = paths[0]
    try:
        lib = ctypes.CDLL(library)
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        config = lib.openblas_get_config().decode()
        core = lib.openblas_get_corename().decode()
        return library, f"{config}, core {core}", core
    except (OSError, AttributeError):
        return library, os.path.basename(os.path.realpath(library)), ""


def measure_matmul_gflops(torch):
    """Time a float32 1024³ torch.mm and return its GFLOP/s, from the median of 5 calls."""
    n = 1024
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(n, n, generator=gen)
    b = torch.rand(n, n, generator=gen)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up: starts the BLAS threads
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------- model

def build_model(torch, shape, mode, lora_rank, lora_alpha, lora_targets):
    """Build Qwen3 with random weights. In LoRA mode, freeze every weight and add trainable adapters."""
    from torch import nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + shape.rms_norm_eps) * self.weight

    class LoRALinear(nn.Module):
        """Frozen base projection plus (alpha/r)·B·A·x, with A Kaiming-uniform and B zero as in PEFT."""

        def __init__(self, base):
            super().__init__()
            self.base = base
            self.lora_A = nn.Linear(base.in_features, lora_rank, bias=False)
            self.lora_B = nn.Linear(lora_rank, base.out_features, bias=False)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            self.scaling = lora_alpha / lora_rank

        def forward(self, x):
            return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            d = shape.head_dim
            self.q_proj = nn.Linear(shape.hidden_size, shape.num_attention_heads * d, bias=False)
            self.k_proj = nn.Linear(shape.hidden_size, shape.num_key_value_heads * d, bias=False)
            self.v_proj = nn.Linear(shape.hidden_size, shape.num_key_value_heads * d, bias=False)
            self.o_proj = nn.Linear(shape.num_attention_heads * d, shape.hidden_size, bias=False)
            self.q_norm = RMSNorm(d)
            self.k_norm = RMSNorm(d)

        def forward(self, x, cos, sin, causal_mask):
            b, t, _ = x.shape
            d = shape.head_dim
            # Qwen3 normalises each head of q and k over head_dim before the rotary embedding.
            q = self.q_norm(self.q_proj(x).view(b, t, -1, d)).transpose(1, 2)
            k = self.k_norm(self.k_proj(x).view(b, t, -1, d)).transpose(1, 2)
            v = self.v_proj(x).view(b, t, -1, d).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            # Grouped-query attention: query head h reads key/value head h // group_size.
            group_size = shape.num_attention_heads // shape.num_key_value_heads
            k = k.repeat_interleave(group_size, dim=1)
            v = v.repeat_interleave(group_size, dim=1)
            scores = torch.matmul(q, k.transpose(-2, -1)) * d ** -0.5
            probs = torch.softmax(scores.masked_fill(causal_mask, float("-inf")), dim=-1)
            out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
            return self.o_proj(out)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.up_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.down_proj = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class DecoderLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(shape.hidden_size)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(shape.hidden_size)
            self.mlp = MLP()

        def forward(self, x, cos, sin, causal_mask):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, causal_mask)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Qwen3(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(shape.vocab_size, shape.hidden_size)
            self.layers = nn.ModuleList(DecoderLayer() for _ in range(shape.num_hidden_layers))
            self.norm = RMSNorm(shape.hidden_size)
            self.lm_head = None
            if not shape.tie_word_embeddings:
                self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
            exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim
            self.register_buffer("inv_freq", shape.rope_theta ** -exponents, persistent=False)

        def rotary(self, t):
            """Return cos and sin of shape (t, head_dim) for positions 0..t-1."""
            freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()

        def forward(self, ids):
            t = ids.shape[1]
            cos, sin = self.rotary(t)
            causal_mask = torch.ones(t, t, dtype=torch.bool).triu(1)  # True above the diagonal: masked
            x = self.embed_tokens(ids)
            for layer in self.layers:
                x = layer(x, cos, sin, causal_mask)
            head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
            return F.linear(self.norm(x), head)

    model = Qwen3()
    # Hugging Face's initialisation: weights ~ N(0, initializer_range), RMSNorm weights 1.
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=shape.initializer_range)

    if mode == "lora":
        model.requires_grad_(False)
        for layer in model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name in lora_targets:
                    if hasattr(parent, name):
                        setattr(parent, name, LoRALinear(getattr(parent, name)))
    model.train()
    return model


def count_parameters(model, trainable_only=False):
    # model.parameters() yields a tied weight once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------- training step

def train_step(torch, model, optimizer, ids):
    """Run forward, backward and AdamW on one batch and return the loss."""
    import torch.nn.functional as F

    optimizer.zero_grad(set_to_none=True)
    logits = model(ids)
    # Position t predicts token t+1, and the last position of each row has no target.
    # Padding the targets instead of slicing the logits avoids copying batch·seq·vocab floats.
    targets = F.pad(ids[:, 1:], (0, 1), value=-100)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    return loss.item()


def run(args, torch):
    shape = args.model_shape
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = build_model(torch, shape, args.mode, args.lora_rank, args.lora_alpha, args.lora_target_list)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr)
    params_total = count_parameters(model)
    params_trainable = count_parameters(model, trainable_only=True)
    log.info("built %s in %.1f s: %d parameters, %d trainable", args.shape, time.perf_counter() - t0,
             params_total, params_trainable)

    gen = torch.Generator().manual_seed(args.seed + 1)
    step_seconds = []
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, shape.vocab_size, (args.batch, args.seq), generator=gen)
        t0 = time.perf_counter()
        loss = train_step(torch, model, optimizer, ids)
        seconds = time.perf_counter() - t0
        warm_up = i < args.warmup
        if not warm_up:
            step_seconds.append(seconds)
        log.info("step %d%s: %.3f s, %.1f tokens/s, loss %.4f", i, " (warm-up)" if warm_up else "",
                 seconds, args.batch * args.seq / seconds, loss)
    return step_seconds, params_total, params_trainable


def main():
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="torch_train_step: %(message)s")
    args = parse_args()
    reexec_with_openblas(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    blas_library, blas, blas_core = describe_blas()
    if blas_core == "Prescott" and "avx2" in cpu_flags():
        log.warning("OpenBLAS selected its Prescott (SSE3) kernels on a CPU with AVX2, so matrix "
                    "products run several times slower: set OPENBLAS_CORETYPE to Haswell or SkylakeX and rerun")
    matmul_gflops = measure_matmul_gflops(torch)
    log.info("torch %s, %d threads, OPENBLAS_CORETYPE=%s, BLAS %s (%s), 1024³ torch.mm %.1f GFLOP/s",
             torch.__version__, torch.get_num_threads(), os.environ.get("OPENBLAS_CORETYPE", ""),
             blas, blas_library, matmul_gflops)
    if matmul_gflops < args.min_matmul_gflops:
        log.error("1024³ torch.mm reached %.1f GFLOP/s, below --min-matmul-gflops %g, so torch is likely "
                  "using the reference BLAS (%s). Install libopenblas0-openmp, or pass "
                  "--min-matmul-gflops 0 to time it anyway", matmul_gflops, args.min_matmul_gflops,
                  blas_library or "no BLAS library mapped")
        return 1

    step_seconds, params_total, params_trainable = run(args, torch)
    step_s = statistics.median(step_seconds)
    result = {
        "tokens_per_s": args.batch * args.seq / step_s,
        "step_s": step_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "shape": args.shape,
        "mode": args.mode,
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "blas": blas,
        "blas_library": blas_library,
        "matmul_gflops": matmul_gflops,
        "steps": args.steps,
        "warmup": args.warmup,
        "step_s_samples": step_seconds,
        "params_total": params_total,
        "params_trainable": params_trainable,
        "model": asdict(args.model_shape),
    }
    if args.mode == "lora":
        result["lora"] = {"rank": args.lora_rank, "alpha": args.lora_alpha, "targets": args.lora_target_list}

    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.shape} {args.mode} {args.batch}x{args.seq}: {result['tokens_per_s']:.1f} tokens/s, "
              f"median step {step_s:.3f} s over {args.steps} steps, peak RSS "
              f"{result['peak_rss_bytes'] / 2 ** 30:.2f} GiB, {params_trainable} trainable parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
