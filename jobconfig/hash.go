package jobconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Hash returns the hex SHA-256 of the canonical JSON encoding of the Config, which
// every node of a job must agree on. It leaves out the node-local settings (output,
// cluster.coordinator), the coordinator-only cluster.join_timeout and cluster.max_restarts, and the paths whose content the nodes compare by their own
// hashes: model.tokenizer, data.train, data.eval, and model.base unless model.init
// is random, where Base only names a shape. Unset pointers hash as their defaults.
// Call it on a resolved Config.
func (c *Config) Hash() string {
	canonical := *c
	canonical.Output = ""
	canonical.Cluster.Coordinator = ""
	canonical.Cluster.JoinTimeout = ""
	canonical.Cluster.MaxRestarts = 0
	canonical.Model.Tokenizer = ""
	canonical.Data.Train = ""
	canonical.Data.Eval = ""
	if canonical.Model.Init != "random" {
		canonical.Model.Base = ""
	}
	if canonical.Data.Shuffle == nil {
		shuffle := true
		canonical.Data.Shuffle = &shuffle
	}
	if canonical.Optimizer.MaxGradNorm == nil {
		maxGradNorm := defaultMaxGradNorm
		canonical.Optimizer.MaxGradNorm = &maxGradNorm
	}
	if canonical.Schedule.MinLRRatio == nil {
		minLRRatio := defaultMinLRRatio
		canonical.Schedule.MinLRRatio = &minLRRatio
	}
	if canonical.Checkpoint.Keep == nil {
		keep := defaultKeepCheckpoints
		canonical.Checkpoint.Keep = &keep
	}

	// encoding/json writes struct fields in declaration order and map keys sorted,
	// so equal configs encode to equal bytes.
	encoded, err := json.Marshal(canonical)
	if err != nil {
		// Only a NaN or infinite float or an override value that JSON cannot
		// represent gets here, and Validate rejects both.
		encoded = fmt.Appendf(nil, "unencodable config: %v: %#v", err, canonical)
	}
	sum := sha256.Sum256(encoded)
	return hex.EncodeToString(sum[:])
}

// YAML returns the Config as YAML, for logging the resolved settings once.
func (c *Config) YAML() string {
	encoded, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("# the job config cannot be encoded as YAML: %v\n", err)
	}
	return string(encoded)
}
