// Package coordinator decides the life of one data-parallel training job: rendezvous,
// rank and ring assignment, the data shard plan, step summaries, checkpoint decisions
// and failure.
//
// The Coordinator is a pure state machine. Every input arrives as an Event passed to
// Coordinator.Step, which returns the Actions a driver performs: reply to a joining
// node, fail the job, write a checkpoint, log a step summary. The package does no I/O,
// starts no goroutines and reads no clock (time arrives in Tick events), so tests feed
// events directly with no network. gRPC, membership and timers live in the driver.
//
// A job moves through the phases rendezvous, running, then done or failed. Every
// action carries the ring generation, starting at 1, so that a later recovery can
// re-form the ring under a higher generation and nodes can tell old replies apart.
package coordinator
