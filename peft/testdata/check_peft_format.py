#!/usr/bin/python3
"""Check a LoRA adapter directory against what Hugging Face PEFT's loader expects.

PEFT, transformers and safetensors are not installed on the machines this project runs
on, and PyPI cannot be reached, so a real PeftModel.from_pretrained was not possible.
This script instead repeats, with the standard library, the steps of PEFT's loader that
concern the files, as written in huggingface/peft (read at v0.10.0, v0.13.2, v0.18.1
and 0.20.1.dev0):

1. adapter_config.json: PeftConfigMixin.from_json_file, then LoraConfig(**fields).
   PEFT before 0.14 raises TypeError on a key that its LoraConfig lacks, so every key
   must be one of the 24 fields of PEFT 0.10.0 to 0.13.2 for the file to load there.
   The values must pass the checks of LoraConfig.__post_init__ and
   LoraLayer.update_layer. The file must be byte-identical to
   json.dumps(fields, indent=2, sort_keys=True), the layout of
   PeftConfigMixin.save_pretrained.
2. adapter_model.safetensors: the header as safetensors' Rust reader validates it,
   and metadata {"format": "pt"} as PeftModel.save_pretrained writes it.
3. Key mapping: load_peft_weights, then _insert_adapter_name_into_state_dict with the
   adapter name "default", must yield exactly the lora_A and lora_B parameters that
   PEFT creates on a Qwen3ForCausalLM for this config (check_target_module_exists
   selects the modules), with shapes (r, in_features) and (out_features, r).
   torch's load_state_dict would raise on a shape mismatch and PEFT warns about
   missing or unexpected keys; this script fails on all three.

With --base-dir and --merged-dir it also checks a merged model with torch (Debian's
python3-torch 1.13). Every adapted weight must equal W + scaling * (B @ A), computed in
float64, to within one unit in the last place of the weight's dtype. Every other tensor
must be bit-identical. It prints how many elements differ from PEFT's own
merge_and_unload arithmetic on CPU, which computes B @ A * scaling in float32 (for a
float32 adapter) and adds that rounded delta to the weight in place.

Usage:
  /usr/bin/python3 check_peft_format.py ADAPTER_DIR [--base-config CONFIG_JSON]
      [--base-dir DIR --merged-dir DIR]

Exit status 0 and a final line "OK" when every check passes, 1 otherwise.
"""

import argparse
import json
import math
import os
import re
import struct
import sys

# The dataclass fields that PeftConfig and LoraConfig of PEFT 0.10.0 to 0.13.2 save.
# (0.12 added runtime_config, which LoraConfig.to_dict removes before saving.)
LORA_FIELDS_0_10 = {
    "alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out",
    "inference_mode", "init_lora_weights", "layer_replication", "layers_pattern",
    "layers_to_transform", "loftq_config", "lora_alpha", "lora_dropout", "megatron_config",
    "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern", "revision",
    "target_modules", "task_type", "use_dora", "use_rslora",
}
# Fields added from 0.14.0 to 0.20.1.dev0. A key outside both sets fails on every
# release; one in this set fails before 0.14, where the loader ignores no keys.
LORA_FIELDS_LATER = {
    "exclude_modules", "lora_bias", "eva_config", "corda_config", "trainable_token_indices",
    "use_qalora", "qalora_group_size", "target_parameters", "peft_version",
    "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "lora_ga_config",
    "use_bdlora", "velora_config", "monteclora_config", "kasa_config",
}
TASK_TYPES = {"SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"}

# safetensors dtypes and their sizes in bits (safetensors/src/tensor.rs).
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
    "I64": 64, "U64": 64,
}

PROJECTIONS = [
    ("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
    ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"),
]


class CheckError(Exception):
    pass


def fail(message):
    raise CheckError(message)


def check_config_file(path):
    """Check adapter_config.json (step 1) and return its fields."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        fields = json.loads(raw)
    except ValueError as exc:
        fail(f"{path}: invalid JSON: {exc}")
    expected = json.dumps(fields, indent=2, sort_keys=True).encode()
    if raw != expected:
        fail(f"{path}: layout differs from json.dumps(indent=2, sort_keys=True), which PEFT writes")

    unknown = set(fields) - LORA_FIELDS_0_10 - LORA_FIELDS_LATER
    if unknown:
        fail(f"{path}: keys {sorted(unknown)} are no LoraConfig field of PEFT up to 0.20: every PEFT rejects or ignores them")
    newer = set(fields) - LORA_FIELDS_0_10
    if newer:
        print(f"note: keys {sorted(newer)} need PEFT 0.14 or later, earlier versions raise TypeError")

    def require(cond, message):
        if not cond:
            fail(f"{path}: {message}")

    require(fields.get("peft_type") == "LORA", f"peft_type is {fields.get('peft_type')!r}, not 'LORA'")
    task = fields.get("task_type")
    require(task is None or task in TASK_TYPES, f"task_type {task!r} is not a PEFT TaskType")
    r = fields.get("r")
    require(isinstance(r, int) and not isinstance(r, bool) and r > 0, f"r is {r!r}, not a positive int")
    alpha = fields.get("lora_alpha")
    require(isinstance(alpha, (int, float)) and not isinstance(alpha, bool), f"lora_alpha is {alpha!r}, not a number")
    dropout = fields.get("lora_dropout", 0.0)
    require(isinstance(dropout, (int, float)) and 0 <= dropout < 1, f"lora_dropout is {dropout!r}")
    for key in ("fan_in_fan_out", "inference_mode", "use_rslora", "use_dora"):
        require(isinstance(fields.get(key, False), bool), f"{key} is {fields.get(key)!r}, not a bool")
    require(fields.get("bias", "none") in ("none", "all", "lora_only"), f"bias is {fields.get('bias')!r}")
    targets = fields.get("target_modules")
    require(isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)),
            f"target_modules is {targets!r}, not a list of str or a str")
    # LoraConfig.__post_init__
    if isinstance(targets, str):
        require(fields.get("layers_to_transform") is None, "layers_to_transform cannot be used when target_modules is a str")
        require(fields.get("layers_pattern") is None, "layers_pattern cannot be used when target_modules is a str")
    if fields.get("layers_pattern") and fields.get("layers_to_transform") is None:
        fail(f"{path}: when layers_pattern is specified, layers_to_transform must also be specified")
    if fields.get("use_dora") and fields.get("megatron_config"):
        fail(f"{path}: DoRA does not support megatron_core")
    if fields.get("init_lora_weights") == "loftq" and not fields.get("loftq_config"):
        fail(f"{path}: loftq_config must be specified when init_lora_weights is 'loftq'")
    return fields


def read_safetensors(path, with_data=False):
    """Read and check a safetensors file (step 2): return (entries, metadata, data or None)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            fail(f"{path}: shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > 100_000_000 or 8 + n > size:
            fail(f"{path}: header length {n} does not fit the file of {size} bytes")
        header_bytes = f.read(n)
        data = f.read() if with_data else None
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        fail(f"{path}: invalid header: {exc}")
    metadata = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    offset = 0
    for name, entry in entries:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BITS:
            fail(f"{path}: tensor {name!r}: unknown dtype {dtype}")
        if begin != offset or end < begin:
            fail(f"{path}: tensor {name!r}: data_offsets {[begin, end]} leave a gap or overlap")
        bits = DTYPE_BITS[dtype] * math.prod(shape)
        if bits % 8 != 0 or end - begin != bits // 8:
            fail(f"{path}: tensor {name!r}: shape {shape} of {dtype} needs {bits / 8} bytes, data_offsets give {end - begin}")
        offset = end
    if 8 + n + offset != size:
        fail(f"{path}: tensors end at byte {8 + n + offset}, the file has {size} bytes")
    return dict(entries), metadata, data


def insert_adapter_name(state_dict, adapter_name, parameter_prefix):
    """Rename keys as _insert_adapter_name_into_state_dict of src/peft/utils/save_and_load.py does."""
    out = {}
    for key, val in state_dict.items():
        if parameter_prefix in key:
            _, _, suffix = key.rpartition(parameter_prefix)
            if "." in suffix:
                suffix_to_replace = ".".join(suffix.split(".")[1:])
                key = re.sub(re.escape(suffix_to_replace) + r"$", f"{adapter_name}.{suffix_to_replace}", key)
            else:
                key = f"{key}.{adapter_name}"
        out[key] = val
    return out


def target_module_exists(fields, key):
    """Return whether check_target_module_exists of src/peft/tuners/tuners_utils.py selects key."""
    exclude = fields.get("exclude_modules")
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return False
        elif key in exclude or any(key.endswith(f".{e}") for e in exclude):
            return False

    targets = fields["target_modules"]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        # _maybe_include_all_linear_layers replaces the shorthand with the last name
        # component of every linear layer but the output head.
        targets = [proj for _, proj in PROJECTIONS]
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    found = any(key.endswith(f".{t}") for t in targets)

    # layers_to_transform applies to suffix matches only.
    indexes = fields.get("layers_to_transform")
    pattern = fields.get("layers_pattern")
    if indexes is not None and (len(indexes) != 0 if isinstance(indexes, list) else True) and found:
        if not pattern:
            match = re.match(r".*?\.[^.]*\.(\d+)\.", key)
        else:
            match = None
            for p in [pattern] if isinstance(pattern, str) else pattern:
                match = re.match(rf".*?\.{p}\.(\d+)\.", key)
                if match:
                    break
        if match is None:
            return False
        index = int(match.group(1))
        return index == indexes if isinstance(indexes, int) else index in indexes
    return found


def projection_shapes(config):
    """Return (in_features, out_features) of each Qwen3 projection, as Qwen3Attention
    and Qwen3MLP in transformers create them."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    return {
        "q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
        "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden),
    }


def expected_parameters(fields, config):
    """Return the LoRA parameter shapes of PeftModelForCausalLM(Qwen3ForCausalLM) with adapter "default"."""
    shapes = projection_shapes(config)
    r = fields["r"]
    expected = {}
    for layer in range(config["num_hidden_layers"]):
        for group, proj in PROJECTIONS:
            module = f"model.layers.{layer}.{group}.{proj}"
            if not target_module_exists(fields, module):
                continue
            fan_in, fan_out = shapes[proj]
            expected[f"base_model.model.{module}.lora_A.default.weight"] = [r, fan_in]
            expected[f"base_model.model.{module}.lora_B.default.weight"] = [fan_out, r]
    return expected


def check_adapter(adapter_dir, base_config_path):
    fields = check_config_file(os.path.join(adapter_dir, "adapter_config.json"))
    weights = os.path.join(adapter_dir, "adapter_model.safetensors")
    entries, metadata, _ = read_safetensors(weights)
    if metadata != {"format": "pt"}:
        fail(f"{weights}: __metadata__ is {metadata!r}, PEFT writes {{'format': 'pt'}}")
    for name, entry in entries.items():
        if entry["dtype"] not in ("F32", "F16", "BF16"):
            fail(f"{weights}: tensor {name!r} has dtype {entry['dtype']}")

    if base_config_path is None:
        base = fields.get("base_model_name_or_path") or ""
        base_config_path = os.path.join(base, "config.json")
    with open(base_config_path) as f:
        config = json.load(f)
    if config.get("model_type") not in (None, "qwen3"):
        fail(f"{base_config_path}: model_type {config.get('model_type')!r} is not qwen3")

    loaded = insert_adapter_name({name: entry["shape"] for name, entry in entries.items()}, "default", "lora_")
    expected = expected_parameters(fields, config)
    unexpected = sorted(set(loaded) - set(expected))
    missing = sorted(set(expected) - set(loaded))
    if unexpected:
        fail(f"{weights}: keys that PEFT's model does not have after adding the adapter name: {unexpected[:5]}")
    if missing:
        fail(f"{weights}: LoRA parameters that the file does not provide: {missing[:5]}")
    for key, shape in expected.items():
        if loaded[key] != shape:
            fail(f"{weights}: {key}: size mismatch, the file has {loaded[key]}, the model {shape}")
    print(f"adapter: {len(entries)} tensors match the {len(expected)} LoRA parameters PEFT creates")
    return fields, config, entries


def load_tensors(path, torch):
    entries, _, data = read_safetensors(path, with_data=True)
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    buffer = bytearray(data)
    tensors = {}
    for name, entry in entries.items():
        begin, end = entry["data_offsets"]
        if begin == end:
            tensors[name] = (entry["dtype"], torch.zeros(entry["shape"], dtype=dtypes[entry["dtype"]]))
            continue
        flat = torch.frombuffer(buffer, dtype=dtypes[entry["dtype"]], count=(end - begin) * 8 // DTYPE_BITS[entry["dtype"]], offset=begin)
        tensors[name] = (entry["dtype"], flat.reshape(entry["shape"]).clone())
    return tensors


def load_model(directory, torch):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(load_tensors(os.path.join(directory, name), torch))
    return tensors


def ulp(values, torch_dtype, torch):
    """Return the spacing of torch_dtype at each value, as float64."""
    finfo = torch.finfo(torch_dtype)
    magnitude = values.abs().clamp(min=finfo.tiny)
    exponent = torch.floor(torch.log2(magnitude))
    mantissa_bits = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10, torch.float64: 52}[torch_dtype]
    return torch.pow(2.0, exponent - mantissa_bits)


def check_merge(fields, adapter_dir, base_dir, merged_dir):
    import torch

    adapter = {name: t for name, (_, t) in load_tensors(os.path.join(adapter_dir, "adapter_model.safetensors"), torch).items()}
    base = load_model(base_dir, torch)
    merged = load_model(merged_dir, torch)
    if set(base) != set(merged):
        fail(f"{merged_dir}: tensor names differ from the base: {sorted(set(base) ^ set(merged))[:5]}")
    r = fields["r"]
    scaling = fields["lora_alpha"] / (math.sqrt(r) if fields.get("use_rslora") else r)
    adapted = worst = differ_from_peft = total = 0
    for name, (dtype, w) in base.items():
        merged_dtype, m = merged[name]
        if merged_dtype != dtype or list(m.shape) != list(w.shape):
            fail(f"{merged_dir}: {name}: {merged_dtype} {list(m.shape)}, the base has {dtype} {list(w.shape)}")
        module = name[: -len(".weight")]
        a = adapter.get(f"base_model.model.{module}.lora_A.weight")
        b = adapter.get(f"base_model.model.{module}.lora_B.weight")
        if a is None:
            if not torch.equal(m.view(torch.uint8) if m.dtype == torch.bool else m, w):
                fail(f"{merged_dir}: {name} is not adapted but differs from the base")
            continue
        adapted += 1
        reference = w.double() + scaling * (b.double() @ a.double())
        error_ulps = ((m.double() - reference).abs() / ulp(reference, w.dtype, torch)).max().item()
        worst = max(worst, error_ulps)
        if error_ulps > 1:
            fail(f"{merged_dir}: {name}: {error_ulps:.2f} units in the last place from W + scaling * B @ A")
        # LoraLayer.get_delta_weight on CPU computes in the adapter's dtype, widened to
        # float32 and rounded back for bf16 and fp16, and Linear.merge with the default
        # safe_merge=False adds it in place: base_layer.weight.data += delta_weight.
        if b.dtype in (torch.bfloat16, torch.float16):
            delta = ((b.float() @ a.float()) * scaling).to(b.dtype)
        else:
            delta = (b @ a) * scaling
        peft_merged = w.clone()
        peft_merged += delta
        differ = peft_merged != m
        differ_from_peft += int(differ.sum().item())
        total += m.numel()
    print(f"merge: {adapted} adapted weights within {worst:.3f} ulp of the float64 reference; "
          f"{differ_from_peft} of {total} elements differ from PEFT's CPU merge_and_unload arithmetic")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter_dir")
    parser.add_argument("--base-config", help="config.json of the base model; default: base_model_name_or_path/config.json")
    parser.add_argument("--base-dir", help="base model directory, to check a merge")
    parser.add_argument("--merged-dir", help="merged model directory, to check a merge")
    args = parser.parse_args()
    if (args.base_dir is None) != (args.merged_dir is None):
        parser.error("--base-dir and --merged-dir go together")
    try:
        fields, _, _ = check_adapter(args.adapter_dir, args.base_config)
        if args.base_dir:
            check_merge(fields, args.adapter_dir, args.base_dir, args.merged_dir)
    except CheckError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
