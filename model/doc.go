// Package model holds the Qwen3 architecture and its training runtime: the
// Hugging Face configuration, the parameter table with Hugging Face tensor
// names, LoRA adapter specifications, and Model, which runs the forward and
// backward passes of Qwen3ForCausalLM on a kernels.Backend.
//
// Entry points: LoadConfig or Preset returns a Config, and New builds a Model
// from it, which LoadBase or InitRandom fills. ForwardBackward, Loss and Logits
// run the model on a data.Batch. NewAdamW and Schedule update the trainable
// tensors. NewDecoder generates text with a KV cache and samples with a
// Sampler. Package peft saves and loads the adapters of a model in LoRA mode.
//
// # Buffers
//
// Every buffer is derived from the parameter table (Config.Params) and, in LoRA
// mode, the adapter table (Config.Adapters). New allocates them once: the
// trainable values and their gradients as two flat F32 buffers in Trainable
// order, the frozen weights in F32 or BF16, and the activations for
// Options.MaxBatch × Options.MaxSeq tokens. A batch of fewer rows or tokens
// uses the front of each activation buffer. The step code allocates nothing,
// and neither does the CPU backend once its scratch memory has grown to the
// batch shape.
//
// # Forward and backward
//
// The forward pass computes
//
//	x = embed_tokens[ids]
//	for each layer:
//	    h  = x + o_proj(attention(rope(q_norm(q_proj(n))), rope(k_norm(k_proj(n))), v_proj(n)))
//	         where n = input_layernorm(x)
//	    x  = h + down_proj(silu(gate_proj(m)) · up_proj(m)),  where m = post_attention_layernorm(h)
//	loss = cross_entropy(norm(x) · headᵀ, targets)
//
// with the head tied to embed_tokens unless tie_word_embeddings is false.
// Attention is causal, grouped-query and confined to each example of a packed
// row (data.Batch.Starts), and RoPE takes its positions from
// data.Batch.Positions with rope_theta from the config. In
// LoRA mode each targeted projection computes W·x + (alpha/r)·B·(A·dropout(x)),
// as PEFT's LoRA layer does, where dropout acts only in ForwardBackward and
// only with a positive LoRAConfig.Dropout. layer.go lists the kernel calls of a
// decoder layer in this order, and the backward pass mirrors them with
// d-prefixed names in reverse order.
//
// # Gradient policy
//
// Parameter gradients accumulate (+=) until ZeroGrad, so calling
// ForwardBackward on several micro-batches accumulates their gradients.
// Activation gradients are overwritten by each op. The gradient of the residual
// stream is one buffer that each layer's backward pass adds its branches to.
// Frozen weights have no gradient buffer, and backward skips their
// weight-gradient products.
//
// # Dimension letters
//
// Shape comments use the letters of package kernels: B rows of a micro-batch, T
// tokens per row, C hidden size, I intermediate size, V vocabulary, NH query
// heads, NKV key/value heads, HS head size, and r the LoRA rank.
package model
