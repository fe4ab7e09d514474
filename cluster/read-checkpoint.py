#!/usr/bin/env python3
"""Reads a catdog-dist checkpoint with the Python standard library only.

    zstd -d ck/last.safetensors.zst -o last.safetensors
    python3 cluster/read-checkpoint.py last.safetensors [TENSOR]

Prints the metadata summary and the tensor names and shapes; with TENSOR, its first values.
The file is plain safetensors: an 8-byte little-endian header length, a JSON header, then
little-endian float32 tensors, so `safetensors.numpy.load_file` reads it too.
"""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return header, data[8 + length :]


def tensor(header, body, name):
    entry = header[name]
    begin, end = entry["data_offsets"]
    count = (end - begin) // 4
    return entry["shape"], list(struct.unpack("<%df" % count, body[begin:end]))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    header, body = read(sys.argv[1])
    meta = header.get("__metadata__", {})
    info = json.loads(meta.get("catdog", "{}"))
    print("format %s v%s, model %s at %spx, epoch %s, step %s, written by %s ranks" % (
        meta.get("format"), meta.get("format_version"), meta.get("model"), meta.get("image_size"),
        info.get("epoch"), info.get("step"), info.get("ranks")))
    names = sorted(k for k in header if k != "__metadata__")
    if len(sys.argv) > 2:
        shape, values = tensor(header, body, sys.argv[2])
        print(json.dumps({"name": sys.argv[2], "shape": shape, "values": values[:8], "count": len(values)}))
    else:
        for name in names:
            print("%-50s %s" % (name, header[name]["shape"]))


if __name__ == "__main__":
    main()
