package cpu

import (
	"sync"
	"sync/atomic"
)

// rangeTask is the body of a parallel loop: run processes items [start, end)
// on the goroutine numbered worker (0 is the caller). Ops keep their task
// structs in the Backend and pass pointers, so a loop allocates nothing.
type rangeTask interface {
	run(worker, start, end int)
}

// taskPool runs parallel loops on a fixed set of goroutines: the caller, as
// worker 0, and size−1 helpers that live until close. Items are handed out in
// chunks of grain through an atomic counter, so a worker that finishes early
// takes more chunks. Which worker runs an item varies between runs, so a
// result must not depend on it; per-worker scratch is fine.
type taskPool struct {
	size int
	wake []chan struct{} // wake[i] starts helper i; wake[0] is unused

	// The loop in progress, written by the caller before it wakes the helpers.
	task  rangeTask
	n     int
	grain int
	next  atomic.Int64
	done  sync.WaitGroup
}

func newTaskPool(size int) *taskPool {
	p := &taskPool{size: max(1, size), wake: make([]chan struct{}, max(1, size))}
	for i := 1; i < p.size; i++ {
		p.wake[i] = make(chan struct{})
		go p.help(i)
	}
	return p
}

func (p *taskPool) help(worker int) {
	for range p.wake[worker] {
		p.drain(worker)
		p.done.Done()
	}
}

// run calls task.run over [0, n) in chunks of grain items and returns when all
// chunks are done.
func (p *taskPool) run(task rangeTask, n, grain int) {
	if n <= 0 {
		return
	}
	grain = max(1, grain)
	chunks := (n + grain - 1) / grain
	helpers := min(p.size, chunks) - 1
	if helpers == 0 {
		task.run(0, 0, n)
		return
	}
	p.task, p.n, p.grain = task, n, grain
	p.next.Store(0)
	p.done.Add(helpers)
	for i := 1; i <= helpers; i++ {
		p.wake[i] <- struct{}{}
	}
	p.drain(0)
	p.done.Wait()
	p.task = nil
}

func (p *taskPool) drain(worker int) {
	for {
		start := int(p.next.Add(int64(p.grain))) - p.grain
		if start >= p.n {
			return
		}
		p.task.run(worker, start, min(start+p.grain, p.n))
	}
}

// close stops the helpers. Later loops run on the caller alone.
func (p *taskPool) close() {
	for i := 1; i < p.size; i++ {
		close(p.wake[i])
	}
	p.size = 1
}
