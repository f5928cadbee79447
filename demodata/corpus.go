package demodata

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// tangRecord is a record of quantangshi/poet.tang.N.json and of quantangshi/error/.
type tangRecord struct {
	Title      string   `json:"title"`
	Author     string   `json:"author"`
	Paragraphs []string `json:"paragraphs"`
	ID         string   `json:"id"`
}

// ciRecord is a record of songci/ci.song.N.json.
type ciRecord struct {
	Rhythmic   string   `json:"rhythmic"`
	Author     string   `json:"author"`
	Paragraphs []string `json:"paragraphs"`
}

// paraphraseRecord is a record of shuimotangshi/shuimotangshi.json.
type paraphraseRecord struct {
	Title      string   `json:"title"`
	Author     string   `json:"author"`
	Paragraphs []string `json:"paragraphs"`
	Prologue   string   `json:"prologue"`
}

// resolveDist returns srcDir/dist, or else srcDir, whichever contains quantangshi/, so
// that srcDir may be the unpacked package or its dist/ folder.
func resolveDist(srcDir string) (string, error) {
	candidates := []string{filepath.Join(srcDir, "dist"), srcDir}
	for _, dir := range candidates {
		info, err := os.Stat(filepath.Join(dir, "quantangshi"))
		if err == nil && info.IsDir() {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no quantangshi folder in %s or %s; pass the folder printed by scripts/fetch-demo-data.sh",
		candidates[0], candidates[1])
}

// listNumbered returns the files of dir named prefix + N + ".json", sorted by N, which is
// the corpus order. Names whose N is not a number, such as ci.song.2019y.json, follow the
// numbered ones in name order.
func listNumbered(dir, prefix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}

	type numberedFile struct {
		name   string
		number int
		ok     bool
	}
	var files []numberedFile
	for _, entry := range entries {
		name := entry.Name()
		if entry.IsDir() || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ".json") {
			continue
		}
		number, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, prefix), ".json"))
		files = append(files, numberedFile{name: name, number: number, ok: err == nil})
	}

	slices.SortFunc(files, func(a, b numberedFile) int {
		switch {
		case a.ok && b.ok && a.number != b.number:
			return a.number - b.number
		case a.ok != b.ok:
			if a.ok {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})

	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(dir, f.name)
	}
	return paths, nil
}

// readArray decodes the JSON array in path and calls visit with the 1-based number of
// each record. Errors name the file and, for a bad record, its number.
func readArray[T any](path string, visit func(number int, record T) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	dec := json.NewDecoder(f)
	if err := expectDelim(dec, '['); err != nil {
		return fmt.Errorf("%s: %w; expected a JSON array of records", path, err)
	}
	number := 0
	for dec.More() {
		number++
		var record T
		if err := dec.Decode(&record); err != nil {
			return fmt.Errorf("%s: record %d: %w", path, number, err)
		}
		if err := visit(number, record); err != nil {
			return fmt.Errorf("%s: record %d: %w", path, number, err)
		}
	}
	if err := expectDelim(dec, ']'); err != nil {
		return fmt.Errorf("%s: after record %d: %w", path, number, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: unexpected data after the closing ]", path)
	}
	return nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	token, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("unexpected end of file, expected %q", want)
	}
	if err != nil {
		return err
	}
	if token != want {
		return fmt.Errorf("found %v, expected %q", token, want)
	}
	return nil
}

// readFlaggedIDs returns the ids of the Tang poems listed in quantangshi/error/.
func readFlaggedIDs(distDir string) (map[string]bool, error) {
	dir := filepath.Join(distDir, "quantangshi", "error")
	paths, err := listNumbered(dir, "poet.tang.")
	if err != nil {
		return nil, fmt.Errorf("reading the list of doubtful poems: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no poet.tang.N.json files in %s", dir)
	}

	flagged := make(map[string]bool)
	for _, path := range paths {
		err := readArray(path, func(_ int, r tangRecord) error {
			if r.ID == "" {
				return errors.New(`missing "id"`)
			}
			flagged[r.ID] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return flagged, nil
}
