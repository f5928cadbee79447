package cpu

// tileGeneric4x4 is the pure-Go tileFunc for a 4×4 tile. The 16 accumulators
// are separate locals so that the compiler can keep them in registers where
// the architecture has enough of them (arm64 has 32, amd64 only 16).
func tileGeneric4x4(kc int, a, b, c []float32, ldc int, alpha, beta float32) {
	a = a[:4*kc]
	b = b[:4*kc]
	var (
		c00, c01, c02, c03 float32
		c10, c11, c12, c13 float32
		c20, c21, c22, c23 float32
		c30, c31, c32, c33 float32
	)
	for p := 0; p < 4*kc; p += 4 {
		av := a[p : p+4 : p+4]
		bv := b[p : p+4 : p+4]
		a0, a1, a2, a3 := av[0], av[1], av[2], av[3]
		b0, b1, b2, b3 := bv[0], bv[1], bv[2], bv[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}

	storeRow4(c[0*ldc:], c00, c01, c02, c03, alpha, beta)
	storeRow4(c[1*ldc:], c10, c11, c12, c13, alpha, beta)
	storeRow4(c[2*ldc:], c20, c21, c22, c23, alpha, beta)
	storeRow4(c[3*ldc:], c30, c31, c32, c33, alpha, beta)
}

// storeRow4 writes alpha·(x0..x3) + beta·c[0:4] into c[0:4], without reading c
// when beta is zero.
func storeRow4(c []float32, x0, x1, x2, x3, alpha, beta float32) {
	c = c[:4:4]
	if beta == 0 {
		c[0] = alpha * x0
		c[1] = alpha * x1
		c[2] = alpha * x2
		c[3] = alpha * x3
		return
	}
	c[0] = alpha*x0 + beta*c[0]
	c[1] = alpha*x1 + beta*c[1]
	c[2] = alpha*x2 + beta*c[2]
	c[3] = alpha*x3 + beta*c[3]
}
