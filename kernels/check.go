package kernels

import (
	"fmt"
	"math"
)

// The Check functions validate an op's arguments against the contract
// documented on Backend, so that every backend rejects the same calls with the
// same messages. They check shapes, dtypes and overlaps, not element values
// (ids, targets, positions), which only the backend can read.

// shapeError formats a contract violation of op.
func shapeError(op, format string, args ...any) error {
	return fmt.Errorf("kernels: %s: %s", op, fmt.Sprintf(format, args...))
}

func requirePresent(op, name string, t Tensor) error {
	if t.IsAbsent() {
		return shapeError(op, "%s is absent but required", name)
	}
	return nil
}

func requireDType(op, name string, t Tensor, allowed ...DType) error {
	if err := requirePresent(op, name, t); err != nil {
		return err
	}
	for _, d := range allowed {
		if t.DType() == d {
			return nil
		}
	}
	want := allowed[0].String()
	if len(allowed) == 2 {
		want += " or " + allowed[1].String()
	}
	return shapeError(op, "%s is %s, want dtype %s", name, t, want)
}

// requireMatrix checks that t is F32 and reads as a rows×cols matrix.
func requireMatrix(op, name string, t Tensor, rows, cols int, expected string) error {
	if err := requireDType(op, name, t, F32); err != nil {
		return err
	}
	r, c := t.Matrix()
	if r != rows || c != cols {
		return shapeError(op, "%s is %s, which reads as a %d×%d matrix, want %d×%d (%s)", name, t, r, c, rows, cols, expected)
	}
	return nil
}

// requireLen checks that t holds n elements of dtype.
func requireLen(op, name string, t Tensor, n int, expected string, allowed ...DType) error {
	if err := requireDType(op, name, t, allowed...); err != nil {
		return err
	}
	if t.Len() != n {
		return shapeError(op, "%s is %s with %d elements, want %d (%s)", name, t, t.Len(), n, expected)
	}
	return nil
}

// requireDims checks that t is F32 with exactly the dimensions dims.
func requireDims(op, name string, t Tensor, expected string, dims ...int) error {
	if err := requireDType(op, name, t, F32); err != nil {
		return err
	}
	if t.Rank() != len(dims) {
		return shapeError(op, "%s is %s, want shape %s (%s)", name, t, formatShape(dims), expected)
	}
	for i, d := range dims {
		if t.Dim(i) != d {
			return shapeError(op, "%s is %s, want shape %s (%s)", name, t, formatShape(dims), expected)
		}
	}
	return nil
}

// Overlaps reports whether a and b view common elements of one buffer.
func Overlaps(a, b Tensor) bool {
	if a.IsAbsent() || b.IsAbsent() || a.buf != b.buf || a.Len() == 0 || b.Len() == 0 {
		return false
	}
	return a.offset < b.offset+b.Len() && b.offset < a.offset+a.Len()
}

// sameView reports whether a and b are the same elements of one buffer.
func sameView(a, b Tensor) bool {
	return a.buf == b.buf && a.offset == b.offset && a.Len() == b.Len()
}

// forbidOverlap fails when a and b share any element.
func forbidOverlap(op, nameA string, a Tensor, nameB string, b Tensor) error {
	if Overlaps(a, b) {
		return shapeError(op, "%s (%s at offset %d) overlaps %s (%s at offset %d). Pass separate memory",
			nameA, a, a.offset, nameB, b, b.offset)
	}
	return nil
}

// allowInPlace fails when a and b overlap without being the same view, which
// an elementwise op cannot handle.
func allowInPlace(op, nameA string, a Tensor, nameB string, b Tensor) error {
	if Overlaps(a, b) && !sameView(a, b) {
		return shapeError(op, "%s (%s at offset %d) partly overlaps %s (%s at offset %d). Pass the same view or separate memory",
			nameA, a, a.offset, nameB, b, b.offset)
	}
	return nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// MatmulDims holds the sizes of c = op(a)·op(b): op(a) is M×K, op(b) is K×N.
type MatmulDims struct{ M, N, K int }

// CheckMatmul validates the arguments of Backend.Matmul.
func CheckMatmul(c, a, b Tensor, transA, transB bool) (MatmulDims, error) {
	const op = "Matmul"
	if err := firstError(
		requireDType(op, "c", c, F32),
		requireDType(op, "a", a, F32),
		requireDType(op, "b", b, F32, BF16),
	); err != nil {
		return MatmulDims{}, err
	}
	m, k := a.Matrix()
	if transA {
		m, k = k, m
	}
	kb, n := b.Matrix()
	if transB {
		kb, n = n, kb
	}
	if k != kb {
		return MatmulDims{}, shapeError(op, "inner dimensions differ: op(a) is %d×%d (a %s, transA %t) but op(b) is %d×%d (b %s, transB %t)",
			m, k, a, transA, kb, n, b, transB)
	}
	if err := requireMatrix(op, "c", c, m, n, "op(a) rows × op(b) columns"); err != nil {
		return MatmulDims{}, err
	}
	if err := firstError(
		forbidOverlap(op, "c", c, "a", a),
		forbidOverlap(op, "c", c, "b", b),
	); err != nil {
		return MatmulDims{}, err
	}
	return MatmulDims{M: m, N: n, K: k}, nil
}

// EmbeddingDims holds the sizes of an embedding lookup of N ids into a (V, C)
// table.
type EmbeddingDims struct{ N, V, C int }

// CheckEmbeddingForward validates the arguments of Backend.EmbeddingForward.
func CheckEmbeddingForward(out, table, ids Tensor) (EmbeddingDims, error) {
	return checkEmbedding("EmbeddingForward", "out", out, "table", table, ids, F32, BF16)
}

// CheckEmbeddingBackward validates the arguments of Backend.EmbeddingBackward.
func CheckEmbeddingBackward(dTable, dOut, ids Tensor) (EmbeddingDims, error) {
	return checkEmbedding("EmbeddingBackward", "dOut", dOut, "dTable", dTable, ids, F32)
}

func checkEmbedding(op, rowsName string, rows Tensor, tableName string, table, ids Tensor, tableDTypes ...DType) (EmbeddingDims, error) {
	if err := firstError(
		requireDType(op, tableName, table, tableDTypes...),
		requireDType(op, "ids", ids, I32),
	); err != nil {
		return EmbeddingDims{}, err
	}
	if table.Rank() != 2 {
		return EmbeddingDims{}, shapeError(op, "%s is %s, want 2 dimensions (V, C)", tableName, table)
	}
	d := EmbeddingDims{N: ids.Len(), V: table.Dim(0), C: table.Dim(1)}
	if err := requireMatrix(op, rowsName, rows, d.N, d.C, "one row of C per id"); err != nil {
		return EmbeddingDims{}, err
	}
	return d, forbidOverlap(op, rowsName, rows, tableName, table)
}

// RowDims holds the sizes of an op over N rows of C elements.
type RowDims struct{ N, C int }

// CheckRMSNormForward validates the arguments of Backend.RMSNormForward.
func CheckRMSNormForward(out, rstd, x, weight Tensor, eps float32) (RowDims, error) {
	const op = "RMSNormForward"
	if err := requireDType(op, "x", x, F32); err != nil {
		return RowDims{}, err
	}
	n, c := x.Matrix()
	if err := firstError(
		requireMatrix(op, "out", out, n, c, "the shape of x"),
		requireLen(op, "weight", weight, c, "C, the last dimension of x", F32),
		allowInPlace(op, "out", out, "x", x),
		forbidOverlap(op, "out", out, "weight", weight),
	); err != nil {
		return RowDims{}, err
	}
	if !rstd.IsAbsent() {
		if err := firstError(
			requireLen(op, "rstd", rstd, n, "one value per row of x", F32),
			forbidOverlap(op, "rstd", rstd, "x", x),
			forbidOverlap(op, "rstd", rstd, "out", out),
		); err != nil {
			return RowDims{}, err
		}
	}
	if !(eps >= 0) {
		return RowDims{}, shapeError(op, "invalid eps %g: must be a non-negative number", eps)
	}
	return RowDims{N: n, C: c}, nil
}

// CheckRMSNormBackward validates the arguments of Backend.RMSNormBackward.
func CheckRMSNormBackward(dx, dWeight, dOut, x, weight, rstd Tensor) (RowDims, error) {
	const op = "RMSNormBackward"
	if err := requireDType(op, "x", x, F32); err != nil {
		return RowDims{}, err
	}
	n, c := x.Matrix()
	if err := firstError(
		requireMatrix(op, "dx", dx, n, c, "the shape of x"),
		requireMatrix(op, "dOut", dOut, n, c, "the shape of x"),
		requireLen(op, "weight", weight, c, "C, the last dimension of x", F32),
		requireLen(op, "rstd", rstd, n, "one value per row of x", F32),
		allowInPlace(op, "dx", dx, "dOut", dOut),
		forbidOverlap(op, "dx", dx, "x", x),
		forbidOverlap(op, "dx", dx, "weight", weight),
		forbidOverlap(op, "dx", dx, "rstd", rstd),
	); err != nil {
		return RowDims{}, err
	}
	if !dWeight.IsAbsent() {
		if err := firstError(
			requireLen(op, "dWeight", dWeight, c, "C, the last dimension of x", F32),
			forbidOverlap(op, "dWeight", dWeight, "dx", dx),
			forbidOverlap(op, "dWeight", dWeight, "dOut", dOut),
			forbidOverlap(op, "dWeight", dWeight, "x", x),
		); err != nil {
			return RowDims{}, err
		}
	}
	return RowDims{N: n, C: c}, nil
}

// HeadDims holds the sizes of a (B, T, heads, HS) tensor.
type HeadDims struct{ B, T, Heads, HS int }

// CheckRoPE validates the arguments of Backend.RoPEForward (out, x) and
// Backend.RoPEBackward (dx, dOut).
func CheckRoPE(op string, out, x, positions Tensor, theta float64) (HeadDims, error) {
	if err := requireDType(op, "input", x, F32); err != nil {
		return HeadDims{}, err
	}
	if x.Rank() != 4 {
		return HeadDims{}, shapeError(op, "input is %s, want 4 dimensions (B, T, NH, HS)", x)
	}
	d := HeadDims{B: x.Dim(0), T: x.Dim(1), Heads: x.Dim(2), HS: x.Dim(3)}
	if d.HS%2 != 0 {
		return HeadDims{}, shapeError(op, "input is %s, but the head size %d must be even to rotate half of it", x, d.HS)
	}
	if err := firstError(
		requireDims(op, "output", out, "the shape of the input", d.B, d.T, d.Heads, d.HS),
		requireLen(op, "positions", positions, d.B*d.T, "(B, T), one position per token", I32),
		allowInPlace(op, "output", out, "input", x),
		forbidOverlap(op, "output", out, "positions", positions),
	); err != nil {
		return HeadDims{}, err
	}
	if !(theta > 0) || math.IsInf(theta, 1) {
		return HeadDims{}, shapeError(op, "invalid theta %g: must be a positive finite number such as 1e6", theta)
	}
	return d, nil
}

// AttentionDims holds the sizes of grouped-query attention.
type AttentionDims struct{ B, T, NH, NKV, HS int }

// CheckAttentionForward validates the arguments of Backend.AttentionForward.
func CheckAttentionForward(out, lse, q, k, v, segmentStarts Tensor) (AttentionDims, error) {
	const op = "AttentionForward"
	d, err := checkAttentionInputs(op, q, k, v, segmentStarts)
	if err != nil {
		return d, err
	}
	if err := firstError(
		requireDims(op, "out", out, "the shape of q", d.B, d.T, d.NH, d.HS),
		forbidOverlap(op, "out", out, "q", q),
		forbidOverlap(op, "out", out, "k", k),
		forbidOverlap(op, "out", out, "v", v),
	); err != nil {
		return d, err
	}
	if !lse.IsAbsent() {
		if err := firstError(
			requireDims(op, "lse", lse, "B, NH, T", d.B, d.NH, d.T),
			forbidOverlap(op, "lse", lse, "out", out),
			forbidOverlap(op, "lse", lse, "q", q),
			forbidOverlap(op, "lse", lse, "k", k),
			forbidOverlap(op, "lse", lse, "v", v),
		); err != nil {
			return d, err
		}
	}
	return d, nil
}

// CheckAttentionBackward validates the arguments of Backend.AttentionBackward.
func CheckAttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse, segmentStarts Tensor) (AttentionDims, error) {
	const op = "AttentionBackward"
	d, err := checkAttentionInputs(op, q, k, v, segmentStarts)
	if err != nil {
		return d, err
	}
	if err := firstError(
		requireDims(op, "dq", dq, "the shape of q", d.B, d.T, d.NH, d.HS),
		requireDims(op, "dk", dk, "the shape of k", d.B, d.T, d.NKV, d.HS),
		requireDims(op, "dv", dv, "the shape of v", d.B, d.T, d.NKV, d.HS),
		requireDims(op, "dOut", dOut, "the shape of q", d.B, d.T, d.NH, d.HS),
		requireDims(op, "out", out, "the shape of q", d.B, d.T, d.NH, d.HS),
		requireDims(op, "lse", lse, "B, NH, T", d.B, d.NH, d.T),
	); err != nil {
		return d, err
	}
	outputs := []struct {
		name string
		t    Tensor
	}{{"dq", dq}, {"dk", dk}, {"dv", dv}}
	inputs := []struct {
		name string
		t    Tensor
	}{{"dOut", dOut}, {"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}, {"segmentStarts", segmentStarts}}
	for i, o := range outputs {
		for _, other := range outputs[i+1:] {
			if err := forbidOverlap(op, o.name, o.t, other.name, other.t); err != nil {
				return d, err
			}
		}
		for _, in := range inputs {
			if err := forbidOverlap(op, o.name, o.t, in.name, in.t); err != nil {
				return d, err
			}
		}
	}
	return d, nil
}

func checkAttentionInputs(op string, q, k, v, segmentStarts Tensor) (AttentionDims, error) {
	if err := requireDType(op, "q", q, F32); err != nil {
		return AttentionDims{}, err
	}
	if q.Rank() != 4 {
		return AttentionDims{}, shapeError(op, "q is %s, want 4 dimensions (B, T, NH, HS)", q)
	}
	if err := requireDType(op, "k", k, F32); err != nil {
		return AttentionDims{}, err
	}
	if k.Rank() != 4 {
		return AttentionDims{}, shapeError(op, "k is %s, want 4 dimensions (B, T, NKV, HS)", k)
	}
	d := AttentionDims{B: q.Dim(0), T: q.Dim(1), NH: q.Dim(2), NKV: k.Dim(2), HS: q.Dim(3)}
	if err := firstError(
		requireDims(op, "k", k, "(B, T, NKV, HS) with B, T and HS of q", d.B, d.T, d.NKV, d.HS),
		requireDims(op, "v", v, "the shape of k", d.B, d.T, d.NKV, d.HS),
		requireLen(op, "segmentStarts", segmentStarts, d.B*d.T, "(B, T), one value per token", I32),
	); err != nil {
		return d, err
	}
	if d.NKV == 0 || d.NH%d.NKV != 0 {
		return d, shapeError(op, "q has %d heads and k has %d, but the query heads must be a multiple of the key/value heads", d.NH, d.NKV)
	}
	return d, nil
}

// CheckSwiGLUForward validates the arguments of Backend.SwiGLUForward.
func CheckSwiGLUForward(out, gate, up Tensor) (int, error) {
	const op = "SwiGLUForward"
	if err := requireDType(op, "gate", gate, F32); err != nil {
		return 0, err
	}
	n := gate.Len()
	if err := firstError(
		requireLen(op, "up", up, n, "the size of gate", F32),
		requireLen(op, "out", out, n, "the size of gate", F32),
		allowInPlace(op, "out", out, "gate", gate),
		allowInPlace(op, "out", out, "up", up),
	); err != nil {
		return 0, err
	}
	return n, nil
}

// CheckSwiGLUBackward validates the arguments of Backend.SwiGLUBackward.
func CheckSwiGLUBackward(dGate, dUp, dOut, gate, up Tensor) (int, error) {
	const op = "SwiGLUBackward"
	if err := requireDType(op, "gate", gate, F32); err != nil {
		return 0, err
	}
	n := gate.Len()
	if err := firstError(
		requireLen(op, "up", up, n, "the size of gate", F32),
		requireLen(op, "dOut", dOut, n, "the size of gate", F32),
		requireLen(op, "dGate", dGate, n, "the size of gate", F32),
		requireLen(op, "dUp", dUp, n, "the size of gate", F32),
		forbidOverlap(op, "dGate", dGate, "dUp", dUp),
	); err != nil {
		return 0, err
	}
	for _, out := range []struct {
		name string
		t    Tensor
	}{{"dGate", dGate}, {"dUp", dUp}} {
		if err := firstError(
			allowInPlace(op, out.name, out.t, "dOut", dOut),
			allowInPlace(op, out.name, out.t, "gate", gate),
			allowInPlace(op, out.name, out.t, "up", up),
		); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// CheckAdd validates the arguments of Backend.Add.
func CheckAdd(out, a, b Tensor) (int, error) {
	const op = "Add"
	if err := requireDType(op, "a", a, F32); err != nil {
		return 0, err
	}
	n := a.Len()
	if err := firstError(
		requireLen(op, "b", b, n, "the size of a", F32),
		requireLen(op, "out", out, n, "the size of a", F32),
		allowInPlace(op, "out", out, "a", a),
		allowInPlace(op, "out", out, "b", b),
	); err != nil {
		return 0, err
	}
	return n, nil
}

// CrossEntropyDims holds the sizes of LinearCrossEntropy: N rows of hidden
// size C and a vocabulary of V.
type CrossEntropyDims struct{ N, C, V int }

// CheckLinearCrossEntropy validates the arguments of
// Backend.LinearCrossEntropy.
func CheckLinearCrossEntropy(dHidden, dWeight, hidden, weight, targets Tensor) (CrossEntropyDims, error) {
	const op = "LinearCrossEntropy"
	if err := firstError(
		requireDType(op, "hidden", hidden, F32),
		requireDType(op, "weight", weight, F32, BF16),
	); err != nil {
		return CrossEntropyDims{}, err
	}
	n, c := hidden.Matrix()
	if weight.Rank() != 2 || weight.Dim(1) != c {
		return CrossEntropyDims{}, shapeError(op, "weight is %s, want (V, %d) to match hidden %s", weight, c, hidden)
	}
	d := CrossEntropyDims{N: n, C: c, V: weight.Dim(0)}
	if err := requireLen(op, "targets", targets, n, "one per row of hidden", I32); err != nil {
		return d, err
	}
	if !dHidden.IsAbsent() {
		if err := firstError(
			requireMatrix(op, "dHidden", dHidden, n, c, "the shape of hidden"),
			forbidOverlap(op, "dHidden", dHidden, "hidden", hidden),
			forbidOverlap(op, "dHidden", dHidden, "weight", weight),
			forbidOverlap(op, "dHidden", dHidden, "targets", targets),
		); err != nil {
			return d, err
		}
	}
	if !dWeight.IsAbsent() {
		if err := firstError(
			requireDims(op, "dWeight", dWeight, "the shape of weight", d.V, d.C),
			forbidOverlap(op, "dWeight", dWeight, "hidden", hidden),
			forbidOverlap(op, "dWeight", dWeight, "weight", weight),
			forbidOverlap(op, "dWeight", dWeight, "dHidden", dHidden),
			forbidOverlap(op, "dWeight", dWeight, "targets", targets),
		); err != nil {
			return d, err
		}
	}
	return d, nil
}

// CheckAdamW validates the arguments of Backend.AdamW. The hyperparameter
// ranges are those that torch.optim.AdamW accepts.
func CheckAdamW(param, grad, m, v Tensor, step AdamWStep) (int, error) {
	const op = "AdamW"
	if err := requireDType(op, "param", param, F32); err != nil {
		return 0, err
	}
	n := param.Len()
	tensors := []struct {
		name string
		t    Tensor
	}{{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}
	for i, a := range tensors {
		if err := requireLen(op, a.name, a.t, n, "the size of param", F32); err != nil {
			return 0, err
		}
		for _, b := range tensors[i+1:] {
			if err := forbidOverlap(op, a.name, a.t, b.name, b.t); err != nil {
				return 0, err
			}
		}
	}
	switch {
	case !(step.LR >= 0):
		return 0, shapeError(op, "invalid learning rate %g: must not be negative", step.LR)
	case !(step.Beta1 >= 0 && step.Beta1 < 1):
		return 0, shapeError(op, "invalid Beta1 %g: must be in [0, 1)", step.Beta1)
	case !(step.Beta2 >= 0 && step.Beta2 < 1):
		return 0, shapeError(op, "invalid Beta2 %g: must be in [0, 1)", step.Beta2)
	case !(step.Eps >= 0):
		return 0, shapeError(op, "invalid Eps %g: must not be negative", step.Eps)
	case !(step.WeightDecay >= 0):
		return 0, shapeError(op, "invalid WeightDecay %g: must not be negative", step.WeightDecay)
	case step.Step < 1:
		return 0, shapeError(op, "invalid Step %d: steps count from 1", step.Step)
	}
	return n, nil
}

// CheckScale validates the argument of Backend.Scale.
func CheckScale(x Tensor) error {
	return requireDType("Scale", "x", x, F32)
}

// CheckSumSquares validates the arguments of Backend.SumSquares.
func CheckSumSquares(xs []Tensor) error {
	for i, x := range xs {
		if x.DType() != F32 {
			return requireDType("SumSquares", fmt.Sprintf("xs[%d]", i), x, F32)
		}
	}
	return nil
}
