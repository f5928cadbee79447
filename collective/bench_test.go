package collective

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAllReduce measures one all-reduce per iteration on a ring of two ranks in
// this process. Run with -benchmem: allocations per operation must not grow with the
// buffer size, because every chunk and staging buffer is pooled.
func BenchmarkAllReduce(b *testing.B) {
	for _, transport := range []string{"mem", "grpc"} {
		for _, dtype := range []WireDType{Float32, BFloat16} {
			for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
				b.Run(fmt.Sprintf("%s/%v/%dKiB", transport, dtype, size>>10), func(b *testing.B) {
					var comms []*Communicator
					tweak := func(c *Config) { c.DType = dtype; c.ChunkBytes = 1 << 20 }
					if transport == "mem" {
						comms = memRing(b, 2, tweak)
					} else {
						eps, addrs := grpcEndpoints(b, 2, nil)
						var errs []error
						comms, errs = grpcRing(b, eps, addrs, 1, tweak)
						for _, err := range errs {
							if err != nil {
								b.Fatal(err)
							}
						}
					}
					bufs := [][]float32{make([]float32, size/4), make([]float32, size/4)}
					peer := make(chan error, 1)
					b.SetBytes(int64(size))
					b.ResetTimer()
					go func() {
						for i := 0; i < b.N; i++ {
							if err := comms[1].AllReduce(context.Background(), bufs[1], Sum); err != nil {
								peer <- err
								return
							}
						}
						peer <- nil
					}()
					for i := 0; i < b.N; i++ {
						if err := comms[0].AllReduce(context.Background(), bufs[0], Sum); err != nil {
							b.Fatal(err)
						}
					}
					if err := <-peer; err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}
