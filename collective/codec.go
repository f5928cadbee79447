package collective

import (
	"fmt"
	"sync"
	"unsafe"

	"google.golang.org/grpc/mem"
)

// frameCodec encodes Frame values in the protobuf encoding of ringtune.v1.Frame
// without copying payloads. The header goes in a small pooled buffer, and a large
// payload is handed to gRPC in place. A received payload stays in gRPC's own receive
// buffers until the operation has reduced it.
type frameCodec struct{}

// Name is "proto" because the bytes on the wire are the protobuf encoding of
// ringtune.v1.Frame; any protobuf client of the Collective service reads them.
func (frameCodec) Name() string { return "proto" }

// inlinePayload is the largest payload copied next to the header instead of being
// sent in place, because below it the copy is cheaper than tracking the release.
const inlinePayload = 16 << 10

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, fmt.Errorf("frame codec: cannot marshal %T", v)
	}
	pool := framePayloadPool
	inline := len(f.Payload) <= inlinePayload
	size := 64 + len(f.JobID) + len(f.Message)
	if inline {
		size += len(f.Payload)
	}
	// Ask for at least 1 KiB so that gRPC pools the buffer instead of dropping it.
	hb := pool.Get(max(size, 1<<10))
	*hb = appendHeader((*hb)[:0], f)
	f.handedOff = true
	if inline {
		*hb = append(*hb, f.Payload...)
		if f.release != nil {
			f.release.Release()
		}
		return mem.BufferSlice{mem.NewBuffer(hb, pool)}, nil
	}
	t := ticketPool.Get().(*ticket)
	t.data, t.rel = f.Payload, f.release
	return mem.BufferSlice{mem.NewBuffer(hb, pool), mem.NewBuffer(&t.data, ticketReturn{})}, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return fmt.Errorf("frame codec: cannot unmarshal into %T", v)
	}
	f.Release()
	f.reset()

	// The header is at most maxHeaderLen bytes; copy that much out to parse it.
	var scratch [maxHeaderLen]byte
	total := data.Len()
	n := 0
	for _, b := range data {
		n += copy(scratch[n:], b.ReadOnlyData())
		if n == len(scratch) {
			break
		}
	}
	headerLen, payloadLen, err := decodeHeader(scratch[:n], f)
	if err != nil {
		return err
	}
	if headerLen == n && n < total {
		return fmt.Errorf("frame header is longer than %d bytes", maxHeaderLen)
	}
	if uint64(total-headerLen) != payloadLen {
		return fmt.Errorf("frame: payload length %d does not match the %d bytes that follow the header", payloadLen, total-headerLen)
	}
	if payloadLen == 0 {
		return nil
	}
	skip := headerLen
	for _, b := range data {
		d := b.ReadOnlyData()
		if skip >= len(d) {
			skip -= len(d)
			continue
		}
		b.Ref()
		f.held = append(f.held, b)
		f.Data = append(f.Data, d[skip:])
		skip = 0
	}
	return nil
}

// ticket carries a zero-copy payload through gRPC. data must stay the first field:
// gRPC returns &t.data to ticketReturn.Put, which recovers t from that address.
type ticket struct {
	data []byte
	rel  releaser
}

var ticketPool = sync.Pool{New: func() any { return new(ticket) }}

// ticketReturn is the mem.BufferPool of zero-copy payloads. gRPC calls Put once it has
// written the payload to the connection or dropped it.
type ticketReturn struct{}

func (ticketReturn) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

func (ticketReturn) Put(p *[]byte) {
	t := (*ticket)(unsafe.Pointer(p))
	rel := t.rel
	t.data, t.rel = nil, nil
	ticketPool.Put(t)
	if rel != nil {
		rel.Release()
	}
}
