// Package collective averages gradients across the ranks of a data-parallel job with a
// ring all-reduce, and provides the broadcast and barrier that a job needs around it.
//
// # Algorithm
//
// N ranks form a ring in rank order; rank r sends to rank r+1 and receives from rank
// r-1. AllReduce cuts a buffer of S bytes into N segments and runs N-1 reduce-scatter
// steps, after which rank r holds the full sum of segment r+1, then N-1 all-gather
// steps that pass the sums around. Each segment travels in chunks (Config.ChunkBytes), and
// a chunk received in one step is sent on in the next as soon as it is reduced, so
// sending, receiving and adding overlap. Each rank sends 2(N-1)/N · S bytes. Buffers of
// at most Config.SmallBytes instead pass every whole buffer around the ring in N-1 steps
// and add the N contributions in rank order, which halves the number of sequential hops.
// A ring of one rank is a no-op that touches nothing.
//
// With the bf16 wire type each hop rounds to bfloat16 (nearest even) and the receiver
// accumulates in float32. The owner of a segment keeps the rounded sum it sends, so every
// rank ends with bit-identical values in either wire type.
//
// # Wire protocol
//
// The gRPC transport keeps one bidirectional stream per neighbour pair (the Link RPC of
// ringtune.v1.Collective), opened with a HELLO exchange that checks the job id,
// generation, ranks and world size, and the job token in gRPC metadata. Every DATA frame
// carries the job id, generation, operation id, algorithm step, segment, offset and the
// buffer's element count. A frame that does not fit the operation fails the ring with an
// error that names the sender and the field. Payloads are raw little-endian bytes, sent
// from the caller's buffer without a copy and reduced straight out of gRPC's receive
// buffers.
//
// # Failures
//
// A broken stream fails every operation at once; a neighbour that sends no data for
// Config.NoProgressTimeout while this rank waits for it fails them too. A rank blocked on
// its own left neighbour sends WAITING frames to its right neighbour. The timeout then
// blames the rank where the ring stopped rather than one further along. The rank
// that detects a failure sends an ABORT frame both ways around the ring, and every
// survivor fails with a *FaultError that names the rank at fault. After a failure, Close
// the Communicator and form a new ring with a higher Config.Generation; one GRPCEndpoint
// serves every generation.
package collective
