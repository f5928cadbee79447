package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ringtune/ringtune/kernels"
)

// Mode selects which tensors train.
type Mode int

const (
	// ModeFull trains every tensor of the parameter table.
	ModeFull Mode = iota
	// ModeLoRA freezes the parameter table and trains LoRA adapters on the
	// projections that Options.LoRA targets.
	ModeLoRA
)

// String returns "full" or "lora".
func (m Mode) String() string {
	switch m {
	case ModeFull:
		return "full"
	case ModeLoRA:
		return "lora"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode returns the Mode named "full" or "lora", in any letter case.
func ParseMode(name string) (Mode, error) {
	switch strings.ToLower(name) {
	case "full":
		return ModeFull, nil
	case "lora":
		return ModeLoRA, nil
	}
	return 0, fmt.Errorf("unknown training mode %q: use full or lora", name)
}

// Options configures a Model.
type Options struct {
	// Mode selects full fine-tuning or LoRA. The zero value is ModeFull.
	Mode Mode
	// LoRA sets the adapters in ModeLoRA and is ignored in ModeFull. A
	// positive LoRA.Dropout applies dropout to each adapter's input in
	// ForwardBackward only. It costs three backend buffers and one host slice
	// of MaxBatch × MaxSeq × (the widest adapted input) elements each.
	LoRA LoRAConfig
	// DropoutSeed seeds the LoRA dropout masks. The mask of a projection is a
	// function of DropoutSeed, the dropout step (see SetDropoutStep), the layer,
	// the projection and the element, so runs with equal seeds and steps draw
	// equal masks. Data-parallel ranks should use distinct seeds, such as
	// seed + rank, unless they are meant to draw the same masks. The default
	// is 0.
	DropoutSeed uint64
	// FrozenBF16 stores the frozen matrices (the embedding, the projections and
	// an untied lm_head) in bfloat16, which halves the memory of the base model.
	// Norm weights stay F32 because they are small. Values are rounded to
	// nearest even when loaded or set, and the kernels take the BF16 matrices
	// as they are (Matmul, EmbeddingForward and LinearCrossEntropy accept a
	// BF16 weight). It requires ModeLoRA, because trained weights need fp32.
	FrozenBF16 bool
	// Checkpointing keeps only each decoder layer's input, (B, T, C), from the
	// forward pass and recomputes the layer's other activations in backward,
	// one layer at a time. Those activations then take the memory of one layer
	// instead of L, for one extra forward pass of the decoder layers. The CPU
	// backend gives bit-identical results with and without it, because the
	// recomputation repeats the same kernel calls on the same inputs.
	Checkpointing bool
	// MaxBatch and MaxSeq are the largest batch, in rows, and row length, in
	// tokens, that the activations are allocated for. Smaller batches use the
	// front of the buffers, and larger ones fail.
	MaxBatch, MaxSeq int
}

// Validate checks the mode, the LoRA settings and the activation shape.
func (o Options) Validate() error {
	switch o.Mode {
	case ModeFull:
		if o.FrozenBF16 {
			return errors.New("FrozenBF16 needs ModeLoRA: full fine-tuning keeps every weight in fp32")
		}
	case ModeLoRA:
		if err := o.LoRA.Validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("invalid mode %v: use ModeFull or ModeLoRA", o.Mode)
	}
	if o.MaxBatch <= 0 || o.MaxSeq <= 0 {
		return fmt.Errorf("MaxBatch %d and MaxSeq %d must both be positive: they size the activation buffers", o.MaxBatch, o.MaxSeq)
	}
	return nil
}

// Model is a Qwen3ForCausalLM with its weights, gradients and activations on
// one backend. Its methods are not safe for concurrent use, because the
// backend is not.
type Model struct {
	backend kernels.Backend
	cfg     Config
	opts    Options

	// entries lists every tensor: the parameter table in order, then the
	// adapters in Config.Adapters order.
	entries   []*tensorEntry
	byName    map[string]*tensorEntry
	trainable []*tensorEntry // entries with a gradient, in Trainable order
	buffers   []kernels.Buffer

	// flatValues and flatGrads view every trainable value and gradient as one
	// 1-D tensor each, in Trainable order.
	flatValues, flatGrads kernels.Tensor
	gradList              []kernels.Tensor // {flatGrads}, for GlobalNorm without allocating

	embed     *tensorEntry // model.embed_tokens.weight
	finalNorm *tensorEntry // model.norm.weight
	head      *tensorEntry // lm_head.weight, or embed when tied
	layers    []layerWeights

	eps         float32 // rms_norm_eps
	loraScaling float32 // alpha / r, used in ModeLoRA

	acts  activations
	ready gradReadiness

	// dropout holds the LoRA dropout buffers, nil unless Options.LoRA.Dropout
	// is positive in ModeLoRA. With nil, the adapters take the code path of
	// dropout 0 exactly.
	dropout *loraDropout
	// training is true while ForwardBackward runs, the only time dropout acts.
	training bool
	// dropoutStep keys the dropout masks. ForwardBackward adds 1 after each
	// pass, and SetDropoutStep sets it.
	dropoutStep uint64

	// logits is a (MaxSeq, V) buffer that Logits allocates on its first call.
	logits kernels.Tensor
}

// New builds a model for cfg on backend with zero weights. Call InitRandom or
// LoadBase (and InitAdapters in LoRA mode) before training. Close releases its
// buffers.
func New(backend kernels.Backend, cfg Config, opts Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	m := &Model{
		backend: backend,
		cfg:     cfg,
		opts:    opts,
		eps:     float32(cfg.RMSNormEps),
	}
	if opts.Mode == ModeLoRA {
		m.loraScaling = float32(opts.LoRA.Scaling())
	}
	m.buildTable()
	m.bindWeights()
	if err := m.allocateTensors(); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.acts.allocate(m); err != nil {
		m.Close()
		return nil, err
	}
	if opts.Mode == ModeLoRA && opts.LoRA.Dropout > 0 {
		var err error
		if m.dropout, err = newLoRADropout(m); err != nil {
			m.Close()
			return nil, err
		}
	}
	m.ready.init(len(m.trainable))
	return m, nil
}

// Close releases every buffer of the model. The model and the tensors it
// returned are invalid afterwards.
func (m *Model) Close() {
	for _, buf := range m.buffers {
		m.backend.Free(buf)
	}
	m.buffers = nil
}

// Config returns the model's shape.
func (m *Model) Config() Config { return m.cfg }

// Options returns the options the model was built with.
func (m *Model) Options() Options { return m.opts }

// DropoutStep returns the step that keys the next ForwardBackward call's LoRA
// dropout masks.
func (m *Model) DropoutStep() uint64 { return m.dropoutStep }

// SetDropoutStep sets the step that keys the next ForwardBackward call's LoRA
// dropout masks. ForwardBackward adds 1 after each call, micro-batches
// included, so a trainer that resumes a run sets the number of
// ForwardBackward calls made before, and one that reruns a micro-batch sets
// its step again to draw the same masks. The step starts at 0.
func (m *Model) SetDropoutStep(step uint64) { m.dropoutStep = step }

// Backend returns the backend that holds the model's buffers.
func (m *Model) Backend() kernels.Backend { return m.backend }

// alloc allocates a buffer that Close frees.
func (m *Model) alloc(dtype kernels.DType, n int) (kernels.Buffer, error) {
	buf, err := m.backend.Alloc(dtype, n)
	if err != nil {
		return nil, fmt.Errorf("allocating %d %s elements on %s: %w", n, dtype, m.backend.Name(), err)
	}
	m.buffers = append(m.buffers, buf)
	return buf, nil
}
