package jobconfig

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unhashedKeys are the keys that Hash leaves out when model.init is pretrained.
var unhashedKeys = map[string]bool{
	"output":               true,
	"cluster.coordinator":  true,
	"cluster.join_timeout": true,
	"cluster.max_restarts": true,
	"model.tokenizer":      true,
	"data.train":           true,
	"data.eval":            true,
	"model.base":           true,
}

// changeLeaf sets the leaf of cfg to a value different from its current one.
func changeLeaf(t *testing.T, cfg *Config, l leaf) {
	t.Helper()
	field := reflect.ValueOf(cfg).Elem().FieldByIndex(l.index)
	switch l.typ.Kind() {
	case reflect.String:
		field.SetString(field.String() + "-changed")
	case reflect.Int:
		field.SetInt(field.Int() + 1)
	case reflect.Uint64:
		field.SetUint(field.Uint() + 1)
	case reflect.Float64:
		field.SetFloat(field.Float() + 0.5)
	case reflect.Bool:
		field.SetBool(!field.Bool())
	case reflect.Slice:
		field.Set(reflect.Append(field, reflect.ValueOf("changed")))
	case reflect.Map:
		field.Set(reflect.ValueOf(map[string]any{"hidden_size": 64}))
	case reflect.Pointer:
		pointer := reflect.New(l.typ.Elem())
		switch l.typ.Elem().Kind() {
		case reflect.Bool:
			pointer.Elem().SetBool(!field.Elem().Bool())
		case reflect.Int:
			pointer.Elem().SetInt(field.Elem().Int() + 1)
		case reflect.Float64:
			pointer.Elem().SetFloat(field.Elem().Float() + 0.5)
		default:
			t.Fatalf("changeLeaf: no change for %s of type %s", l.path, l.typ)
		}
		field.Set(pointer)
	default:
		t.Fatalf("changeLeaf: no change for %s of type %s: extend this test", l.path, l.typ)
	}
}

func parseExample(t *testing.T) *Config {
	t.Helper()
	cfg, err := Parse([]byte(fullExample), "/jobs/job.yaml")
	require.NoError(t, err)
	return cfg
}

func TestHashCoversEveryLeaf(t *testing.T) {
	leaves := configLeaves()
	require.NotEmpty(t, leaves)
	for _, l := range leaves {
		t.Run(l.path, func(t *testing.T) {
			cfg := parseExample(t)
			before := cfg.Hash()
			changeLeaf(t, cfg, l)
			if unhashedKeys[l.path] {
				assert.Equal(t, before, cfg.Hash(), "%s must not change the hash", l.path)
			} else {
				assert.NotEqual(t, before, cfg.Hash(), "%s must change the hash", l.path)
			}
		})
	}
}

func TestHashBaseWithRandomInit(t *testing.T) {
	cfg := parseExample(t)
	cfg.Mode, cfg.Model.Init = "full", "random"
	before := cfg.Hash()
	cfg.Model.Base = "small"
	assert.NotEqual(t, before, cfg.Hash())
}

func TestHashEqualForNodeLocalPaths(t *testing.T) {
	first, err := Parse([]byte(fullExample), "/node-a/job.yaml")
	require.NoError(t, err)
	second, err := Parse([]byte(fullExample), "/node-b/configs/job.yaml")
	require.NoError(t, err)
	require.NotEqual(t, first.Data.Train, second.Data.Train)

	second.Cluster.Coordinator = "10.0.0.9:1234"
	assert.Equal(t, first.Hash(), second.Hash())
}

func TestHashUnsetPointerEqualsDefault(t *testing.T) {
	cfg := parseExample(t)
	cfg.Optimizer.MaxGradNorm = nil
	unset := cfg.Hash()
	cfg.Optimizer.MaxGradNorm = floatPointer(defaultMaxGradNorm)
	assert.Equal(t, unset, cfg.Hash())
}

func TestHashIsHexSHA256(t *testing.T) {
	assert.Regexp(t, `^[0-9a-f]{64}$`, parseExample(t).Hash())
}
