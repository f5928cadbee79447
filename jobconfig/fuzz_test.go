package jobconfig

import (
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(fullExample))
	f.Add([]byte("mode: lora\nmodel: {base: tiny}\ndata: {train: t.jsonl}\n"))
	f.Add([]byte("model:\n  overrides: {hidden_size: 1e400}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("- 1\n"))
	f.Add([]byte("optimizer: {lr: .nan}\n---\nx: 1\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, content []byte) {
		cfg, err := Parse(content, "/fuzz/job.yaml")
		if err != nil {
			return
		}
		// A parsed config must validate, hash and print without panicking.
		_ = cfg.Validate()
		_ = cfg.Hash()
		_ = cfg.YAML()
	})
}
