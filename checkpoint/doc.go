// Package checkpoint reads and writes model weights in the safetensors format and in the
// Hugging Face directory layouts built on it: a single model.safetensors, or shards
// listed by model.safetensors.index.json.
//
// # Format
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// that map tensor names to {"dtype", "shape", "data_offsets": [begin, end]} plus an
// optional "__metadata__" map of strings, then the data section. Offsets count from
// the start of the data section, and elements are little-endian in row-major order.
// The reference is the huggingface/safetensors repository: its README and the checks
// in safetensors/src/tensor.rs.
//
// # Reading
//
// Open and OpenModel validate the whole header before they return, so a File or Model
// never hands out a range outside the file. The checks are those of the reference
// implementation: the header is at most MaxHeaderSize (100 MB) and valid UTF-8 JSON, may
// be padded with whitespace, names only known dtypes, and gives every tensor a shape
// whose size in bytes equals its data_offsets range. The ranges run from 0 without gaps
// or overlaps and end exactly at the end of the file. In addition, duplicate tensor
// names are rejected. Failures are *Error values that name the file and the tensor,
// say what is wrong and suggest a fix. Their Kind (ErrTruncated, ErrInvalidOffsets and
// so on) works with errors.Is.
//
// Tensor data is read on demand with ReadAt through a 1 MiB buffer, so a File keeps
// only its header in memory, and concurrent reads are safe. The package does not mmap
// files because a file truncated by another process while mapped would crash the
// reader with SIGBUS, where ReadAt returns ErrTruncated. ReadFloat32 converts F32,
// F16 and BF16 exactly, ReadBF16 keeps BF16 weights as bit patterns, and ReadRaw
// returns the stored bytes of any dtype.
//
// # Writing
//
// Write lays a file out as huggingface/safetensors' serialize_to_file does, and the tests
// compare its output with byte vectors from the reference tests. Tensors are sorted by
// descending dtype alignment, then by name, and the header is padded with spaces to a
// multiple of 8 bytes. Metadata keys are sorted, where the Rust writer emits them in
// hash-map order. The file is written to a
// temporary name, synced and renamed into place. Tensor data streams from a Source:
// FromFloat32 rounds to BF16 or F16 to nearest even, and FromTensor copies a tensor
// from an open checkpoint without holding it in memory. WriteModel splits tensors into
// shards as transformers' save_pretrained does and writes the index.
package checkpoint
