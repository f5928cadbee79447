package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/cpu"
)

// transposeCases lists the four (transA, transB) combinations.
var transposeCases = []struct {
	name           string
	transA, transB bool
}{
	{"NN", false, false},
	{"NT", false, true},
	{"TN", true, false},
	{"TT", true, true},
}

// scalarCases lists the (alpha, beta) pairs that take different paths: beta 0
// (C not read), beta 1 (accumulate), general values, and alpha 0 (A and B not
// read).
var scalarCases = []struct{ alpha, beta float32 }{
	{1, 0},
	{1, 1},
	{-1.5, 0},
	{0.75, -0.5},
	{0, 2},
	{0, 0},
}

// forEachKernel runs f as a subtest once per kernel that this CPU supports.
func forEachKernel(t *testing.T, f func(t *testing.T, kernel *microKernel)) {
	for _, kernel := range supportedKernels {
		t.Run(kernel.name, func(t *testing.T) {
			useKernel(t, kernel)
			f(t, kernel)
		})
	}
}

func runCase(t *testing.T, kernel *microKernel, tc *gemmCase) {
	t.Helper()
	want, scale := tc.reference()
	tc.run()
	checkResult(t, kernel, tc, want, scale)
}

func TestKernelsDetected(t *testing.T) {
	names := kernelNames()
	t.Logf("supported kernels: %v, active: %s", names, Kernel())
	if names[len(names)-1] != "generic" {
		t.Errorf("last kernel is %q, want the generic fallback", names[len(names)-1])
	}
	if runtime.GOARCH != "amd64" {
		return
	}
	if cpu.X86.HasAVX512F && !slices.Contains(names, "avx512") {
		t.Error("CPU has AVX512F but the avx512 kernel is not listed")
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && !slices.Contains(names, "avx2") {
		t.Error("CPU has AVX2 and FMA but the avx2 kernel is not listed")
	}
	if !cpu.X86.HasAVX512F {
		t.Log("CPU lacks AVX512F: the avx512 kernel is not tested on this machine")
	}
}

func TestSelectKernelForced(t *testing.T) {
	for _, name := range kernelNames() {
		if got := selectKernel(name).name; got != name {
			t.Errorf("selectKernel(%q) = %q", name, got)
		}
	}
	if got := selectKernel("").name; got != supportedKernels[0].name {
		t.Errorf("selectKernel(\"\") = %q, want the fastest, %q", got, supportedKernels[0].name)
	}
	defer func() {
		msg := fmt.Sprint(recover())
		if !strings.Contains(msg, kernelEnv) {
			t.Errorf("selectKernel(\"sse9\") panicked with %q, want a message naming %s", msg, kernelEnv)
		}
	}()
	selectKernel("sse9")
}

func TestSgemmSmallShapes(t *testing.T) {
	shapes := [][3]int{
		{0, 0, 0}, {0, 5, 3}, {5, 0, 3}, {5, 3, 0},
		{1, 1, 1}, {1, 7, 1}, {7, 1, 1}, {1, 1, 7},
		{2, 3, 5}, {13, 31, 17}, {37, 41, 43},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	forEachKernel(t, func(t *testing.T, kernel *microKernel) {
		for _, tr := range transposeCases {
			for _, sc := range scalarCases {
				for _, s := range shapes {
					name := fmt.Sprintf("%s/alpha=%g,beta=%g/%dx%dx%d", tr.name, sc.alpha, sc.beta, s[0], s[1], s[2])
					tc := newGemmCase(rng, tr.transA, tr.transB, s[0], s[1], s[2], 0, 0, 0, sc.alpha, sc.beta)
					t.Run(name, func(t *testing.T) { runCase(t, kernel, tc) })
				}
			}
		}
	})
}

// TestSgemmBlockEdges uses shapes that fill whole tiles, miss them by one,
// and cross the kc, bBlockCols and aBlockRows block boundaries of the kernel.
func TestSgemmBlockEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	forEachKernel(t, func(t *testing.T, kernel *microKernel) {
		mr, nr, kc := kernel.mr, kernel.nr, kernel.kc
		shapes := [][3]int{
			{mr, nr, kc},
			{mr + 1, nr + 1, kc + 1},
			{mr - 1, nr - 1, kc - 1},
			{2*mr + 1, 3*nr - 1, 2*kc + 3},
			{3, kernel.bBlockCols + nr + 5, 7},
			{kernel.aBlockRows + 5, 3, 5},
		}
		for _, tr := range transposeCases {
			for _, s := range shapes {
				tc := newGemmCase(rng, tr.transA, tr.transB, s[0], s[1], s[2], 0, 0, 0, 1.25, 0.5)
				t.Run(fmt.Sprintf("%s/%dx%dx%d", tr.name, s[0], s[1], s[2]), func(t *testing.T) { runCase(t, kernel, tc) })
			}
		}
	})
}

func TestSgemmStrides(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	forEachKernel(t, func(t *testing.T, kernel *microKernel) {
		for _, tr := range transposeCases {
			for _, pads := range [][3]int{{1, 0, 0}, {0, 3, 0}, {0, 0, 5}, {7, 11, 13}} {
				tc := newGemmCase(rng, tr.transA, tr.transB, 29, 53, 67, pads[0], pads[1], pads[2], -0.5, 1)
				name := fmt.Sprintf("%s/pad=%d,%d,%d", tr.name, pads[0], pads[1], pads[2])
				t.Run(name, func(t *testing.T) { runCase(t, kernel, tc) })
			}
		}
	})
}

// TestSgemmParallel uses products large enough to be split across
// goroutines, with GOMAXPROCS 2 and 4 for row, column and 2×2 splits, and
// with grids of one rectangle per goroutine and of two. The float64
// reference is computed once per shape, because under the race detector it
// costs more than the products.
func TestSgemmParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	savedSharedWork := minWorkPerSharedPart
	t.Cleanup(func() { minWorkPerSharedPart = savedSharedWork })
	for _, tr := range transposeCases {
		for _, s := range [][3]int{{203, 97, 211}, {61, 389, 177}, {170, 170, 150}} {
			tc := newGemmCase(rng, tr.transA, tr.transB, s[0], s[1], s[2], 2, 1, 3, 1, 1)
			want, scale := tc.reference()
			for _, sharedWork := range []float64{savedSharedWork, 1 << 18} {
				for _, procs := range []int{2, 4} {
					for _, kernel := range supportedKernels {
						minWorkPerSharedPart = sharedWork
						g := gemmArgs{transA: tc.transA, transB: tc.transB, m: tc.m, n: tc.n, k: tc.k}
						goroutines, rows, cols := planParallel(kernel, &g, procs)
						name := fmt.Sprintf("%s/%dx%dx%d/procs=%d/%s/goroutines=%d,grid=%dx%d",
							tr.name, s[0], s[1], s[2], procs, kernel.name, goroutines, rows, cols)
						t.Run(name, func(t *testing.T) {
							saved := runtime.GOMAXPROCS(procs)
							defer runtime.GOMAXPROCS(saved)
							run := *tc
							run.c = slices.Clone(tc.c)
							useKernelFor(kernel, run.run)
							checkResult(t, kernel, &run, want, scale)
						})
					}
				}
			}
		}
	}
}

func TestPlanParallel(t *testing.T) {
	kernel := &microKernel{name: "test", mr: 12, nr: 32, kc: 384, aBlockRows: 1536, bPanelCols: 3840, bBlockCols: 480}
	cases := []struct {
		m, n, k, procs                     int
		wantGoroutines, wantRows, wantCols int
	}{
		{64, 64, 64, 2, 1, 1, 1},       // 2^18 multiply-adds: one goroutine
		{128, 128, 128, 4, 2, 1, 2},    // 2^21: two goroutines at most, and 11 row tiles would split unevenly
		{1024, 1024, 1024, 2, 2, 2, 1}, // 2^29 per rectangle is not enough to split further
		{2048, 2048, 2048, 2, 2, 4, 1}, // 2^31 per rectangle: twice as many rectangles
		{12, 32, 1 << 20, 2, 1, 1, 1},  // one tile: nothing to split
	}
	for _, tc := range cases {
		g := gemmArgs{m: tc.m, n: tc.n, k: tc.k}
		goroutines, rows, cols := planParallel(kernel, &g, tc.procs)
		if goroutines != tc.wantGoroutines || rows != tc.wantRows || cols != tc.wantCols {
			t.Errorf("planParallel(%dx%dx%d, %d procs) = %d goroutines on %dx%d, want %d on %dx%d",
				tc.m, tc.n, tc.k, tc.procs, goroutines, rows, cols, tc.wantGoroutines, tc.wantRows, tc.wantCols)
		}
	}
}

// TestSgemmBetaZeroIgnoresNaN checks the BLAS rule that beta = 0 overwrites C
// without reading it.
func TestSgemmBetaZeroIgnoresNaN(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	forEachKernel(t, func(t *testing.T, kernel *microKernel) {
		for _, tr := range transposeCases {
			for _, alpha := range []float32{1, 0} {
				tc := newGemmCase(rng, tr.transA, tr.transB, 2*kernel.mr+3, 2*kernel.nr+5, 19, 0, 0, 0, alpha, 0)
				for i := range tc.c {
					tc.c[i] = float32(math.NaN())
				}
				tc.run()
				for i, v := range tc.c {
					if i%tc.ldc < tc.n && math.IsNaN(float64(v)) {
						t.Fatalf("%s alpha=%g: C[%d][%d] is NaN after a call with beta = 0", tr.name, alpha, i/tc.ldc, i%tc.ldc)
					}
				}
			}
		}
	})
}

// TestSgemmAlphaZeroSkipsInputs checks that alpha = 0 and k = 0 read neither
// A nor B, so NaN in them does not reach C.
func TestSgemmAlphaZeroSkipsInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, k := range []int{0, 9} {
		alpha := float32(0)
		if k == 0 {
			alpha = 3
		}
		tc := newGemmCase(rng, false, false, 5, 7, k, 0, 0, 0, alpha, 0.5)
		for i := range tc.a {
			tc.a[i] = float32(math.NaN())
		}
		for i := range tc.b {
			tc.b[i] = float32(math.Inf(1))
		}
		before := slices.Clone(tc.c)
		tc.run()
		for i, v := range tc.c {
			if i%tc.ldc < tc.n && v != 0.5*before[i] {
				t.Errorf("k=%d alpha=%g: C[%d][%d] = %g, want beta·C = %g", k, alpha, i/tc.ldc, i%tc.ldc, v, 0.5*before[i])
			}
		}
	}
}

// TestSgemmKernelsAgree compares each assembly kernel with the generic Go
// kernel on the same inputs. Each result is within roundingTolerance of the
// exact product, so the two differ by at most the sum of their bounds.
func TestSgemmKernelsAgree(t *testing.T) {
	if len(supportedKernels) == 1 {
		t.Skip("only the generic kernel runs on this CPU")
	}
	rng := rand.New(rand.NewPCG(13, 14))
	for _, kernel := range supportedKernels[:len(supportedKernels)-1] {
		for _, tr := range transposeCases {
			for _, s := range [][3]int{{1, 1, 1}, {35, 67, 131}, {64, 96, 400}} {
				tc := newGemmCase(rng, tr.transA, tr.transB, s[0], s[1], s[2], 1, 2, 3, 0.5, 1)
				_, scale := tc.reference()
				fallback := *tc
				fallback.c = slices.Clone(tc.c)

				useKernelFor(kernel, tc.run)
				useKernelFor(genericKernel, fallback.run)

				tol := roundingTolerance(kernel, tc.k) + roundingTolerance(genericKernel, tc.k)
				for i := range tc.m {
					for j := range tc.n {
						got, want := tc.c[i*tc.ldc+j], fallback.c[i*tc.ldc+j]
						if diff := math.Abs(float64(got - want)); diff > tol*scale[i*tc.n+j] {
							t.Fatalf("%s %s %v: C[%d][%d] = %g, generic gives %g, difference %.3g exceeds %.3g",
								kernel.name, tr.name, s, i, j, got, want, diff, tol*scale[i*tc.n+j])
						}
					}
				}
			}
		}
	}
}

// useKernelFor runs f with kernel active.
func useKernelFor(kernel *microKernel, f func()) {
	saved := activeKernel
	activeKernel = kernel
	defer func() { activeKernel = saved }()
	f()
}

// TestSgemmConcurrentCalls runs several parallel-sized products at once, so
// that the race detector checks the shared worker pool and buffer pools.
func TestSgemmConcurrentCalls(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	cases := make([]*gemmCase, 6)
	wants := make([][]float64, len(cases))
	scales := make([][]float64, len(cases))
	for i := range cases {
		tr := transposeCases[i%len(transposeCases)]
		cases[i] = newGemmCase(rng, tr.transA, tr.transB, 120+i, 130, 140, 0, 0, 0, 1, 0.5)
		wants[i], scales[i] = cases[i].reference()
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Go(tc.run)
	}
	wg.Wait()
	for i, tc := range cases {
		checkResult(t, activeKernel, tc, wants[i], scales[i])
	}
}

func TestSgemmNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	rng := rand.New(rand.NewPCG(17, 18))
	for _, s := range [][3]int{{16, 16, 16}, {256, 256, 256}} {
		tc := newGemmCase(rng, false, true, s[0], s[1], s[2], 0, 0, 0, 1, 1)
		tc.run() // fills the pools and starts the workers
		if allocs := testing.AllocsPerRun(20, tc.run); allocs != 0 {
			t.Errorf("%v: %.1f allocations per call, want 0", s, allocs)
		}
	}
}

func TestSgemmInvalidArguments(t *testing.T) {
	a := make([]float32, 6)
	b := make([]float32, 6)
	c := make([]float32, 4)
	cases := []struct {
		name, message string
		call          func()
	}{
		{"negative m", "invalid m -1", func() { Sgemm(false, false, -1, 2, 3, 1, a, 3, b, 2, 0, c, 2) }},
		{"negative k", "invalid k -1", func() { Sgemm(false, false, 2, 2, -1, 1, a, 3, b, 2, 0, c, 2) }},
		{"lda below k", "invalid lda 2", func() { Sgemm(false, false, 2, 2, 3, 1, a, 2, b, 2, 0, c, 2) }},
		{"lda below m when transposed", "invalid lda 1", func() { Sgemm(true, false, 2, 2, 3, 1, a, 1, b, 2, 0, c, 2) }},
		{"ldb below n", "invalid ldb 1", func() { Sgemm(false, false, 2, 2, 3, 1, a, 3, b, 1, 0, c, 2) }},
		{"ldc below n", "invalid ldc 1", func() { Sgemm(false, false, 2, 2, 3, 1, a, 3, b, 2, 0, c, 1) }},
		{"zero stride with empty matrix", "invalid ldc 0", func() { Sgemm(false, false, 0, 0, 0, 1, nil, 1, nil, 1, 0, nil, 0) }},
		{"short a", "a has length 5", func() { Sgemm(false, false, 2, 2, 3, 1, a[:5], 3, b, 2, 0, c, 2) }},
		{"short b", "b has length 5", func() { Sgemm(false, false, 2, 2, 3, 1, a, 3, b[:5], 2, 0, c, 2) }},
		{"short c", "c has length 3", func() { Sgemm(false, false, 2, 2, 3, 1, a, 3, b, 2, 0, c[:3], 2) }},
		{"short c with alpha 0", "c has length 3", func() { Sgemm(false, false, 2, 2, 3, 0, a, 3, b, 2, 0, c[:3], 2) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, tc.message) {
					t.Errorf("panic message %q does not contain %q", msg, tc.message)
				}
			}()
			tc.call()
		})
	}
}

func TestPartitionGrid(t *testing.T) {
	kernel := &microKernel{name: "test", mr: 12, nr: 32, kc: 384, aBlockRows: 1536, bPanelCols: 3840, bBlockCols: 480}
	cases := []struct {
		m, n, k, threads   int
		transA, transB     bool
		wantRows, wantCols int
	}{
		{1024, 1024, 1024, 1, false, false, 1, 1},
		{12, 32, 1000, 2, false, false, 1, 1},     // one tile: nothing to split
		{12, 4096, 256, 2, false, false, 1, 2},    // one row of tiles: split the columns
		{4096, 32, 256, 2, false, false, 2, 1},    // one column of tiles: split the rows
		{1024, 1024, 1024, 2, false, false, 2, 1}, // interleaving A costs more than copying B
		{1024, 1024, 1024, 2, true, true, 1, 2},   // interleaving B costs more than copying A
		{1024, 1024, 1024, 4, false, false, 2, 2},
	}
	for _, tc := range cases {
		g := gemmArgs{m: tc.m, n: tc.n, k: tc.k, transA: tc.transA, transB: tc.transB}
		rows, cols := partition(kernel, &g, tc.threads)
		if rows != tc.wantRows || cols != tc.wantCols {
			t.Errorf("partition(%dx%dx%d, transA=%v, transB=%v, %d threads) = %dx%d, want %dx%d",
				tc.m, tc.n, tc.k, tc.transA, tc.transB, tc.threads, rows, cols, tc.wantRows, tc.wantCols)
		}
	}
}

func TestBalancedBlock(t *testing.T) {
	cases := []struct{ total, maxBlock, unit, want int }{
		{1, 480, 32, 32},
		{480, 480, 32, 480},
		{500, 480, 32, 256},
		{512, 480, 32, 256},
		{1024, 1536, 12, 1032},
		{385, 384, 1, 193},
	}
	for _, tc := range cases {
		if got := balancedBlock(tc.total, tc.maxBlock, tc.unit); got != tc.want {
			t.Errorf("balancedBlock(%d, %d, %d) = %d, want %d", tc.total, tc.maxBlock, tc.unit, got, tc.want)
		}
	}
}

func FuzzSgemm(f *testing.F) {
	f.Add(uint8(1), uint8(1), uint8(1), uint8(0), uint8(0), uint64(1))
	f.Add(uint8(13), uint8(33), uint8(7), uint8(3), uint8(0x15), uint64(2))
	f.Add(uint8(25), uint8(17), uint8(200), uint8(1), uint8(0x2a), uint64(3))
	f.Add(uint8(0), uint8(9), uint8(4), uint8(2), uint8(0x3f), uint64(4))
	f.Fuzz(func(t *testing.T, m, n, k, trans, pads uint8, seed uint64) {
		// m and n up to 63 cover several tiles of every kernel; k up to 255
		// keeps one call short under the race detector.
		mm, nn, kk := int(m%64), int(n%64), int(k)
		padA, padB, padC := int(pads&3), int(pads>>2&3), int(pads>>4&3)
		rng := rand.New(rand.NewPCG(seed, 99))
		alphas := []float32{1, -2, 0.5, 0}
		betas := []float32{0, 1, -0.25, 3}
		alpha, beta := alphas[rng.IntN(len(alphas))], betas[rng.IntN(len(betas))]
		for _, kernel := range supportedKernels {
			tc := newGemmCase(rng, trans&1 != 0, trans&2 != 0, mm, nn, kk, padA, padB, padC, alpha, beta)
			want, scale := tc.reference()
			useKernelFor(kernel, tc.run)
			checkResult(t, kernel, tc, want, scale)
		}
	})
}
