package collective

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

func sampleFrame(payload []byte) *Frame {
	return &Frame{
		Kind: pb.FrameKind_FRAME_KIND_DATA, JobID: "job-7", Generation: 3, SrcRank: 2, DstRank: 3,
		WorldSize: 4, OpID: 99, Op: pb.Op_OP_ALL_REDUCE, Step: 5, Segment: 1, Offset: 1 << 20,
		Count: 1 << 24, DType: pb.WireDType_WIRE_D_TYPE_BFLOAT16, FaultRank: -1, Message: "m",
		FaultKind: pb.FaultKind_FAULT_KIND_PEER_STALLED, Reporter: 1, ChunkBytes: 1 << 20, SmallBytes: -1, Payload: payload,
	}
}

func TestFieldNumbersMatchProto(t *testing.T) {
	fields := (&pb.Frame{}).ProtoReflect().Descriptor().Fields()
	want := map[string]protoreflect.FieldNumber{
		"kind": fieldKind, "job_id": fieldJobID, "generation": fieldGeneration, "src_rank": fieldSrcRank,
		"dst_rank": fieldDstRank, "world_size": fieldWorldSize, "op_id": fieldOpID, "op": fieldOp,
		"step": fieldStep, "segment": fieldSegment, "offset": fieldOffset, "count": fieldCount,
		"dtype": fieldDType, "fault_rank": fieldFaultRank, "message": fieldMessage,
		"fault_kind": fieldFaultKind, "reporter_rank": fieldReporter, "chunk_bytes": fieldChunkBytes,
		"small_bytes": fieldSmallBytes, "payload": fieldPayload,
	}
	require.Equal(t, len(want), fields.Len(), "the proto has fields this codec does not know")
	for name, num := range want {
		fd := fields.ByName(protoreflect.Name(name))
		require.NotNil(t, fd, "field %s", name)
		assert.Equal(t, num, fd.Number(), "field %s", name)
	}
}

func TestEncodingIsProtobuf(t *testing.T) {
	payload := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	f := sampleFrame(payload)
	var m pb.Frame
	require.NoError(t, proto.Unmarshal(EncodeFrame(f), &m))
	assert.Equal(t, "job-7", m.GetJobId())
	assert.Equal(t, uint64(1<<20), m.GetOffset())
	assert.Equal(t, int32(-1), m.GetFaultRank())
	assert.Equal(t, payload, m.GetPayload())

	// And the other way: what a protobuf encoder writes, DecodeFrame reads.
	b, err := proto.Marshal(&m)
	require.NoError(t, err)
	var g Frame
	require.NoError(t, DecodeFrame(b, &g))
	assert.Equal(t, f.OpID, g.OpID)
	assert.Equal(t, f.FaultKind, g.FaultKind)
	assert.Equal(t, int32(-1), g.SmallBytes)
	assert.Equal(t, uint32(1<<20), g.ChunkBytes)
	assert.Equal(t, payload, g.Data[0])
}

func TestCodecUnmarshalSplitBuffers(t *testing.T) {
	payload := make([]byte, 50_000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	enc := EncodeFrame(sampleFrame(payload))
	// Cut the encoding at awkward places, as HTTP/2 data frames do.
	for _, cuts := range [][]int{{1}, {5, 17}, {len(enc) - 1}, {16384, 32768}} {
		var bs mem.BufferSlice
		prev := 0
		for _, c := range append(cuts, len(enc)) {
			bs = append(bs, mem.SliceBuffer(enc[prev:c]))
			prev = c
		}
		var f Frame
		require.NoError(t, frameCodec{}.Unmarshal(bs, &f), "cuts %v", cuts)
		var got []byte
		for _, d := range f.Data {
			got = append(got, d...)
		}
		assert.Equal(t, payload, got, "cuts %v", cuts)
		assert.Equal(t, uint64(99), f.OpID)
		f.Release()
	}
}

func TestDecodeRejectsBadFrames(t *testing.T) {
	good := EncodeFrame(sampleFrame([]byte{1, 2, 3, 4}))
	cases := map[string][]byte{
		"truncated payload": good[:len(good)-1],
		"extra byte":        append(append([]byte{}, good...), 0),
		"bad tag":           {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"unknown field":     {0x98, 0x06, 0x01},             // field 99, varint
		"fixed64 field":     {0x09, 1, 2, 3, 4, 5, 6, 7, 8}, // field 1, wire type 1
		"huge job id":       append([]byte{0x12, 0x80, 0x08}, make([]byte, 1024)...),
	}
	for name, b := range cases {
		var f Frame
		assert.Error(t, DecodeFrame(b, &f), name)
	}
}

// FuzzDecodeFrame feeds arbitrary bytes to both decoders: they may reject them but
// must not panic, and whatever they accept must encode back to an equal frame.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(EncodeFrame(sampleFrame(nil)))
	f.Add(EncodeFrame(sampleFrame([]byte{9, 8, 7, 6})))
	f.Add(EncodeFrame(&Frame{Kind: pb.FrameKind_FRAME_KIND_ABORT, FaultRank: 3, Message: "lost"}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		err := DecodeFrame(b, &fr)
		var viaCodec Frame
		cut := len(b) / 3
		codecErr := frameCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:cut]), mem.SliceBuffer(b[cut:])}, &viaCodec)
		if (err == nil) != (codecErr == nil) && len(b) <= maxHeaderLen {
			t.Fatalf("decoders disagree: DecodeFrame %v, codec %v", err, codecErr)
		}
		if err != nil {
			return
		}
		var payload []byte
		for _, d := range fr.Data {
			payload = append(payload, d...)
		}
		fr.Payload = payload
		var again Frame
		if err := DecodeFrame(EncodeFrame(&fr), &again); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if again.OpID != fr.OpID || again.JobID != fr.JobID || again.Offset != fr.Offset || again.FaultRank != fr.FaultRank {
			t.Fatalf("round trip changed the header: %+v vs %+v", again, fr)
		}
		viaCodec.Release()
	})
}

// bf16Reference rounds through float64 distances, independently of toBF16's bit trick.
func bf16Reference(x float32) float32 {
	if math.IsNaN(float64(x)) {
		return x
	}
	u := math.Float32bits(x)
	lo := math.Float32frombits(u &^ 0xffff)
	hi := math.Float32frombits((u &^ 0xffff) + 0x10000)
	dl := math.Abs(float64(x) - float64(lo))
	hi64 := float64(hi)
	if math.IsInf(hi64, 0) {
		// Rounding past the largest finite bf16 goes to infinity when x is nearer to
		// 2^128, the next value the format would have with an unbounded exponent.
		hi64 = math.Copysign(math.Ldexp(1, 128), hi64)
	}
	dh := math.Abs(float64(x) - hi64)
	switch {
	case dl < dh:
		return lo
	case dh < dl:
		return hi
	case (u>>16)&1 == 0:
		return lo
	default:
		return hi
	}
}

func TestBF16RoundsToNearestEven(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	cases := []float32{0, -0, 1, -1, 1.00390625, 1.01171875, 3.14159, 1e-40, -1e-40, math.MaxFloat32,
		math.SmallestNonzeroFloat32, float32(math.Inf(1)), float32(math.Inf(-1))}
	for i := 0; i < 200_000; i++ {
		cases = append(cases, math.Float32frombits(rng.Uint32()))
	}
	for _, x := range cases {
		got := math.Float32frombits(uint32(toBF16(x)) << 16)
		if math.IsNaN(float64(x)) {
			assert.True(t, math.IsNaN(float64(got)), "NaN %08x became %v", math.Float32bits(x), got)
			continue
		}
		want := bf16Reference(x)
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("toBF16(%g = %08x) = %08x, want %08x", x, math.Float32bits(x), math.Float32bits(got), math.Float32bits(want))
		}
	}
}

func TestAddF32MatchesGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{0, 1, 31, 32, 33, 64, 1000, 4099} {
		for _, misalign := range []int{0, 1, 3} {
			dst := make([]float32, n)
			ref := make([]float32, n)
			raw := make([]byte, 4*n+misalign)
			src := raw[misalign:]
			for i := range dst {
				dst[i] = float32(rng.NormFloat64())
				ref[i] = dst[i]
			}
			for i := range src {
				src[i] = byte(rng.UintN(256))
			}
			addF32(dst, src)
			addF32Generic(ref, src)
			for i := range dst {
				if math.Float32bits(dst[i]) != math.Float32bits(ref[i]) && !(math.IsNaN(float64(dst[i])) && math.IsNaN(float64(ref[i]))) {
					t.Fatalf("n %d misalign %d element %d: %v vs %v", n, misalign, i, dst[i], ref[i])
				}
			}
		}
	}
}

func TestApplyWireAcrossSplits(t *testing.T) {
	values := []float32{1.5, -2.25, 3, 1e10, -7}
	for _, dtype := range []WireDType{Float32, BFloat16} {
		var wire []byte
		if dtype == Float32 {
			wire = append(wire, float32Bytes(values)...)
		} else {
			wire = make([]byte, 2*len(values))
			encodeBF16(wire, values)
		}
		for cut1 := 0; cut1 <= len(wire); cut1++ {
			for cut2 := cut1; cut2 <= len(wire); cut2++ {
				dst := []float32{10, 10, 10, 10, 10}
				applyWire(dst, [][]byte{wire[:cut1], wire[cut1:cut2], wire[cut2:]}, dtype, combineAdd)
				for i, v := range values {
					want := 10 + v
					if dtype == BFloat16 {
						want = 10 + bf16Reference(v)
					}
					require.Equal(t, want, dst[i], "dtype %v cuts %d,%d element %d", dtype, cut1, cut2, i)
				}
			}
		}
	}
}

func TestEncodeBF16MatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	src := []float32{0, 1, -1, float32(math.Inf(1)), float32(math.NaN()), math.MaxFloat32, 1e-40}
	for i := 0; i < 100_000; i++ {
		src = append(src, math.Float32frombits(rng.Uint32()))
	}
	out := make([]byte, 2*len(src)+1)[1:] // unaligned on purpose
	encodeBF16(out, src)
	rounded := append([]float32(nil), src...)
	roundBF16(rounded)
	for i, x := range src {
		want := toBF16(x)
		got := uint16(out[2*i]) | uint16(out[2*i+1])<<8
		require.Equal(t, want, got, "element %d (%08x)", i, math.Float32bits(x))
		require.Equal(t, uint32(want)<<16, math.Float32bits(rounded[i]), "roundBF16 element %d", i)
	}
}

func TestBF16KernelsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 1000, 4099} {
		for _, misalign := range []int{0, 1} {
			raw := make([]byte, 2*n+misalign)
			src := raw[misalign:]
			for i := range src {
				src[i] = byte(rng.UintN(256))
			}
			base := make([]float32, n)
			for i := range base {
				base[i] = float32(rng.NormFloat64())
			}
			got := append([]float32(nil), base...)
			want := append([]float32(nil), base...)
			addBF16(got, src)
			addBF16Generic(want, src)
			requireSameBits(t, want, got, "addBF16 n %d misalign %d", n, misalign)

			copyBF16(got, src)
			copyBF16Generic(want, src)
			requireSameBits(t, want, got, "copyBF16 n %d misalign %d", n, misalign)
		}
	}
}

func requireSameBits(t *testing.T, want, got []float32, format string, args ...any) {
	t.Helper()
	for i := range want {
		w, g := math.Float32bits(want[i]), math.Float32bits(got[i])
		if w != g && !(math.IsNaN(float64(want[i])) && math.IsNaN(float64(got[i]))) {
			t.Fatalf(format+": element %d: %08x vs %08x", append(args, i, w, g)...)
		}
	}
}
