package peft

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// pyFloat is a number that Python holds as a float, so json.dumps writes it with a
// decimal point or an exponent: 0.0, 0.05, 1e-05.
type pyFloat float64

// pyObject is a JSON object whose keys are written sorted, as json.dumps(sort_keys=True)
// writes them.
type pyObject map[string]any

// encodePython serializes v as Python's json.dumps(v, indent=2, sort_keys=True) does
// with its defaults (ensure_ascii=True, no final newline). v may contain nil, bool, int,
// pyFloat, string, []string, []int, []any and pyObject.
func encodePython(v any) string {
	var b strings.Builder
	writePython(&b, v, 0)
	return b.String()
}

func writePython(b *strings.Builder, v any, depth int) {
	newline := func(d int) {
		b.WriteByte('\n')
		b.WriteString(strings.Repeat("  ", d))
	}
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case pyFloat:
		b.WriteString(pythonFloatRepr(float64(v)))
	case string:
		writePythonString(b, v)
	case []string:
		writePython(b, toAny(v), depth)
	case []int:
		writePython(b, toAny(v), depth)
	case []any:
		if len(v) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteByte('[')
		for i, item := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			writePython(b, item, depth+1)
		}
		newline(depth)
		b.WriteByte(']')
	case pyObject:
		if len(v) == 0 {
			b.WriteString("{}")
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys) // Python sorts str keys by code point, Go strings by UTF-8 bytes: the same order
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			writePythonString(b, k)
			b.WriteString(": ")
			writePython(b, v[k], depth+1)
		}
		newline(depth)
		b.WriteByte('}')
	default:
		panic(fmt.Sprintf("peft: encodePython cannot encode %T", v))
	}
}

func toAny[T any](values []T) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

// writePythonString writes s as json.dumps does with ensure_ascii=True: short escapes
// for quote, backslash and \b \f \n \r \t, \u00XX for other control characters, and
// \uXXXX (a surrogate pair above U+FFFF) for every non-ASCII character.
func writePythonString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			switch {
			case r < 0x20 || (r >= 0x7f && r < 0x10000):
				fmt.Fprintf(b, `\u%04x`, r)
			case r >= 0x10000:
				hi, lo := utf16.EncodeRune(r)
				fmt.Fprintf(b, `\u%04x\u%04x`, hi, lo)
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pythonFloatRepr formats f as Python's repr(float): the shortest digits that round
// trip, in positional notation when the decimal exponent is in [-5, 16), otherwise in
// exponent notation with at least two exponent digits, and ".0" added to integers.
func pythonFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	sci := strconv.FormatFloat(f, 'e', -1, 64)
	exponent, _ := strconv.Atoi(sci[strings.IndexByte(sci, 'e')+1:])
	if exponent < -4 || exponent >= 16 {
		return sci
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsRune(s, '.') {
		s += ".0"
	}
	return s
}
