package collective

import (
	"fmt"
	"log/slog"
	"time"
)

// WireDType selects the element type of all-reduce payloads on the wire.
type WireDType int

const (
	// Float32 sends IEEE binary32 values: exact, 4 bytes per element.
	Float32 WireDType = iota
	// BFloat16 rounds each value to bfloat16 (nearest even) on the wire and accumulates
	// in float32: half the bytes, about 3 significant decimal digits per hop.
	BFloat16
)

func (d WireDType) String() string {
	if d == BFloat16 {
		return "bf16"
	}
	return "fp32"
}

// ParseWireDType parses "fp32"/"float32" or "bf16"/"bfloat16".
func ParseWireDType(s string) (WireDType, error) {
	switch s {
	case "fp32", "float32", "f32":
		return Float32, nil
	case "bf16", "bfloat16":
		return BFloat16, nil
	}
	return 0, fmt.Errorf("unknown wire dtype %q: use fp32 or bf16", s)
}

// Config describes one member of a ring. Every rank of a ring must use the same JobID,
// Generation, WorldSize, DType, ChunkBytes and SmallBytes.
type Config struct {
	// JobID names the job; frames of another job are rejected. At most 128 bytes.
	JobID string
	// Generation numbers the ring: a ring re-formed after a failure uses a higher one,
	// and frames of any other generation are rejected.
	Generation uint64
	// Rank of this member, in [0, WorldSize).
	Rank int
	// WorldSize is the number of ranks N in the ring, at least 1.
	WorldSize int
	// Peers holds the address of every rank, indexed by rank. Only the right
	// neighbour's entry is dialled; the others appear in error messages.
	Peers []string

	// DType is the element type on the wire. Default Float32.
	DType WireDType
	// ChunkBytes is the payload size of one DATA frame, in bytes of float32 data
	// (a bf16 chunk holds the same number of elements in half the bytes). Smaller
	// chunks start the pipeline sooner; larger ones cost fewer frames. Default 1 MiB.
	ChunkBytes int
	// SmallBytes: buffers of at most this many bytes (float32) are all-reduced by an
	// all-gather of whole buffers, N-1 steps instead of 2(N-1), which wins where
	// latency dominates. It sends (N-1)·S bytes per rank instead of 2(N-1)/N·S.
	// Default 64 KiB; 0 keeps the default and a negative value turns it off.
	SmallBytes int

	// ConnectTimeout bounds forming the ring: dialling the right neighbour and waiting
	// for the left one. Default 2 minutes.
	ConnectTimeout time.Duration
	// NoProgressTimeout fails an operation when the left neighbour sends no data for
	// this long while this rank waits for it. The clock restarts whenever data arrives,
	// so a slow rank that is still computing is not killed. Default 10 minutes.
	NoProgressTimeout time.Duration
	// CloseTimeout bounds how long Close waits for the neighbours to see the end of
	// the streams. Default 5 s.
	CloseTimeout time.Duration

	// Logger receives lifecycle events and failures. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for every field but the ring's identity.
func DefaultConfig() Config {
	return Config{
		DType:             Float32,
		ChunkBytes:        1 << 20,          // 1 MiB: 8 chunks per segment of a 16 MiB bucket at N = 2
		SmallBytes:        64 << 10,         // 64 KiB: below this the two-phase ring is latency-bound
		ConnectTimeout:    2 * time.Minute,  // ranks of one job start within this of each other
		NoProgressTimeout: 10 * time.Minute, // longer than any backward pass between two buckets
		CloseTimeout:      5 * time.Second,
	}
}

// minChunkBytes keeps frames large enough that per-frame costs stay small.
const minChunkBytes = 4 << 10

// maxChunkBytes keeps one frame well below gRPC's message size limit.
const maxChunkBytes = 64 << 20

// Validate fills zero fields with defaults and checks the rest.
func (c *Config) Validate() error {
	d := DefaultConfig()

	// The ring's identity.
	if c.WorldSize < 1 {
		return fmt.Errorf("collective config: WorldSize is %d, must be at least 1", c.WorldSize)
	}
	if c.Rank < 0 || c.Rank >= c.WorldSize {
		return fmt.Errorf("collective config: Rank is %d, must be in [0, %d)", c.Rank, c.WorldSize)
	}
	if len(c.JobID) > maxJobIDLen {
		return fmt.Errorf("collective config: JobID is %d bytes long, the limit is %d", len(c.JobID), maxJobIDLen)
	}
	if c.WorldSize > 1 && len(c.Peers) != c.WorldSize {
		return fmt.Errorf("collective config: Peers has %d addresses, need one per rank (%d)", len(c.Peers), c.WorldSize)
	}

	// The wire format.
	if c.DType != Float32 && c.DType != BFloat16 {
		return fmt.Errorf("collective config: DType %d is not Float32 or BFloat16", c.DType)
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = d.ChunkBytes
	}
	if c.ChunkBytes < minChunkBytes || c.ChunkBytes > maxChunkBytes || c.ChunkBytes%4 != 0 {
		return fmt.Errorf("collective config: ChunkBytes is %d, must be a multiple of 4 in [%d, %d]", c.ChunkBytes, minChunkBytes, maxChunkBytes)
	}
	if c.SmallBytes == 0 {
		c.SmallBytes = d.SmallBytes
	}
	if c.SmallBytes > maxChunkBytes {
		return fmt.Errorf("collective config: SmallBytes is %d, but a small buffer travels in one frame, so it must be at most %d", c.SmallBytes, maxChunkBytes)
	}

	// Timeouts and logging.
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.NoProgressTimeout == 0 {
		c.NoProgressTimeout = d.NoProgressTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = d.CloseTimeout
	}
	if c.ConnectTimeout < 0 || c.NoProgressTimeout < 0 || c.CloseTimeout < 0 {
		return fmt.Errorf("collective config: timeouts must be positive (connect %v, no-progress %v, close %v)",
			c.ConnectTimeout, c.NoProgressTimeout, c.CloseTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func (c *Config) peerAddr(rank int) string {
	if rank >= 0 && rank < len(c.Peers) {
		return c.Peers[rank]
	}
	return ""
}
