"""Writes the benchmark dataset: a 512 MiB float32 daf array, a sparse
one, and 20,000 small plain files."""
import os
import sys

import numpy as np

d = sys.argv[1]
rows, cols = 1 << 17, 1024  # 512 MiB of float32
a = np.lib.format.open_memmap  # noqa: F401 (numpy present)
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
