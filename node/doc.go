// Package node runs one rank of a data-parallel training job.
//
// A node loads the tokenizer, the dataset and the model described by the job
// config. It joins the coordinator, forms the gradient ring with the other ranks
// and runs the step loop: micro-batches with gradient accumulation, the bucketed
// all-reduce of train.Stepper, AdamW and the learning-rate schedule. Rank 0 also
// appends every step to metrics.jsonl, writes checkpoints when the coordinator
// decides so, and writes the final model or adapter.
//
// When the coordinator re-forms the ring after a lost rank, the node abandons
// its step and joins the next generation with the state of its last completed
// step. It then takes the chosen survivor's weights and optimizer state by
// broadcast, so training goes on from that step with the same data order.
//
// Every rank loads and tokenizes the whole dataset on its own, and the data
// package makes that deterministic, so the ranks agree on the rows without
// sending them. The shard plan from the coordinator then selects each rank's rows.
package node
