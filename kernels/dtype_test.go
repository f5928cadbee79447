package kernels_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/ringtune/ringtune/kernels"
)

func TestBF16FromFloat32Rounding(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   uint32 // float32 bits
		want uint16
	}{
		{"exact", 0x3f800000, 0x3f80},
		{"below half rounds down", 0x3f807fff, 0x3f80},
		{"half to even stays", 0x3f808000, 0x3f80},
		{"half to even rounds up", 0x3f818000, 0x3f82},
		{"above half rounds up", 0x3f808001, 0x3f81},
		{"negative", 0xbf808001, 0xbf81},
		{"max float32 overflows to Inf", 0x7f7fffff, 0x7f80},
		{"Inf", 0x7f800000, 0x7f80},
		{"smallest subnormal rounds to zero", 0x00000001, 0x0000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, kernels.BF16FromFloat32(math.Float32frombits(tc.in)))
		})
	}
}

func TestBF16FromFloat32KeepsNaN(t *testing.T) {
	// A NaN whose payload sits only in the low 16 bits would round to Inf
	// without the quiet bit.
	got := kernels.BF16FromFloat32(math.Float32frombits(0x7f800001))
	assert.True(t, math.IsNaN(float64(kernels.Float32FromBF16(got))), "bits %#04x", got)
	got = kernels.BF16FromFloat32(math.Float32frombits(0xffc00000))
	assert.Equal(t, uint16(0xffc0), got)
}

func TestFloat32FromBF16IsExact(t *testing.T) {
	for _, bits := range []uint16{0x0000, 0x3f80, 0xc049, 0x0001, 0x7f7f} {
		f := kernels.Float32FromBF16(bits)
		assert.Equal(t, bits, kernels.BF16FromFloat32(f), "bits %#04x", bits)
	}
}

func TestDTypeNames(t *testing.T) {
	assert.Equal(t, "F32", kernels.F32.String())
	assert.Equal(t, "BF16", kernels.BF16.String())
	assert.Equal(t, "I32", kernels.I32.String())
	assert.Equal(t, "DType(0)", kernels.DType(0).String())
	assert.Equal(t, 2, kernels.BF16.Size())
	assert.False(t, kernels.DType(0).Valid())
}
