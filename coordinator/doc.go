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
// A job moves through the phases rendezvous, running, then done or failed. With
// Config.MaxRestarts above 0, a lost rank moves a running job to recovering, and the
// generation goes up. The survivors join again with the state of the last step they
// completed, and a new node takes the free rank. The ring then re-forms with the
// state of the survivor that completed the most steps. Every action carries the ring
// generation, starting at 1, so that nodes and reports of an older ring are
// recognized.
package coordinator
