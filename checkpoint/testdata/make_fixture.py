#!/usr/bin/env python3
"""Write torch_fixture.safetensors and torch_fixture.json for the checkpoint tests.

The safetensors file is built by hand with struct and json, following the format in
the huggingface/safetensors README, from tensors that PyTorch converted. The Go tests
check that the reader returns the values of those tensors. The JSON file records, for
every tensor, its dtype, shape, raw bytes and the float32 bit patterns that PyTorch's
.float() returns. For the writer it also records PyTorch's float32 to bfloat16 and
float16 rounding of the same inputs.

Run with Debian's python3-torch (tested with 1.13):
    /usr/bin/python3 checkpoint/testdata/make_fixture.py
The output is deterministic, so rerunning it must leave the committed files unchanged.
"""

import json
import math
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

# Values that probe rounding and special cases. Comments give the binary16 and
# bfloat16 behaviour that each value tests.
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    1.0 / 3.0,
    math.pi,
    65504.0,  # largest float16
    65519.99,  # rounds down to 65504 in float16
    65520.0,  # halfway to 65536: ties to even, float16 infinity
    2.0**-14,  # smallest normal float16
    2.0**-14 - 2.0**-24,  # largest subnormal float16
    2.0**-24,  # smallest subnormal float16
    2.0**-25,  # halfway to zero: ties to even, float16 zero
    1.5 * 2.0**-25,  # rounds up to the smallest subnormal
    3 * 2.0**-25,  # halfway between 1 and 2 subnormal steps: ties to even 2
    1.0 + 2.0**-8,  # bfloat16 tie: rounds down to 1
    1.0 + 3 * 2.0**-8,  # bfloat16 tie: rounds up to the even 1 + 2^-6
    1.0 + 2.0**-11,  # float16 tie: rounds down to 1
    1.0 + 3 * 2.0**-11,  # float16 tie: rounds up to the even 1 + 2^-9
    3.3895314e38,  # largest bfloat16
    3.4028234e38,  # largest float32: rounds to bfloat16 infinity
    1e-40,  # float32 subnormal: float16 zero, bfloat16 subnormal
    1e-45,  # smallest float32 subnormal
    -2.5e-6,
    float("inf"),
    float("-inf"),
    float("nan"),
    -float("nan"),
]


def f32_bits(t):
    """Return the uint32 bit patterns of a float32 tensor."""
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).tolist()]


def u16_bits(t):
    """Return the uint16 bit patterns of a float16 or bfloat16 tensor."""
    return [v & 0xFFFF for v in t.contiguous().view(torch.int16).tolist()]


def raw_bytes(t):
    """Return the little-endian bytes of a tensor (this script runs on x86)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.contiguous().view(torch.int16).numpy().tobytes()
    return t.contiguous().numpy().tobytes()


def main():
    torch.manual_seed(20240601)
    special = torch.tensor(SPECIAL, dtype=torch.float32)
    normal = torch.randn(32, dtype=torch.float32) * 3
    source = torch.cat([special, normal, torch.zeros(64 - len(SPECIAL) - 32)])
    assert source.numel() == 64

    tensors = {
        "model.weights.f32": ("F32", source.reshape(16, 4)),
        "model.weights.bf16": ("BF16", source.to(torch.bfloat16).reshape(8, 8)),
        "model.weights.f16": ("F16", source.to(torch.float16).reshape(4, 16)),
        "ids.i64": ("I64", torch.tensor([-1, 0, 2**40 + 3], dtype=torch.int64)),
        "mask.u8": ("U8", torch.tensor([0, 1, 255, 7, 128], dtype=torch.uint8)),
        "scalar.f64": ("F64", torch.tensor(math.e, dtype=torch.float64)),
        "empty.f32": ("F32", torch.zeros(0, 3, dtype=torch.float32)),
    }

    # Lay the data out in name order, not safetensors' dtype-alignment order, so the
    # reader sees a layout that the Go writer would not produce.
    header = {"__metadata__": {"format": "pt", "producer": "make_fixture.py"}}
    data = bytearray()
    expected = {"tensors": {}}
    for name in sorted(tensors):
        dtype, t = tensors[name]
        raw = raw_bytes(t)
        header[name] = {
            "dtype": dtype,
            "shape": list(t.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
        entry = {"dtype": dtype, "shape": list(t.shape), "raw_hex": raw.hex()}
        if t.is_floating_point() and dtype != "F64":
            entry["float32_bits"] = f32_bits(t.float().flatten())
        expected["tensors"][name] = entry

    expected["rounding"] = {
        "f32_bits": f32_bits(source),
        "bf16_bits": u16_bits(source.to(torch.bfloat16)),
        "f16_bits": u16_bits(source.to(torch.float16)),
    }
    expected["metadata"] = header["__metadata__"]
    expected["torch_version"] = torch.__version__

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(os.path.join(HERE, "torch_fixture.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        f.write(data)
    with open(os.path.join(HERE, "torch_fixture.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
