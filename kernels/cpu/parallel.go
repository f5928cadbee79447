package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// minWorkPerGoroutine is the number of multiply-adds (m·n·k) below which
// another goroutine costs more than it saves. Handing a part to a worker and
// waiting for it takes a few microseconds, while 2^20 multiply-adds take
// about 20 µs on one core at 100 GFLOP/s.
const minWorkPerGoroutine = 1 << 20

// Packing cost weights for partition, in multiply-adds per packed value: an
// estimate of how long packing one value takes compared with one multiply-add
// in the micro-kernel. Copying contiguous runs is cheap, interleaving rows
// (the transposing layouts) is not.
const (
	copyPackCost      = 2
	transposePackCost = 8
)

// minWorkPerSharedPart is the number of multiply-adds per rectangle above
// which a call splits C into twice as many rectangles as goroutines, handed
// out one at a time. When another process slows one core, the goroutines on
// the other cores then take over more of the rectangles instead of waiting.
// The extra rectangles repeat some packing, which on an idle machine costs an
// estimated 2-3% of the time of a 2048×2048×2048 product. Tests lower the
// threshold to cover shared grids with small matrices.
var minWorkPerSharedPart = float64(1 << 29)

// gemmJob is one parallel Sgemm call: C split into a gridRows×gridCols grid of
// rectangles, computed by the calling goroutine and some workers.
type gemmJob struct {
	kernel             *microKernel
	args               gemmArgs
	gridRows, gridCols int
	next               atomic.Int64 // number of rectangles handed out
	done               sync.WaitGroup
}

var gemmJobPool freeList[gemmJob]

// gemmWorkers is the persistent pool of worker goroutines shared by all calls.
// Workers start on first use, up to GOMAXPROCS-1 of them, and never stop.
var gemmWorkers struct {
	mu      sync.Mutex
	started int
	jobs    chan *gemmJob
}

func init() {
	gemmWorkers.jobs = make(chan *gemmJob, 64)
}

// ensureGemmWorkers starts workers until at least n are running.
func ensureGemmWorkers(n int) {
	gemmWorkers.mu.Lock()
	defer gemmWorkers.mu.Unlock()
	for ; gemmWorkers.started < n; gemmWorkers.started++ {
		go runGemmWorker()
	}
}

func runGemmWorker() {
	for job := range gemmWorkers.jobs {
		job.computeParts()
		job.done.Done()
	}
}

// sgemmParallel computes C with kernel, splitting the work across up to
// GOMAXPROCS goroutines. g.k must be at least 1.
func sgemmParallel(kernel *microKernel, g *gemmArgs) {
	goroutines, gridRows, gridCols := planParallel(kernel, g, runtime.GOMAXPROCS(0))
	if gridRows*gridCols == 1 {
		buffers := packBufferPool.get()
		computeBlock(kernel, g, 0, g.m, 0, g.n, buffers)
		packBufferPool.put(buffers)
		return
	}

	job := gemmJobPool.get()
	job.kernel = kernel
	job.args = *g
	job.gridRows, job.gridCols = gridRows, gridCols
	job.next.Store(0)
	ensureGemmWorkers(goroutines - 1)
	job.done.Add(goroutines - 1)
	for range goroutines - 1 {
		gemmWorkers.jobs <- job
	}
	job.computeParts()
	job.done.Wait()

	// Drop the references to the caller's matrices before pooling the job.
	job.args = gemmArgs{}
	job.kernel = nil
	gemmJobPool.put(job)
}

// computeParts computes rectangles of the job until none is left.
func (j *gemmJob) computeParts() {
	buffers := packBufferPool.get()
	for {
		part := int(j.next.Add(1)) - 1
		if part >= j.gridRows*j.gridCols {
			break
		}
		j.computePart(part, buffers)
	}
	packBufferPool.put(buffers)
}

// computePart computes rectangle part of the job's grid, numbered row-major.
// Rectangle edges fall on tile boundaries, so only the last rectangle in each
// direction can have edge tiles.
func (j *gemmJob) computePart(part int, buffers *packBuffers) {
	g := &j.args
	mr, nr := j.kernel.mr, j.kernel.nr
	rowTiles, colTiles := ceilDiv(g.m, mr), ceilDiv(g.n, nr)
	pr, pc := part/j.gridCols, part%j.gridCols
	m0 := min(g.m, pr*rowTiles/j.gridRows*mr)
	m1 := min(g.m, (pr+1)*rowTiles/j.gridRows*mr)
	n0 := min(g.n, pc*colTiles/j.gridCols*nr)
	n1 := min(g.n, (pc+1)*colTiles/j.gridCols*nr)
	if m0 >= m1 || n0 >= n1 {
		return
	}
	computeBlock(j.kernel, g, m0, m1, n0, n1, buffers)
}

// planParallel returns how many goroutines compute g on up to procs CPUs, and
// the grid of rectangles they share. Each goroutine gets at least
// minWorkPerGoroutine multiply-adds, and the grid has twice as many
// rectangles as goroutines when each still gets minWorkPerSharedPart.
func planParallel(kernel *microKernel, g *gemmArgs, procs int) (goroutines, gridRows, gridCols int) {
	work := float64(g.m) * float64(g.n) * float64(g.k)
	goroutines = min(procs, max(1, int(work/minWorkPerGoroutine)))
	parts := goroutines
	if goroutines > 1 && work >= minWorkPerSharedPart*float64(2*goroutines) {
		parts = 2 * goroutines
	}
	gridRows, gridCols = partition(kernel, g, parts)
	return min(goroutines, gridRows*gridCols), gridRows, gridCols
}

// partition chooses the grid (rows × columns of rectangles, at most parts in
// all) that minimizes an estimate of the time of the largest rectangle: its
// multiply-adds plus its packing work, weighted by copyPackCost and
// transposePackCost. Each rectangle packs its own columns of op(B) once, and
// its own rows of op(A) once per panel of bPanelCols columns. So splitting the
// rows of C duplicates the packing of op(B), and splitting the columns
// duplicates the packing of op(A).
func partition(kernel *microKernel, g *gemmArgs, parts int) (gridRows, gridCols int) {
	rowTiles, colTiles := ceilDiv(g.m, kernel.mr), ceilDiv(g.n, kernel.nr)
	aCost, bCost := float64(copyPackCost), float64(copyPackCost)
	if !g.transA {
		aCost = transposePackCost
	}
	if g.transB {
		bCost = transposePackCost
	}

	gridRows, gridCols = 1, 1
	best := -1.0
	for rowsTry := 1; rowsTry <= parts && rowsTry <= rowTiles; rowsTry++ {
		colsTry := min(parts/rowsTry, colTiles)
		rows := ceilDiv(rowTiles, rowsTry) * kernel.mr
		cols := ceilDiv(colTiles, colsTry) * kernel.nr
		panels := ceilDiv(cols, kernel.bPanelCols)
		depth := float64(g.k)
		cost := float64(rows)*float64(cols)*depth +
			aCost*float64(rows*panels)*depth +
			bCost*float64(cols)*depth
		if best < 0 || cost < best {
			best, gridRows, gridCols = cost, rowsTry, colsTry
		}
	}
	return gridRows, gridCols
}
