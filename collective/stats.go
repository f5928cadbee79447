package collective

import (
	"sync/atomic"
	"time"
)

// OpStats are the counters of one operation. Byte counts are payload bytes on the
// wire, without frame headers.
type OpStats struct {
	// Bytes is the size S of the buffer as float32, in bytes.
	Bytes int64
	// BytesSent and BytesRecv are this rank's payload bytes. For the ring all-reduce
	// each is 2(N-1)/N · S in fp32 and half that in bf16.
	BytesSent int64
	BytesRecv int64
	// Duration is the wall time from start to finish on this rank.
	Duration time.Duration
	// WorldSize is N.
	WorldSize int
}

// AlgBW returns the algorithm bandwidth S / time, in bytes per second.
func (s OpStats) AlgBW() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Duration.Seconds()
}

// BusBW returns algbw · 2(N-1)/N, the bus bandwidth as nccl-tests define it for
// all-reduce: the rate each link would need to finish in the same time.
func (s OpStats) BusBW() float64 {
	if s.WorldSize < 2 {
		return 0
	}
	n := float64(s.WorldSize)
	return s.AlgBW() * 2 * (n - 1) / n
}

// Totals are a Communicator's counters over all operations so far.
type Totals struct {
	Ops       int64
	Bytes     int64
	BytesSent int64
	BytesRecv int64
	Busy      time.Duration // sum of operation durations; overlapping operations add up
}

// AlgBW returns Bytes / Busy in bytes per second: the mean algorithm bandwidth of the
// operations so far, counting overlapping operations once each.
func (t Totals) AlgBW() float64 {
	if t.Busy <= 0 {
		return 0
	}
	return float64(t.Bytes) / t.Busy.Seconds()
}

// BusBW returns AlgBW · 2(N-1)/N for a ring of worldSize ranks.
func (t Totals) BusBW(worldSize int) float64 {
	if worldSize < 2 {
		return 0
	}
	n := float64(worldSize)
	return t.AlgBW() * 2 * (n - 1) / n
}

type counters struct {
	ops, bytes, sent, recv, busyNanos atomic.Int64
}

func (c *Communicator) record(o *opState, bytes int, d time.Duration) OpStats {
	st := OpStats{Bytes: int64(bytes), BytesSent: o.bytesSent, BytesRecv: o.bytesRecv, Duration: d, WorldSize: c.size}
	c.totals.ops.Add(1)
	c.totals.bytes.Add(st.Bytes)
	c.totals.sent.Add(st.BytesSent)
	c.totals.recv.Add(st.BytesRecv)
	c.totals.busyNanos.Add(int64(d))
	return st
}

// Totals returns the counters over all operations that finished so far.
func (c *Communicator) Totals() Totals {
	return Totals{
		Ops:       c.totals.ops.Load(),
		Bytes:     c.totals.bytes.Load(),
		BytesSent: c.totals.sent.Load(),
		BytesRecv: c.totals.recv.Load(),
		Busy:      time.Duration(c.totals.busyNanos.Load()),
	}
}
