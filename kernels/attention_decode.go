package kernels

// DecodeDims holds the sizes of Backend.AttentionDecode: Tq new queries per
// row and a cache of S positions, of which Length are filled.
type DecodeDims struct{ B, Tq, S, NH, NKV, HS, Length int }

// CheckAttentionDecode validates the arguments of Backend.AttentionDecode.
func CheckAttentionDecode(out, q, kCache, vCache Tensor, length int) (DecodeDims, error) {
	const op = "AttentionDecode"
	if err := firstError(
		requireDType(op, "q", q, F32),
		requireDType(op, "kCache", kCache, F32),
	); err != nil {
		return DecodeDims{}, err
	}
	if q.Rank() != 4 {
		return DecodeDims{}, shapeError(op, "q is %s, want 4 dimensions (B, Tq, NH, HS)", q)
	}
	if kCache.Rank() != 4 {
		return DecodeDims{}, shapeError(op, "kCache is %s, want 4 dimensions (B, S, NKV, HS)", kCache)
	}
	d := DecodeDims{
		B: q.Dim(0), Tq: q.Dim(1), NH: q.Dim(2), HS: q.Dim(3),
		S: kCache.Dim(1), NKV: kCache.Dim(2), Length: length,
	}
	if err := firstError(
		requireDims(op, "out", out, "the shape of q", d.B, d.Tq, d.NH, d.HS),
		requireDims(op, "kCache", kCache, "(B, S, NKV, HS) with B and HS of q", d.B, d.S, d.NKV, d.HS),
		requireDims(op, "vCache", vCache, "the shape of kCache", d.B, d.S, d.NKV, d.HS),
	); err != nil {
		return d, err
	}
	if d.NKV == 0 || d.NH%d.NKV != 0 {
		return d, shapeError(op, "q has %d heads and kCache has %d, but the query heads must be a multiple of the key/value heads", d.NH, d.NKV)
	}
	if d.Tq < 1 || length < d.Tq || length > d.S {
		return d, shapeError(op, "length %d with %d new queries and a cache of %d positions: want 1 ≤ queries ≤ length ≤ cache positions", length, d.Tq, d.S)
	}
	return d, firstError(
		forbidOverlap(op, "out", out, "q", q),
		forbidOverlap(op, "out", out, "kCache", kCache),
		forbidOverlap(op, "out", out, "vCache", vCache),
	)
}
