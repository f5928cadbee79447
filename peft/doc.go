// Package peft reads and writes LoRA adapters in the directory format of Hugging Face
// PEFT and merges them into a base model's weights.
//
// # Directory format
//
// An adapter directory holds adapter_config.json and adapter_model.safetensors, as
// PeftModel.save_pretrained writes them (src/peft/peft_model.py, src/peft/config.py and
// src/peft/tuners/lora/config.py in huggingface/peft, read at v0.10.0 to v0.20.1.dev0).
//
// WriteConfig writes the 24 keys that LoraConfig of PEFT 0.10.0 to 0.13.2 saves, with
// Python's json.dumps(indent=2, sort_keys=True) layout and no final newline. PEFT before
// 0.14 raises TypeError on keys it does not know, and later versions fill the keys that
// are missing with their defaults, so every PEFT from 0.10 on loads the file. Only
// exclude_modules, which older PEFT lacks, is written when it is set.
//
// Tensors are named as PEFT saves them, without the adapter name:
// base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight with shape
// (r, in_features) and ...lora_B.weight with shape (out_features, r). Load also accepts
// the same names with ".default" before ".weight", which some tools write.
//
// # Reading
//
// ParseConfig accepts the keys of PEFT's LoraConfig up to 0.20. It rejects, by field
// name, every option whose weights or math this package does not implement. These are
// DoRA and the other LoRA variants, rank_pattern and alpha_pattern, modules_to_save,
// bias other than "none", lora_bias, target_modules given as a regular expression, and
// initializations that change the base weights (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA,
// MiCA). use_rslora is supported: it sets the scaling to lora_alpha / sqrt(r) instead of
// lora_alpha / r. target_modules, exclude_modules and layers_to_transform select modules
// by PEFT's rules (check_target_module_exists in src/peft/tuners/tuners_utils.py): an
// entry matches a module whose name equals it or ends with "." + entry.
//
// Load checks every tensor against the base model's shapes and rejects unknown, missing
// and misshapen tensors by name.
//
// # Merging
//
// Merge computes W' = W + scaling · B·A for every adapted weight in float64 and rounds
// the result once to the base weight's dtype, to nearest even. PEFT's merge_and_unload
// (default safe_merge=False, on CPU) computes scaling · B·A in the adapter's dtype,
// float32 by default, and adds that rounded delta to the weight in place. The two were
// compared with testdata/check_peft_format.py and torch on a 2-layer Qwen3 of hidden
// size 48 with random weights and a rank-4 float32 adapter on all seven projections.
// On an F32 base they differ in the last bits of 7,393 of 41,472 adapted elements, and
// on a BF16 base they agree on every element. Merge streams one row at a time and holds
// only the adapter in memory.
package peft
