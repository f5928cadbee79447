package cpu

import (
	"testing"

	"golang.org/x/sys/cpu"
)

func TestWidenBF16AVX512(t *testing.T) {
	if !cpu.X86.HasAVX512F {
		t.Skip("the CPU lacks AVX512F")
	}
	requireWidensAllBF16(t, widenBF16WithAVX512)
}

func TestWidenBF16AVX2(t *testing.T) {
	if !cpu.X86.HasAVX2 {
		t.Skip("the CPU lacks AVX2")
	}
	requireWidensAllBF16(t, widenBF16WithAVX2)
}
