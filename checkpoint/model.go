package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File names of a Hugging Face model directory, as transformers' save_pretrained
// writes them.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Model is a Hugging Face model's weights: one model.safetensors file, or shards listed
// by model.safetensors.index.json, presented as one set of tensors. Its methods are
// safe for concurrent use.
type Model struct {
	path      string // index file or single file
	files     []*File
	byName    map[string]*File
	tensors   []TensorInfo
	indexMeta map[string]any
}

// OpenModel opens a model's weights. path is a model directory, an index file or a
// single safetensors file. A directory must contain either model.safetensors or
// model.safetensors.index.json, not both, because a leftover of one would shadow the
// other. For a sharded model, OpenModel checks that every shard file name is a plain
// name in the index's directory and that the index and the shards list the same
// tensors in the same places.
func OpenModel(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Path: path, Kind: ErrNotFound, Msg: "model path does not exist", Err: errors.Unwrap(err)}
		}
		return nil, &Error{Path: path, Kind: ErrIO, Msg: "cannot stat model path", Err: err}
	}
	if !st.IsDir() {
		if strings.HasSuffix(path, ".index.json") {
			return openSharded(path)
		}
		return openSingle(path)
	}

	indexPath := filepath.Join(path, IndexFileName)
	singlePath := filepath.Join(path, SingleFileName)
	hasIndex, hasSingle := isFile(indexPath), isFile(singlePath)
	switch {
	case hasIndex && hasSingle:
		return nil, newError(path, "", ErrInvalidIndex, "remove the stale one, or pass the file to use to OpenModel",
			"directory contains both %s and %s", SingleFileName, IndexFileName)
	case hasIndex:
		return openSharded(indexPath)
	case hasSingle:
		return openSingle(singlePath)
	}
	hint := "pass a Hugging Face model directory saved in safetensors format"
	if isFile(filepath.Join(path, "pytorch_model.bin")) || isFile(filepath.Join(path, "pytorch_model.bin.index.json")) {
		hint = "the directory contains PyTorch pickle weights: convert them to safetensors first"
	}
	return nil, newError(path, "", ErrNotFound, hint, "no %s or %s found in the directory", SingleFileName, IndexFileName)
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func openSingle(path string) (*Model, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	return &Model{path: path, files: []*File{f}, byName: fileByName(f), tensors: f.Tensors()}, nil
}

func fileByName(f *File) map[string]*File {
	m := make(map[string]*File, len(f.header.Tensors))
	for _, t := range f.header.Tensors {
		m[t.Name] = f
	}
	return m
}

// indexJSON is the layout of model.safetensors.index.json.
type indexJSON struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

func openSharded(indexPath string) (_ *Model, err error) {
	data, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, &Error{Path: indexPath, Kind: ErrIO, Msg: "cannot read the index", Err: err}
	}
	var index indexJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&index); err != nil {
		return nil, &Error{Path: indexPath, Kind: ErrInvalidIndex, Msg: "index is not valid JSON of the form {\"metadata\": {...}, \"weight_map\": {...}}", Err: err}
	}
	if len(index.WeightMap) == 0 {
		return nil, newError(indexPath, "", ErrInvalidIndex, hintCorrupt, "index has no weight_map entries")
	}

	// Open each shard once, in file-name order.
	shardNames := make(map[string]bool)
	for tensor, shard := range index.WeightMap {
		if err := checkShardName(shard); err != nil {
			return nil, newError(indexPath, tensor, ErrInvalidIndex, "shard files must be in the directory of the index",
				"weight_map names shard %q, %s", shard, err)
		}
		shardNames[shard] = true
	}
	m := &Model{path: indexPath, byName: make(map[string]*File, len(index.WeightMap)), indexMeta: index.Metadata}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	dir := filepath.Dir(indexPath)
	for _, shard := range slices.Sorted(maps.Keys(shardNames)) {
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			return nil, err
		}
		m.files = append(m.files, f)
		for _, t := range f.header.Tensors {
			listed, ok := index.WeightMap[t.Name]
			if !ok {
				return nil, newError(indexPath, t.Name, ErrInvalidIndex, "the index and shards come from different saves: save the model again",
					"tensor is in shard %s but missing from weight_map", shard)
			}
			if listed != shard {
				return nil, newError(indexPath, t.Name, ErrInvalidIndex, "the index and shards come from different saves: save the model again",
					"weight_map places the tensor in %s, but shard %s contains it", listed, shard)
			}
			m.byName[t.Name] = f
		}
		m.tensors = append(m.tensors, f.Tensors()...)
	}
	for _, tensor := range slices.Sorted(maps.Keys(index.WeightMap)) {
		if _, ok := m.byName[tensor]; !ok {
			return nil, newError(indexPath, tensor, ErrInvalidIndex, "the index and shards come from different saves: save the model again",
				"weight_map places the tensor in %s, but that shard does not contain it", index.WeightMap[tensor])
		}
	}
	return m, nil
}

// checkShardName rejects shard names that could reach outside the index's directory.
func checkShardName(name string) error {
	switch {
	case name == "":
		return errors.New("which is empty")
	case strings.ContainsAny(name, `/\`):
		return errors.New("which contains a path separator")
	case strings.Contains(name, ".."):
		return errors.New(`which contains ".."`)
	case strings.ContainsRune(name, 0):
		return errors.New("which contains a NUL byte")
	}
	return nil
}

// Path returns the index file of a sharded model, or the single safetensors file.
func (m *Model) Path() string { return m.path }

// Files returns the paths of the model's safetensors files, shards in name order.
func (m *Model) Files() []string {
	paths := make([]string, len(m.files))
	for i, f := range m.files {
		paths[i] = f.Path()
	}
	return paths
}

// Close closes every shard.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Tensors returns every tensor: shard by shard in file-name order, and within a
// shard in the order of its data.
func (m *Model) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(m.tensors))
	for i, t := range m.tensors {
		out[i] = t.clone()
	}
	return out
}

// Metadata returns the "__metadata__" map of the first shard. transformers writes the
// same map, {"format": "pt"}, to every shard.
func (m *Model) Metadata() map[string]string {
	if len(m.files) == 0 {
		return nil
	}
	return m.files[0].Metadata()
}

// IndexMetadata returns a copy of the index's "metadata" object, such as total_size,
// with numbers as json.Number. It returns nil for a single-file model.
func (m *Model) IndexMetadata() map[string]any {
	return maps.Clone(m.indexMeta)
}

func (m *Model) file(name string) (*File, error) {
	f, ok := m.byName[name]
	if !ok {
		return nil, notFound(m.path, name, m.tensors)
	}
	return f, nil
}

// Info returns the description of the named tensor. Its Path names the shard.
func (m *Model) Info(name string) (TensorInfo, error) {
	f, err := m.file(name)
	if err != nil {
		return TensorInfo{}, err
	}
	return f.Info(name)
}

// CheckShape returns an error of kind ErrShapeMismatch when the tensor's shape differs
// from shape, and ErrNotFound when the tensor is missing.
func (m *Model) CheckShape(name string, shape ...int) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.CheckShape(name, shape...)
}

// Section returns a reader over the tensor's raw little-endian bytes.
func (m *Model) Section(name string) (*io.SectionReader, error) {
	f, err := m.file(name)
	if err != nil {
		return nil, err
	}
	return f.Section(name)
}

// ReadRaw copies the tensor's bytes, as stored, into dst. See File.ReadRaw.
func (m *Model) ReadRaw(name string, dst []byte) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.ReadRaw(name, dst)
}

// ReadFloat32 reads the tensor into dst as float32. See File.ReadFloat32.
func (m *Model) ReadFloat32(name string, dst []float32) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.ReadFloat32(name, dst)
}

// ReadBF16 reads the tensor into dst as bfloat16 bit patterns. See File.ReadBF16.
func (m *Model) ReadBF16(name string, dst []uint16) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.ReadBF16(name, dst)
}
