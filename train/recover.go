package train

import (
	"context"
	"fmt"

	"github.com/ringtune/ringtune/kernels"
	"github.com/ringtune/ringtune/kernels/cpu"
)

// BroadcastState copies root's trainable weights and AdamW state to every rank:
// the values, both moment estimates and the optimizer's step count. After a lost
// rank, the survivors and the replacement take one survivor's state with it, so
// that every replica continues from the same step. The frozen weights are not
// sent, because every rank loads them from the same files. Call it on every rank
// of a new ring before the first Step.
func (s *Stepper) BroadcastState(ctx context.Context, root int) error {
	expAvg, expAvgSq, err := s.optimizer.Moments()
	if err != nil {
		return err
	}
	for _, part := range []struct {
		name   string
		tensor kernels.Tensor
	}{
		{"trainable weights", s.model.FlatTrainable()},
		{"AdamW first moments", expAvg},
		{"AdamW second moments", expAvgSq},
	} {
		if err := s.broadcastTensor(ctx, part.tensor, root); err != nil {
			return fmt.Errorf("broadcast of the %s from rank %d failed: %w", part.name, root, err)
		}
	}

	// The step count travels as float32 parts of 12 bits, exact up to 2^36.
	var count [3]float32
	if s.comm.Rank() == root {
		n := s.optimizer.StepCount()
		count = [3]float32{float32(n >> 24), float32(n >> 12 & (1<<12 - 1)), float32(n & (1<<12 - 1))}
	}
	if err := s.comm.Broadcast(ctx, count[:], root); err != nil {
		return fmt.Errorf("broadcast of the AdamW step count from rank %d failed: %w", root, err)
	}
	s.optimizer.SetStepCount(int(count[0])<<24 + int(count[1])<<12 + int(count[2]))
	return nil
}

// broadcastTensor broadcasts an F32 tensor, in place on the CPU backend and
// through a host copy on a device backend.
func (s *Stepper) broadcastTensor(ctx context.Context, t kernels.Tensor, root int) error {
	backend := s.model.Backend()
	if _, ok := backend.(*cpu.Backend); ok {
		return s.comm.Broadcast(ctx, cpu.Float32s(t), root)
	}
	values := make([]float32, t.Len())
	if err := backend.CopyToHostF32(values, t); err != nil {
		return err
	}
	if err := s.comm.Broadcast(ctx, values, root); err != nil {
		return err
	}
	return backend.CopyFromHostF32(t, values)
}
