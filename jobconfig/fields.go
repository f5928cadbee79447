package jobconfig

import (
	"reflect"
	"strings"
	"sync"
)

// leaf is one scalar, list or map setting of Config, addressed by its YAML key path.
type leaf struct {
	path  string // YAML key path, such as "optimizer.lr"
	index []int  // reflect field index path from Config
	typ   reflect.Type
}

// isPath reports whether the leaf is a file system path, which Resolve makes absolute.
func (l leaf) isPath() bool {
	switch l.path {
	case "model.base", "model.tokenizer", "data.train", "data.eval", "output":
		return true
	}
	return false
}

var (
	leavesOnce sync.Once
	leafList   []leaf
	// sections maps the type of each nested struct to its YAML key path, so that
	// decoding errors can name the section instead of the Go type.
	sections map[reflect.Type]string
)

// configLeaves returns the leaves of Config in declaration order.
func configLeaves() []leaf {
	leavesOnce.Do(func() {
		sections = map[reflect.Type]string{reflect.TypeFor[Config](): ""}
		collectLeaves(reflect.TypeFor[Config](), "", nil)
	})
	return leafList
}

func collectLeaves(t reflect.Type, prefix string, index []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := yamlName(f)
		if name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fieldIndex := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct {
			sections[f.Type] = path
			collectLeaves(f.Type, path, fieldIndex)
			continue
		}
		leafList = append(leafList, leaf{path: path, index: fieldIndex, typ: f.Type})
	}
}

// yamlName returns the key of a struct field in YAML.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// findLeaf returns the leaf with the YAML key path, if there is one.
func findLeaf(path string) (leaf, bool) {
	for _, l := range configLeaves() {
		if l.path == path {
			return l, true
		}
	}
	return leaf{}, false
}

// sectionKeys returns the YAML keys directly inside the struct type t.
func sectionKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && yamlName(f) != "-" {
			keys = append(keys, yamlName(f))
		}
	}
	return keys
}

// closestKey returns the key of keys nearest to name by edit distance, or "" when
// none is within two edits.
func closestKey(name string, keys []string) string {
	best, bestDistance := "", 3
	for _, k := range keys {
		if d := editDistance(strings.ToLower(name), k); d < bestDistance {
			best, bestDistance = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, counted in bytes.
func editDistance(a, b string) int {
	previous := make([]int, len(b)+1)
	current := make([]int, len(b)+1)
	for j := range previous {
		previous[j] = j
	}
	for i := 1; i <= len(a); i++ {
		current[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			current[j] = min(previous[j]+1, current[j-1]+1, previous[j-1]+cost)
		}
		previous, current = current, previous
	}
	return previous[len(b)]
}
