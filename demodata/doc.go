// Package demodata builds the small training files of the demo from the chinese-poetry
// corpus (npm package chinese-poetry@2.0.1, unpacked by scripts/fetch-demo-data.sh).
//
// Prepare reads three folders of the corpus's dist/ tree:
//
//	quantangshi/poet.tang.N.json       Tang poems: title, author, paragraphs, id
//	quantangshi/error/poet.tang.N.json Tang poems flagged as doubtful, matched by id
//	shuimotangshi/shuimotangshi.json   Tang poems with a modern-Chinese paraphrase (prologue)
//	songci/ci.song.N.json              Song ci: rhythmic (the tune), author, paragraphs
//
// songci/ is read only with Options.IncludeCi. Prepare writes these files, which
// data.Open reads:
//
//	pretrain.jsonl, pretrain_eval.jsonl  text records, one poem each
//	sft.jsonl, sft_eval.jsonl            chat records, one user and one assistant turn
//	prompts.txt                          held-out user prompts separated by blank lines
//
// A pretraining record is the title and author, then one line per paragraph:
//
//	《靜夜思》 李白
//	牀前看月光，疑是地上霜。
//	舉頭望山月，低頭思故鄉。
//
// A ci uses its tune in place of the title. The chat records are of three kinds:
//
//	写一首题为《title》的诗。        → the poem's lines (Tang poems)
//	以《rhythmic》为词牌写一首词。   → the ci's lines (Song ci)
//	请用白话解释这首诗：\n<lines>    → the paraphrase (shuimotangshi)
//
// # Filtering
//
// The filters run in this order, and Stats counts each record under the first that
// rejects it. A Tang poem is skipped when its id is listed in quantangshi/error/, and a
// paraphrase record when its prologue is empty. Then a poem of any source is skipped when
// a line contains □ (a missing glyph), when a line contains a character that is neither
// a Han ideograph nor one of ，。？！；：、· (this drops the glyph descriptions in braces
// such as {汸番}), when it has no lines or a blank line, when its title is empty, is the
// fragment title 句 or contains 《 or 》, when its lines hold more than Options.MaxChars
// characters in all, and when its lines repeat an earlier eligible poem of the same
// source.
//
// # Selection and split
//
// Every step is deterministic, so the same corpus and Options give byte-identical files.
// Prepare orders the eligible poems of each source by a 64-bit key and keeps the first
// Options.MaxPoems Tang poems and Options.MaxCi ci. The key is the SplitMix64 finalizer
// applied to the FNV-1a hash of the poem's title, author and text, mixed with the seed. It
// does not use math/rand, whose sequences may change between Go releases, and the key
// of a poem does not depend on the other poems or the file order.
//
// The eval split is by title, so that no prompt of an eval file appears in a training
// file. Prepare orders the distinct titles of the selected poems (tunes for ci) by a
// second key and moves the first ceil(EvalFraction·n) titles, and every poem with them,
// to the eval files. The paraphrase records are split the same way over their own titles.
// Both files of a pair keep the selection order, which is already a shuffle.
//
// # Script
//
// The files keep each source's script, because the corpus ships no converter between
// traditional and simplified characters: Tang poems are traditional, and ci and
// paraphrases are simplified. The prompt templates are simplified, as modern readers
// write them. The same Tang poem can therefore appear in both scripts, once in
// quantangshi/ and once in shuimotangshi/, and the title split cannot match the two.
package demodata
