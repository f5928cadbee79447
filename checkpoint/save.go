package checkpoint

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
)

// DefaultMaxShardSize is the shard size limit that WriteModel applies when
// ModelOptions.MaxShardSize is zero: 5 GB (5·10^9 bytes), MAX_SHARD_SIZE in
// huggingface_hub's serialization/_base.py.
const DefaultMaxShardSize = 5_000_000_000

// ModelOptions configures WriteModel.
type ModelOptions struct {
	// MaxShardSize is the largest total tensor size of one shard, in bytes. Zero means
	// DefaultMaxShardSize. A tensor larger than this gets a shard of its own.
	MaxShardSize int64
	// Metadata is written as "__metadata__" to every file. WriteModel adds
	// "format": "pt" when it is missing, because transformers' load_state_dict rejects
	// safetensors files whose metadata has another format or none.
	Metadata map[string]string
}

// shardFilePattern matches the shard names that WriteModel and transformers write.
var shardFilePattern = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// WriteModel writes tensors to dir as transformers' save_pretrained lays them out: a
// single model.safetensors when the tensors fit in one shard, otherwise shards named
// model-00001-of-0000N.safetensors and model.safetensors.index.json. It splits shards
// as huggingface_hub's split_state_dict_into_shards_factory does: tensors in the given
// order fill a shard until the next one would push it past MaxShardSize, and a tensor
// larger than MaxShardSize gets a shard of its own. The index has weight_map and
// metadata with total_size (the sum of tensor sizes in bytes) and total_parameters
// (the sum of element counts), serialized like Python's json.dumps(indent=2,
// sort_keys=True).
//
// Each file is replaced atomically, but the set of files is not: the shards are
// written first, then the index. Last, WriteModel deletes model.safetensors, the index
// and model-*-of-*.safetensors files that an earlier save left and this one did not
// write. A crash partway can leave old and new files side by side, which OpenModel
// reports as an invalid index rather than reading a mix.
func WriteModel(dir string, tensors []Tensor, opts ModelOptions) error {
	maxShard := opts.MaxShardSize
	if maxShard < 0 {
		return newError(dir, "", ErrInvalidTensor, "pass 0 for the default of 5 GB", "MaxShardSize is %d, a negative size", maxShard)
	}
	if maxShard == 0 {
		maxShard = DefaultMaxShardSize
	}
	metadata := maps.Clone(opts.Metadata)
	if metadata == nil {
		metadata = make(map[string]string)
	}
	if _, ok := metadata["format"]; !ok {
		metadata["format"] = "pt"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &Error{Path: dir, Kind: ErrIO, Msg: "cannot create the model directory", Err: err}
	}

	// Validate everything before the first file is written.
	sizes := make([]int64, len(tensors))
	var totalSize, totalParams int64
	seen := make(map[string]bool, len(tensors))
	for i, t := range tensors {
		size, err := checkTensor(dir, t)
		if err != nil {
			return err
		}
		if seen[t.Name] {
			return newError(dir, t.Name, ErrInvalidTensor, "", "duplicate tensor name")
		}
		seen[t.Name] = true
		sizes[i] = size
		totalSize += size
		n, _ := numElements(t.Shape)
		totalParams += n
	}

	shards := splitShards(sizes, maxShard)
	if len(shards) <= 1 {
		if err := Write(filepath.Join(dir, SingleFileName), tensors, metadata); err != nil {
			return err
		}
		return removeStale(dir, map[string]bool{SingleFileName: true})
	}

	keep := map[string]bool{IndexFileName: true}
	weightMap := make(map[string]string, len(tensors))
	for i, shard := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		keep[name] = true
		subset := make([]Tensor, len(shard))
		for j, k := range shard {
			subset[j] = tensors[k]
			weightMap[tensors[k].Name] = name
		}
		if err := Write(filepath.Join(dir, name), subset, metadata); err != nil {
			return err
		}
	}

	index := map[string]any{
		"metadata":   map[string]int64{"total_size": totalSize, "total_parameters": totalParams},
		"weight_map": weightMap,
	}
	indexPath := filepath.Join(dir, IndexFileName)
	err := writeAtomic(indexPath, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(index); err != nil {
			return &Error{Path: indexPath, Kind: ErrIO, Msg: "write failed", Err: err}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return removeStale(dir, keep)
}

// splitShards groups tensor indices into shards by the algorithm of huggingface_hub's
// split_state_dict_into_shards_factory. A tensor larger than maxShard becomes a shard of
// its own right away, so it can come before the shard still being filled.
func splitShards(sizes []int64, maxShard int64) [][]int {
	var shards [][]int
	var current []int
	var currentSize int64
	for i, size := range sizes {
		if size > maxShard {
			shards = append(shards, []int{i})
			continue
		}
		if currentSize+size > maxShard && len(current) > 0 {
			shards = append(shards, current)
			current, currentSize = nil, 0
		}
		current = append(current, i)
		currentSize += size
	}
	if len(current) > 0 {
		shards = append(shards, current)
	}
	return shards
}

// removeStale deletes the weight files of an earlier save that keep does not list:
// model.safetensors, the index and files named like shards.
func removeStale(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return &Error{Path: dir, Kind: ErrIO, Msg: "cannot list the directory to remove stale weight files", Err: err}
	}
	for _, e := range entries {
		name := e.Name()
		stale := name == SingleFileName || name == IndexFileName || shardFilePattern.MatchString(name)
		if !stale || keep[name] || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return &Error{Path: filepath.Join(dir, name), Kind: ErrIO, Msg: "cannot remove the stale weight file", Err: err}
		}
	}
	return nil
}
