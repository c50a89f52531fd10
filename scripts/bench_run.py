"""Times each workload on the backing files and through the mount, in
alternation, and prints a markdown table of throughputs and ratios."""
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np

ds, mnt, binary = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.geteuid() == 0


def drop_caches():
    if ROOT:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def best(fn, runs=3, cold=False):
    """Best of runs (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(runs):
        if cold:
            drop_caches()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_seq(path, bs=1 << 20):
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, bs):
            pass
    finally:
        os.close(fd)


def numpy_sum(path):
    a = np.memmap(path, dtype=np.float32, mode="r")
    return float(a.sum(dtype=np.float64))


def write_inplace(path, size=64 << 20):
    buf = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in range(0, size, len(buf)):
            os.pwrite(fd, buf, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def small_files(d):
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            f.read()


big = "cell,gene#X.array"
size = os.path.getsize(os.path.join(ds, big))
nsmall = len(os.listdir(os.path.join(ds, "small")))
rows = []


def bench(label, unit, amount, fn, cold=False, runs=3):
    direct = best(lambda: fn(ds), runs, cold)
    through = best(lambda: fn(mnt), runs, cold)
    rows.append((label, unit, amount / direct, amount / through, direct / through))


MB = 1e6
if ROOT:
    bench("array file, sequential read, cold cache (1 MiB reads)", "MB/s", size / MB,
          lambda root: read_seq(os.path.join(root, big)), cold=True)
bench("array file, sequential read, warm cache (1 MiB reads)", "MB/s", size / MB,
      lambda root: read_seq(os.path.join(root, big)))
bench("array file, numpy memmap sum, warm", "MB/s", size / MB,
      lambda root: numpy_sum(os.path.join(root, big)))
bench("array file, 64 MiB in-place pwrite + fsync", "MB/s", 64,
      lambda root: write_inplace(os.path.join(root, big)), runs=2)
bench("%d plain 1 KiB files, open+read+close" % nsmall, "files/s", nsmall,
      lambda root: small_files(os.path.join(root, "small")), runs=2)
# Documents through the mount against the same bytes as plain files on
# the backing file system (what a user would otherwise have to extract).
direct = best(lambda: small_files(os.path.join(ds, "small")), 2)
through = best(lambda: small_files(os.path.join(mnt, "docs")), 2)
rows.append(("%d 1 KiB documents of a docarray store, open+read+close (direct: the same bytes as plain files)" % nsmall,
             "files/s", nsmall / direct, nsmall / through, direct / through))

# Views: data.npy of the array (served from its mapping; every open of a
# view reads through the daemon, as a first read does) against reading
# the .array directly; embeddings.npy of a 100,000-document store
# (generated from the documents) against the same N x D array as a plain
# .npy on the backing file system.
direct = best(lambda: read_seq(os.path.join(ds, big)))
through = best(lambda: read_seq(os.path.join(mnt, ".arrayfs/views/cell,gene#X/data.npy")))
rows.append(("data.npy view of the array, sequential read (1 MiB reads; direct: the .array)", "MB/s",
             size / MB / direct, size / MB / through, direct / through))
esize = os.path.getsize(os.path.join(ds, "embeddings-direct.npy"))
direct = best(lambda: read_seq(os.path.join(ds, "embeddings-direct.npy")))
through = best(lambda: read_seq(os.path.join(mnt, ".arrayfs/views/emb/embeddings.npy")))
rows.append(("embeddings.npy of a 100,000-document store (direct: the same array as a plain .npy)", "MB/s",
             esize / MB / direct, esize / MB / through, direct / through))

# A read-only mount of the same dataset beside it: array readers pass
# through to the data file (the kernel reads it itself). First read after
# that mount, backing file in the page cache.
ro = mnt + "-ro"
os.makedirs(ro, exist_ok=True)
subprocess.run([binary, "mount", "--background", "-o", "ro", ds, ro], check=True)
try:
    direct = best(lambda: read_seq(os.path.join(ds, big)), 1)
    through = best(lambda: read_seq(os.path.join(ro, big)), 1)
    rows.append(("array file on a read-only mount (passthrough), first read after mount (1 MiB reads)", "MB/s",
                 size / MB / direct, size / MB / through, direct / through))
    bench("array file on a read-only mount, numpy memmap sum", "MB/s", size / MB,
          lambda root: numpy_sum(os.path.join(root, big)) if root == ds else numpy_sum(os.path.join(ro, big)))
finally:
    subprocess.run([binary, "umount", ro], check=True)

version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
print("Measured %s on %s (%s, %d CPUs), %s; best of 2-3 runs each, arrayfs and direct alternating."
      % (datetime.date.today().isoformat(), platform.node() or "this machine", platform.release(),
         os.cpu_count(), version))
print()
print("| workload | unit | direct | arrayfs | ratio |")
print("|---|---|---:|---:|---:|")
for label, unit, d, a, r in rows:
    print("| %s | %s | %.0f | %.0f | %.2f |" % (label, unit, d, a, r))
