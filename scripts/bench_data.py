"""Writes the benchmark dataset: a 1 GiB float32 daf array, 20,000
small plain files, a docarray store of 20,000 documents of the same
size, written in docarray's layout (header.bin records of K=36 UTF-32
keys + p, r, end), and a store of 100,000 documents with a 128-float
embedding each (with the same embeddings as one plain .npy, the direct
reading of them)."""
import os
import sys

import numpy as np

d = sys.argv[1]
rows, cols = 1 << 18, 1024  # 1 GiB of float32
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


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def write_store(path, docs):
    header, body = bytearray(), bytearray()
    for key, doc in docs:
        start = len(body)
        body += doc
        p = start // 4096 * 4096
        header += key.encode("utf-32-le").ljust(4 * K, b"\0")
        header += np.array([p, start - p, start - p + len(doc)], dtype="<i8").tobytes()
    with open(os.path.join(path, "header.bin"), "wb") as f:
        f.write(header)
    with open(os.path.join(path, "body.bin"), "wb") as f:
        f.write(body)


def small_docs():
    for i in range(20000):
        key = "f%05d" % i
        raw = key.encode()
        pad = payload[: 1024 - 4 - len(raw) - 3]
        yield key, field(1, raw) + field(3, pad)


write_store(store, small_docs())

# 100,000 documents with an embedding each: DocumentProto{id, embedding:
# NdArrayProto{dense: DenseNdArrayProto{buffer, shape, dtype}}}.
N, D = 100000, 128
emb = np.random.default_rng(0).random((N, D), dtype=np.float32)
np.save(os.path.join(d, "embeddings-direct.npy"), emb)
store = os.path.join(d, "emb")
os.mkdir(store)


def emb_docs():
    for i in range(N):
        key = "e%06d" % i
        dense = field(1, emb[i].tobytes()) + field(2, varint(D)) + field(3, b"<f4")
        yield key, field(1, key.encode()) + field(19, field(1, dense))


write_store(store, emb_docs())
