package collective

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// Frame is one message of a link stream. Its fields mirror ringtune.v1.Frame. The
// payload stays out of the struct's own memory so that neither side copies it. On
// send it points at the caller's buffer or a staging buffer, and on receive at the
// transport's receive buffers.
type Frame struct {
	Kind       pb.FrameKind
	JobID      string
	Generation uint64
	SrcRank    uint32
	DstRank    uint32
	WorldSize  uint32
	OpID       uint64
	Op         pb.Op
	Step       uint32
	Segment    uint32
	Offset     uint64 // elements from the start of the segment
	Count      uint64 // elements in the whole operation buffer
	DType      pb.WireDType
	FaultRank  int32
	Message    string
	FaultKind  pb.FaultKind
	// Reporter is the rank that detected the failure an ABORT frame reports.
	Reporter uint32
	// ChunkBytes and SmallBytes carry a HELLO sender's Config values.
	ChunkBytes uint32
	SmallBytes int32

	// Payload is the outgoing payload; a receiver reads Data instead.
	Payload []byte
	// release, when set, is called once the transport no longer reads Payload, also
	// when the send fails. NOTE: a link torn down after a failure may drop queued
	// payloads without calling it, so operations that failed never wait for it.
	release releaser

	// handedOff is set by the transport once it has taken over the duty to release.
	handedOff bool

	// Data holds the received payload as one or more byte slices in wire order.
	Data [][]byte
	// held are the transport's buffers behind Data, freed by Release.
	held mem.BufferSlice
}

// Release returns the received payload buffers to the transport. Data is invalid after.
func (f *Frame) Release() {
	for i, b := range f.held {
		b.Free()
		f.held[i] = nil
	}
	f.held = f.held[:0]
	f.Data = f.Data[:0]
}

// PayloadLen returns the number of payload bytes of a received frame.
func (f *Frame) PayloadLen() int {
	n := 0
	for _, b := range f.Data {
		n += len(b)
	}
	return n
}

// reset clears every header field but keeps the capacity of Data and held.
func (f *Frame) reset() {
	data, held := f.Data[:0], f.held[:0]
	*f = Frame{Data: data, held: held}
}

// Field numbers of ringtune.v1.Frame. A test checks them against the generated descriptor.
const (
	fieldKind       = 1
	fieldJobID      = 2
	fieldGeneration = 3
	fieldSrcRank    = 4
	fieldDstRank    = 5
	fieldWorldSize  = 6
	fieldOpID       = 7
	fieldOp         = 8
	fieldStep       = 9
	fieldSegment    = 10
	fieldOffset     = 11
	fieldCount      = 12
	fieldDType      = 13
	fieldFaultRank  = 14
	fieldMessage    = 15
	fieldFaultKind  = 16
	fieldReporter   = 17
	fieldChunkBytes = 18
	fieldSmallBytes = 19
	fieldPayload    = 20

	// maxHeaderLen bounds the encoded header: every varint field at its maximum width,
	// the strings at their limits and the payload's tag and length.
	maxHeaderLen = 20*11 + maxJobIDLen + maxMessageLen
	// maxJobIDLen is the longest job id accepted, in bytes.
	maxJobIDLen = 128
	// maxMessageLen is the longest ABORT or HELLO message accepted, in bytes.
	maxMessageLen = 512
)

// appendHeader encodes every field but the payload bytes, ending with the payload's tag
// and length when the frame has a payload. The result is a valid prefix of the protobuf
// encoding of ringtune.v1.Frame; the payload bytes follow it on the wire.
func appendHeader(b []byte, f *Frame) []byte {
	appendVarint := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	appendString := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}

	appendVarint(fieldKind, uint64(f.Kind))
	appendString(fieldJobID, f.JobID)
	appendVarint(fieldGeneration, f.Generation)
	appendVarint(fieldSrcRank, uint64(f.SrcRank))
	appendVarint(fieldDstRank, uint64(f.DstRank))
	appendVarint(fieldWorldSize, uint64(f.WorldSize))
	appendVarint(fieldOpID, f.OpID)
	appendVarint(fieldOp, uint64(f.Op))
	appendVarint(fieldStep, uint64(f.Step))
	appendVarint(fieldSegment, uint64(f.Segment))
	appendVarint(fieldOffset, f.Offset)
	appendVarint(fieldCount, f.Count)
	appendVarint(fieldDType, uint64(f.DType))
	// int32 fields use the sign-extended 64-bit varint form, as protobuf encoders do.
	appendVarint(fieldFaultRank, uint64(int64(f.FaultRank)))
	appendString(fieldMessage, f.Message)
	appendVarint(fieldFaultKind, uint64(f.FaultKind))
	appendVarint(fieldReporter, uint64(f.Reporter))
	appendVarint(fieldChunkBytes, uint64(f.ChunkBytes))
	appendVarint(fieldSmallBytes, uint64(int64(f.SmallBytes)))
	if len(f.Payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(f.Payload)))
	}
	return b
}

// decodeHeader parses the header fields at the start of b into f and returns the
// length of the header and the payload length announced by it. The payload must be
// the last field; b may end anywhere after the payload's length prefix.
func decodeHeader(b []byte, f *Frame) (headerLen int, payloadLen uint64, err error) {
	pos := 0
	for pos < len(b) {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return 0, 0, fmt.Errorf("frame header: invalid tag at byte %d: %w", pos, protowire.ParseError(n))
		}
		pos += n
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b[pos:])
			if n < 0 {
				return 0, 0, fmt.Errorf("frame header: field %d: invalid varint: %w", num, protowire.ParseError(n))
			}
			pos += n
			if err := setVarintField(f, num, v); err != nil {
				return 0, 0, err
			}
		case protowire.BytesType:
			length, n := protowire.ConsumeVarint(b[pos:])
			if n < 0 {
				return 0, 0, fmt.Errorf("frame header: field %d: invalid length: %w", num, protowire.ParseError(n))
			}
			pos += n
			if num == fieldPayload {
				return pos, length, nil
			}
			limit := uint64(maxMessageLen)
			if num == fieldJobID {
				limit = maxJobIDLen
			}
			if num != fieldJobID && num != fieldMessage {
				return 0, 0, fmt.Errorf("frame header: unexpected length-delimited field %d", num)
			}
			if length > limit {
				return 0, 0, fmt.Errorf("frame header: field %d: length %d exceeds the limit of %d bytes", num, length, limit)
			}
			if length > uint64(len(b)-pos) {
				return 0, 0, fmt.Errorf("frame header: field %d: length %d runs past the frame end", num, length)
			}
			s := string(b[pos : pos+int(length)])
			pos += int(length)
			if num == fieldJobID {
				f.JobID = s
			} else {
				f.Message = s
			}
		default:
			return 0, 0, fmt.Errorf("frame header: field %d has unsupported wire type %d", num, typ)
		}
	}
	return pos, 0, nil
}

func setVarintField(f *Frame, num protowire.Number, v uint64) error {
	small := func() (uint32, error) {
		if v > 1<<31 {
			return 0, fmt.Errorf("frame header: field %d: value %d out of range", num, v)
		}
		return uint32(v), nil
	}
	var err error
	switch num {
	case fieldKind:
		var k uint32
		k, err = small()
		f.Kind = pb.FrameKind(k)
	case fieldGeneration:
		f.Generation = v
	case fieldSrcRank:
		f.SrcRank, err = small()
	case fieldDstRank:
		f.DstRank, err = small()
	case fieldWorldSize:
		f.WorldSize, err = small()
	case fieldOpID:
		f.OpID = v
	case fieldOp:
		var op uint32
		op, err = small()
		f.Op = pb.Op(op)
	case fieldStep:
		f.Step, err = small()
	case fieldSegment:
		f.Segment, err = small()
	case fieldOffset:
		f.Offset = v
	case fieldCount:
		f.Count = v
	case fieldDType:
		var d uint32
		d, err = small()
		f.DType = pb.WireDType(d)
	case fieldFaultRank:
		r := int64(v)
		if r < -1 || r > 1<<30 {
			return fmt.Errorf("frame header: fault_rank %d out of range", r)
		}
		f.FaultRank = int32(r)
	case fieldFaultKind:
		var k uint32
		k, err = small()
		f.FaultKind = pb.FaultKind(k)
	case fieldReporter:
		f.Reporter, err = small()
	case fieldChunkBytes:
		f.ChunkBytes, err = small()
	case fieldSmallBytes:
		r := int64(v)
		if r < -(1<<31) || r > 1<<31-1 {
			return fmt.Errorf("frame header: small_bytes %d out of range", r)
		}
		f.SmallBytes = int32(r)
	default:
		return fmt.Errorf("frame header: unknown varint field %d", num)
	}
	return err
}

// DecodeFrame parses a whole encoded frame held in one byte slice. The payload of the
// result aliases b. Transports that receive the frame in pieces use decodeHeader
// directly.
func DecodeFrame(b []byte, f *Frame) error {
	f.reset()
	n, payloadLen, err := decodeHeader(b, f)
	if err != nil {
		return err
	}
	rest := uint64(len(b) - n)
	if rest != payloadLen {
		return fmt.Errorf("frame: payload length %d does not match the %d bytes that follow the header", payloadLen, rest)
	}
	if payloadLen > 0 {
		f.Data = append(f.Data, b[n:])
	}
	return nil
}

// EncodeFrame returns the complete encoding of f, payload included. The hot path of
// the gRPC transport sends the header and the payload as separate buffers instead.
func EncodeFrame(f *Frame) []byte {
	b := appendHeader(make([]byte, 0, 64+len(f.Payload)), f)
	return append(b, f.Payload...)
}
