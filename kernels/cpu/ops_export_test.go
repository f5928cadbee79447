package cpu

// SetTileSizes overrides the attention tiles and the block size of BF16
// operands, so that tests on small tensors cross block boundaries.
func SetTileSizes(b *Backend, attentionQueryBlock, attentionKeyBlock, bf16BlockFloats int) {
	b.attentionQueryBlock = attentionQueryBlock
	b.attentionKeyBlock = attentionKeyBlock
	b.bf16BlockFloats = bf16BlockFloats
}
