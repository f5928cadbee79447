#!/usr/bin/env python3
"""Read a safetensors file by hand with struct, json and PyTorch, and print its tensors.

The Go tests run this on files that the Go writer produced. It checks that a reader
that follows the huggingface/safetensors README and uses PyTorch's dtypes reads the
values that were written. It prints one JSON object that maps each tensor name to
its dtype, its shape and the uint32 bit patterns of tensor.float().

Usage: /usr/bin/python3 read_with_torch.py FILE
"""

import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def main(path):
    with open(path, "rb") as f:
        content = f.read()
    (n,) = struct.unpack("<Q", content[:8])
    header = json.loads(content[8 : 8 + n].decode("utf-8"))
    data = content[8 + n :]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        if end > begin:
            t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype)
        else:
            t = torch.empty(0, dtype=dtype)
        t = t.reshape(entry["shape"])
        bits = t.float().flatten().view(torch.int32).tolist()
        out[name] = {
            "dtype": entry["dtype"],
            "shape": list(t.shape),
            "float32_bits": [b & 0xFFFFFFFF for b in bits],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
