package cpu

// gemmArgs holds the operands of one Sgemm call, already validated.
type gemmArgs struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	c              []float32
	ldc            int
}

// computeBlock computes rows [m0, m1) and columns [n0, n1) of
// C = alpha·op(A)·op(B) + beta·C with kernel, packing into buffers.
// k must be at least 1.
func computeBlock(kernel *microKernel, g *gemmArgs, m0, m1, n0, n1 int, buffers *packBuffers) {
	mr, nr := kernel.mr, kernel.nr
	panelCols := balancedBlock(n1-n0, kernel.bPanelCols, nr)
	blockRows := balancedBlock(m1-m0, kernel.aBlockRows, mr)
	blockDepth := balancedBlock(g.k, kernel.kc, 1)
	buffers.reserve(blockRows*blockDepth, blockDepth*panelCols, mr*nr)

	for jp := n0; jp < n1; jp += panelCols {
		cols := min(panelCols, n1-jp)
		blockCols := balancedBlock(cols, kernel.bBlockCols, nr)
		for pc := 0; pc < g.k; pc += blockDepth {
			depth := min(blockDepth, g.k-pc)
			// Only the first pass over k scales C by beta; later passes add.
			beta := g.beta
			if pc > 0 {
				beta = 1
			}
			packB(buffers.b, g.transB, g.b, g.ldb, pc, depth, jp, cols, nr)
			for ic := m0; ic < m1; ic += blockRows {
				rows := min(blockRows, m1-ic)
				packA(buffers.a, g.transA, g.a, g.lda, ic, rows, pc, depth, mr)
				for jc := 0; jc < cols; jc += blockCols {
					t := tileBlock{ic: ic, rows: rows, jp: jp, jc: jc, cols: min(blockCols, cols-jc), depth: depth}
					computeTiles(kernel, g, buffers, t, beta)
				}
			}
		}
	}
}

// tileBlock locates one block of C and its packed operands: rows
// [ic, ic+rows) of C against the packed A block, and columns
// [jp+jc, jp+jc+cols) of C against columns [jc, jc+cols) of the packed B
// panel that starts at column jp.
type tileBlock struct {
	ic, rows     int
	jp, jc, cols int
	depth        int
}

// computeTiles runs the micro-kernel over every tile of block t.
func computeTiles(kernel *microKernel, g *gemmArgs, buffers *packBuffers, t tileBlock, beta float32) {
	mr, nr, depth := kernel.mr, kernel.nr, t.depth
	for ir := 0; ir < t.rows; ir += mr {
		aPanel := buffers.a[ir*depth : (ir+mr)*depth]
		height := min(mr, t.rows-ir)
		for jr := t.jc; jr < t.jc+t.cols; jr += nr {
			bPanel := buffers.b[jr*depth : (jr+nr)*depth]
			width := min(nr, t.jc+t.cols-jr)
			c := g.c[(t.ic+ir)*g.ldc+t.jp+jr:]
			if height == mr && width == nr {
				kernel.tile(depth, aPanel, bPanel, c, g.ldc, g.alpha, beta)
				continue
			}
			// Edge tile: the padded rows and columns of the result must not
			// reach C, so compute the whole tile into scratch and merge.
			kernel.tile(depth, aPanel, bPanel, buffers.tile, nr, 1, 0)
			mergeTile(c, g.ldc, buffers.tile, nr, height, width, g.alpha, beta)
		}
	}
}

// mergeTile writes alpha·t + beta·c for the top-left height×width corner of
// the tile t (row stride ldt) into c (row stride ldc), without reading c when
// beta is zero.
func mergeTile(c []float32, ldc int, t []float32, ldt, height, width int, alpha, beta float32) {
	for i := range height {
		dst := c[i*ldc : i*ldc+width]
		src := t[i*ldt : i*ldt+width]
		if beta == 0 {
			for j, v := range src {
				dst[j] = alpha * v
			}
			continue
		}
		for j, v := range src {
			dst[j] = alpha*v + beta*dst[j]
		}
	}
}

// balancedBlock returns the block size, a multiple of unit, that splits total
// into as few blocks of at most maxBlock as possible with sizes as even as
// possible. Without balancing, 500 columns with blocks of 480 would leave a
// 20-column block that reuses its packed A micro-panel badly.
func balancedBlock(total, maxBlock, unit int) int {
	blocks := ceilDiv(total, maxBlock)
	return min(maxBlock, roundUp(ceilDiv(total, blocks), unit))
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func roundUp(a, unit int) int { return ceilDiv(a, unit) * unit }
