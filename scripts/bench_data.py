"""Writes the benchmark dataset: a 512 MiB float32 daf array, 20,000
small plain files, and a docarray store of 20,000 documents of the same
size, written in docarray's layout (header.bin records of K=36 UTF-32
keys + p, r, end)."""
import os
import sys

import numpy as np

d = sys.argv[1]
rows, cols = 1 << 17, 1024  # 512 MiB of float32
with open(os.path.join(d, "cell,gene#X.yaml"), "w") as f:
    f.write("dtype: float32\nshape:\n- %d\n- %d\nversion:\n- 1\n- 0\n" % (rows, cols))
block = np.arange(cols * 1024, dtype=np.float32)
with open(os.path.join(d, "cell,gene#X.array"), "wb") as f:
    for _ in range(rows // 1024):
        f.write(block.tobytes())
small = os.path.join(d, "small")
os.mkdir(small)
payload = os.urandom(1024)
for i in range(20000):
    with open(os.path.join(small, "f%05d" % i), "wb") as f:
        f.write(payload)

# The same 20,000 files as documents: DocumentProto{id: key, buffer: ...}.
store = os.path.join(d, "docs")
os.mkdir(store)
K = 36
header, body = bytearray(), bytearray()
for i in range(20000):
    key = "f%05d" % i
    raw = key.encode()
    pad = payload[: 1024 - 4 - len(raw) - 3]
    doc = b"\x0a" + bytes([len(raw)]) + raw + b"\x1a" + bytes([len(pad) & 0x7F | 0x80, len(pad) >> 7]) + pad
    start = len(body)
    body += doc
    p = start // 4096 * 4096
    header += key.encode("utf-32-le").ljust(4 * K, b"\0")
    header += np.array([p, start - p, start - p + len(doc)], dtype="<i8").tobytes()
with open(os.path.join(store, "header.bin"), "wb") as f:
    f.write(header)
with open(os.path.join(store, "body.bin"), "wb") as f:
    f.write(body)
