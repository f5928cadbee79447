package demodata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringtune/ringtune/internal/atomicfile"
)

// textRecord is a record in the text format of package data.
type textRecord struct {
	Text string `json:"text"`
}

// chatRecord is a record in the chat format of package data.
type chatRecord struct {
	Messages []chatMessage `json:"messages"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// outputFile is the content of one output file before it is written.
type outputFile struct {
	name    string
	records int
	content bytes.Buffer
}

// jsonlFile encodes records as JSON Lines. The encoder writes Chinese text as UTF-8
// rather than \u escapes, and leaves <, > and & unescaped.
type jsonlFile struct {
	outputFile
	enc *json.Encoder
}

func newJSONLFile(name string) *jsonlFile {
	f := &jsonlFile{outputFile: outputFile{name: name}}
	f.enc = json.NewEncoder(&f.content)
	f.enc.SetEscapeHTML(false)
	return f
}

func (f *jsonlFile) add(record any) {
	// Encode fails only on unsupported types and values, and these records contain only strings.
	if err := f.enc.Encode(record); err != nil {
		panic(fmt.Sprintf("encoding a %s record: %v", f.name, err))
	}
	f.records++
}

func pretrainText(p *poem) string {
	return "《" + p.title + "》 " + p.author + "\n" + strings.Join(p.lines, "\n")
}

func writePrompt(p *poem) string {
	if p.source == sourceCi {
		return "以《" + p.title + "》为词牌写一首词。"
	}
	return "写一首题为《" + p.title + "》的诗。"
}

func explainPrompt(p *poem) string {
	return "请用白话解释这首诗：\n" + strings.Join(p.lines, "\n")
}

func chat(user, assistant string) chatRecord {
	return chatRecord{Messages: []chatMessage{
		{Role: "user", Content: user},
		{Role: "assistant", Content: assistant},
	}}
}

// buildFiles renders the five output files, in the order of the file name constants.
// poems and paraphrases are in selection order.
func buildFiles(poems, paraphrases []*poem, evalTitles, evalParaphraseTitles map[string]bool, numPrompts int) []*outputFile {
	pretrain, pretrainEval := newJSONLFile(PretrainFile), newJSONLFile(PretrainEvalFile)
	sft, sftEval := newJSONLFile(SFTFile), newJSONLFile(SFTEvalFile)

	// Each record goes to the eval file when its title is an eval title.
	pick := func(eval bool, train, held *jsonlFile) *jsonlFile {
		if eval {
			return held
		}
		return train
	}

	for _, p := range poems {
		pick(evalTitles[p.title], pretrain, pretrainEval).add(textRecord{Text: pretrainText(p)})
	}

	// The chat records of both tasks are merged in key order, so that neither task
	// fills the start of sft.jsonl.
	chatPoems := slices.Concat(poems, paraphrases)
	slices.SortFunc(chatPoems, comparePoems)
	for _, p := range chatPoems {
		if p.source == sourceParaphrase {
			record := chat(explainPrompt(p), p.paraphrase)
			pick(evalParaphraseTitles[p.title], sft, sftEval).add(record)
			continue
		}
		record := chat(writePrompt(p), strings.Join(p.lines, "\n"))
		pick(evalTitles[p.title], sft, sftEval).add(record)
	}

	prompts := buildPrompts(poems, paraphrases, evalTitles, evalParaphraseTitles, numPrompts)
	return []*outputFile{&pretrain.outputFile, &pretrainEval.outputFile, &sft.outputFile, &sftEval.outputFile, prompts}
}

// buildPrompts takes distinct eval prompts in turn from the Tang poems, the ci and the
// paraphrases, each in selection order, until it has numPrompts or runs out. The prompts
// are separated by blank lines, the document separator of data's plain text format,
// and none contains a blank line because the filters reject blank lines.
func buildPrompts(poems, paraphrases []*poem, evalTitles, evalParaphraseTitles map[string]bool, numPrompts int) *outputFile {
	var queues [3][]string
	seen := make(map[string]bool)
	enqueue := func(i int, prompt string) {
		if !seen[prompt] {
			seen[prompt] = true
			queues[i] = append(queues[i], prompt)
		}
	}
	for _, p := range poems {
		if evalTitles[p.title] {
			enqueue(int(p.source), writePrompt(p))
		}
	}
	for _, p := range paraphrases {
		if evalParaphraseTitles[p.title] {
			enqueue(int(sourceParaphrase), explainPrompt(p))
		}
	}

	out := &outputFile{name: PromptsFile}
	for round := 0; out.records < numPrompts; round++ {
		added := false
		for _, queue := range queues {
			if round < len(queue) && out.records < numPrompts {
				if out.records > 0 {
					out.content.WriteString("\n")
				}
				out.content.WriteString(queue[round] + "\n")
				out.records++
				added = true
			}
		}
		if !added {
			break
		}
	}
	return out
}

// writeFiles writes each file through a temporary file in outDir and renames it into
// place, so that an interrupted run leaves no truncated file under the final name.
func writeFiles(outDir string, files []*outputFile) ([]FileStats, error) {
	// Package data rejects a file without records, so an empty file is an error here
	// rather than at training time.
	for _, f := range files {
		if f.records == 0 {
			return nil, fmt.Errorf("%s would have no records; raise EvalFraction, MaxPoems or MaxChars", f.name)
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output folder: %w", err)
	}

	stats := make([]FileStats, 0, len(files))
	for _, f := range files {
		path := filepath.Join(outDir, f.name)
		if err := writeAtomic(path, f.content.Bytes()); err != nil {
			return stats, err
		}
		stats = append(stats, FileStats{Name: f.name, Records: f.records, Bytes: int64(f.content.Len())})
	}
	return stats, nil
}

func writeAtomic(path string, content []byte) error {
	if err := atomicfile.WriteFile(path, content); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
