package cpu

// packA copies the rows×depth block of op(A) that starts at row i0 and column
// p0 into dst as micro-panels of mr rows. Micro-panel q holds rows
// q·mr … q·mr+mr-1 of the block, stored k step by k step: mr values for
// column p0, then mr values for column p0+1, and so on. Rows past the end of
// the block are filled with zeros.
func packA(dst []float32, transA bool, a []float32, lda, i0, rows, p0, depth, mr int) {
	if transA {
		packContiguousSteps(dst, a, (p0*lda)+i0, lda, depth, rows, mr)
		return
	}
	packInterleavedRuns(dst, a, i0*lda+p0, lda, rows, depth, mr)
}

// packB copies the depth×cols block of op(B) that starts at row p0 and column
// j0 into dst as micro-panels of nr columns. Micro-panel q holds columns
// q·nr … q·nr+nr-1 of the block, stored row by row: nr values for row p0, then
// nr values for row p0+1, and so on. Columns past the end of the block are
// filled with zeros.
func packB(dst []float32, transB bool, b []float32, ldb, p0, depth, j0, cols, nr int) {
	if !transB {
		packContiguousSteps(dst, b, p0*ldb+j0, ldb, depth, cols, nr)
		return
	}
	packInterleavedRuns(dst, b, j0*ldb+p0, ldb, cols, depth, nr)
}

// packContiguousSteps packs a matrix whose k steps are contiguous in src:
// step p is the run src[start+p*ld : start+p*ld+width]. Each run is split
// into micro-panels of unit values, so that value w of step p goes to
// dst[(w/unit)*depth*unit + p*unit + w%unit], and the last micro-panel is
// padded with zeros. Reading a whole run before the next keeps the reads of
// src sequential.
func packContiguousSteps(dst, src []float32, start, ld, depth, width, unit int) {
	full := width / unit * unit
	for p := range depth {
		run := src[start+p*ld:][:width]
		out := dst[p*unit:]
		switch unit {
		case 32:
			for w := 0; w < full; w += 32 {
				*(*[32]float32)(out[w*depth:]) = *(*[32]float32)(run[w:])
			}
		case 12:
			for w := 0; w < full; w += 12 {
				*(*[12]float32)(out[w*depth:]) = *(*[12]float32)(run[w:])
			}
		default:
			for w := 0; w < full; w += unit {
				copy(out[w*depth:w*depth+unit], run[w:w+unit])
			}
		}
		if full < width {
			step := out[full*depth : full*depth+unit]
			copy(step, run[full:])
			clear(step[width-full:])
		}
	}
}

// packInterleavedRuns packs a matrix whose k steps are strided in src: line
// w (a row of A or a column of B) is the contiguous run
// src[start+w*ld : start+w*ld+depth]. Value p of line w goes to
// dst[(w/unit)*depth*unit + p*unit + w%unit], so the unit lines of a
// micro-panel are interleaved, and lines past width are zeros.
func packInterleavedRuns(dst, src []float32, start, ld, width, depth, unit int) {
	for w0 := 0; w0 < width; w0 += unit {
		panel := dst[w0*depth : (w0+unit)*depth]
		lines := min(unit, width-w0)
		switch {
		case unit == 12 && lines == 12:
			interleave12(panel, src, start+w0*ld, ld, depth)
			continue
		case unit == 6 && lines == 6:
			interleave6(panel, src, start+w0*ld, ld, depth)
			continue
		case unit%16 == 0 && lines == unit:
			for half := 0; half < unit; half += 16 {
				interleave16(panel[half:], src, start+(w0+half)*ld, ld, depth, unit)
			}
			continue
		}
		for l := range lines {
			run := src[start+(w0+l)*ld:][:depth]
			for p, v := range run {
				panel[p*unit+l] = v
			}
		}
		for l := lines; l < unit; l++ {
			for p := range depth {
				panel[p*unit+l] = 0
			}
		}
	}
}

// interleave12 interleaves 12 runs of src, each depth long, starting at
// src[start] with stride ld: panel[p*12+l] = src[start+l*ld+p].
func interleave12(panel, src []float32, start, ld, depth int) {
	r0 := src[start+0*ld:][:depth]
	r1 := src[start+1*ld:][:depth]
	r2 := src[start+2*ld:][:depth]
	r3 := src[start+3*ld:][:depth]
	r4 := src[start+4*ld:][:depth]
	r5 := src[start+5*ld:][:depth]
	r6 := src[start+6*ld:][:depth]
	r7 := src[start+7*ld:][:depth]
	r8 := src[start+8*ld:][:depth]
	r9 := src[start+9*ld:][:depth]
	r10 := src[start+10*ld:][:depth]
	r11 := src[start+11*ld:][:depth]
	panel = panel[:12*depth]
	for p := range depth {
		step := panel[p*12 : p*12+12 : p*12+12]
		step[0] = r0[p]
		step[1] = r1[p]
		step[2] = r2[p]
		step[3] = r3[p]
		step[4] = r4[p]
		step[5] = r5[p]
		step[6] = r6[p]
		step[7] = r7[p]
		step[8] = r8[p]
		step[9] = r9[p]
		step[10] = r10[p]
		step[11] = r11[p]
	}
}

// interleave6 interleaves 6 runs of src, each depth long, starting at
// src[start] with stride ld: panel[p*6+l] = src[start+l*ld+p].
func interleave6(panel, src []float32, start, ld, depth int) {
	r0 := src[start+0*ld:][:depth]
	r1 := src[start+1*ld:][:depth]
	r2 := src[start+2*ld:][:depth]
	r3 := src[start+3*ld:][:depth]
	r4 := src[start+4*ld:][:depth]
	r5 := src[start+5*ld:][:depth]
	panel = panel[:6*depth]
	for p := range depth {
		step := panel[p*6 : p*6+6 : p*6+6]
		step[0] = r0[p]
		step[1] = r1[p]
		step[2] = r2[p]
		step[3] = r3[p]
		step[4] = r4[p]
		step[5] = r5[p]
	}
}

// interleave16 interleaves 16 runs of src, each depth long, starting at
// src[start] with stride ld, into panel with a k step of stride values:
// panel[p*stride+l] = src[start+l*ld+p] for l < 16.
func interleave16(panel, src []float32, start, ld, depth, stride int) {
	r0 := src[start+0*ld:][:depth]
	r1 := src[start+1*ld:][:depth]
	r2 := src[start+2*ld:][:depth]
	r3 := src[start+3*ld:][:depth]
	r4 := src[start+4*ld:][:depth]
	r5 := src[start+5*ld:][:depth]
	r6 := src[start+6*ld:][:depth]
	r7 := src[start+7*ld:][:depth]
	r8 := src[start+8*ld:][:depth]
	r9 := src[start+9*ld:][:depth]
	r10 := src[start+10*ld:][:depth]
	r11 := src[start+11*ld:][:depth]
	r12 := src[start+12*ld:][:depth]
	r13 := src[start+13*ld:][:depth]
	r14 := src[start+14*ld:][:depth]
	r15 := src[start+15*ld:][:depth]
	for p := range depth {
		step := panel[p*stride : p*stride+16 : p*stride+16]
		step[0] = r0[p]
		step[1] = r1[p]
		step[2] = r2[p]
		step[3] = r3[p]
		step[4] = r4[p]
		step[5] = r5[p]
		step[6] = r6[p]
		step[7] = r7[p]
		step[8] = r8[p]
		step[9] = r9[p]
		step[10] = r10[p]
		step[11] = r11[p]
		step[12] = r12[p]
		step[13] = r13[p]
		step[14] = r14[p]
		step[15] = r15[p]
	}
}
