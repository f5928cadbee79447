//go:build !amd64

package cpu

func detectWidenBF16() widenBF16Func {
	return widenBF16Generic
}
