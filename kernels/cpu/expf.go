package cpu

import "math"

// expf returns e^x in float32 with a relative error below 2⁻²², two units in
// the last place (TestExpfAccuracy), faster than float32(math.Exp(float64(x)))
// (BenchmarkExpf). It reduces x = k·ln2 + r with |r| ≤ ln2/2, evaluates the
// polynomial of Cephes' expf for e^r and multiplies by 2^k. Results below the
// smallest normal float32 (x < −87.33) are flushed to 0, which its callers,
// softmax and sigmoid, tolerate. x > 88.72 gives +Inf, and NaN gives NaN.
func expf(x float32) float32 {
	const (
		maxArg = 88.72283
		minArg = -87.33654
		log2e  = 1.44269504088896341
		// ln2 split into a part exact in float32 and the rest, so that
		// x − k·ln2 is computed without cancellation error.
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
	)
	switch {
	case x > maxArg:
		return float32(math.Inf(1))
	case x < minArg:
		return 0
	case x != x:
		return x
	}

	// Adding 1.5·2²³ rounds x·log2e to the nearest integer k, which then
	// sits in the low mantissa bits (|k| < 2²²).
	const roundingShift = 12582912
	shifted := x*log2e + roundingShift
	k := int32(math.Float32bits(shifted)) - 0x4b400000
	kf := shifted - roundingShift

	r := x - kf*ln2Hi
	r -= kf * ln2Lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1

	// k is in [−126, 128] here. 2^k for k = 128 overflows the exponent
	// field, so that case scales in two steps.
	if k > 127 {
		return y * 2 * math.Float32frombits(uint32(k-1+127)<<23)
	}
	return y * math.Float32frombits(uint32(k+127)<<23)
}
