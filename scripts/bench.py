"""The arrayfs benchmark (scripts/bench): every case against arrayfs and,
in the same run, against the same bytes read from the backing files, the
ideal go-fuse file system (../shared/peers/idealfs, plain and -noopen) for
small files, and go-fuse's loopback example for writes. Each case runs
--runs times (median), the systems alternating. Prints one table of
absolute figures and ratios; --json FILE writes it as JSON.

Timing on a shared machine is noisy: compare the ratios, measured in one
run, not absolute figures across runs."""
import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--work", required=True)
p.add_argument("--bin", required=True, help="directory of arrayfs, idealfs, loopback")
p.add_argument("--quick", action="store_true", help="small sizes, under a minute")
p.add_argument("--big", action="store_true", help="also a store of 10,000,000 documents")
p.add_argument("--json", help="write the results there")
p.add_argument("--array-mib", type=int)
p.add_argument("--docs", type=int)
p.add_argument("--runs", type=int)
p.add_argument("--only", help="comma-separated sections to run (arrays, documents, listing, writes, scale); all by default")
a = p.parse_args()
ARRAY_MIB = a.array_mib or (64 if a.quick else 2048)
NDOCS = a.docs or (2000 if a.quick else 100_000)
RUNS = a.runs or (3 if a.quick else 5)
NCREATE = 500 if a.quick else 20_000
NDIRDB = 300 if a.quick else 10_000
NSCALE = 20_000 if a.quick else 1_000_000
W, B = a.work, a.bin
ARRAYFS, IDEALFS, LOOPBACK, FUSEREF = (os.path.join(B, n) for n in ("arrayfs", "idealfs", "loopback", "fuseref"))
ROOT = os.geteuid() == 0
results = []


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def alternate(fns, runs=RUNS):
    """The median of runs runs of each system, the systems taking turns."""
    vals = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            vals[k].append(fn())
    print("    runs: " + "; ".join("%s %s" % (k, " ".join("%.4g" % x for x in v)) for k, v in vals.items()), file=sys.stderr)
    return {k: statistics.median(v) for k, v in vals.items()}


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


T0 = time.time()


SECTIONS = ("arrays", "documents", "listing", "writes", "scale")
ONLY = set(a.only.split(",")) if a.only else set(SECTIONS)
if ONLY - set(SECTIONS):
    raise SystemExit("--only: unknown section %s" % ", ".join(sorted(ONLY - set(SECTIONS))))


def wanted(name):
    return name in ONLY


def section(name):
    print("%s (at %.0f s)" % (name, time.time() - T0), file=sys.stderr)


def row(case, unit, values, target=None, higher=True, ref=None):
    """values: system -> figure. The ratio says how arrayfs does against
    the reference (ref, else the first other system): arrayfs / reference
    where more is better, reference / arrayfs where less is; the target
    is met when the ratio is at least it."""
    ref = ref or [k for k in values if k != "arrayfs"][0]
    ratio = values["arrayfs"] / values[ref] if higher else values[ref] / values["arrayfs"]
    results.append({"case": case, "unit": unit, "values": values, "reference": ref, "ratio": ratio, "target": target})
    print("  %-70s %s" % (case, "  ".join("%s %.4g" % kv for kv in values.items())), file=sys.stderr)


# ---- datasets ----------------------------------------------------------
ds = os.path.join(W, "ds")
plain = os.path.join(W, "plain")
os.makedirs(ds, exist_ok=True)
os.makedirs(plain, exist_ok=True)
K = 36


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def write_store(path, docs):
    os.makedirs(path, exist_ok=True)
    header, body = bytearray(), bytearray()
    for key, doc in docs:
        start = len(body)
        body += doc
        pp = start // 4096 * 4096
        header += key.encode("utf-32-le").ljust(4 * K, b"\0")
        header += np.array([pp, start - pp, start - pp + len(doc)], dtype="<i8").tobytes()
    open(os.path.join(path, "header.bin"), "wb").write(header)
    open(os.path.join(path, "body.bin"), "wb").write(body)


def write_scale_store(path, n):
    """The store write_store makes of the documents ("s%07d" % i,
    field(1, b"s%07d" % i)) for i in range(n), built with numpy (ten
    million records in seconds, not minutes)."""
    os.makedirs(path, exist_ok=True)
    names = np.char.mod("s%07d", np.arange(n))
    doc = 2 + 8
    body = np.empty((n, doc), dtype=np.uint8)
    body[:, 0], body[:, 1] = 1 << 3 | 2, 8
    body[:, 2:] = np.frombuffer(names.astype("S8").tobytes(), dtype=np.uint8).reshape(n, 8)
    start = np.arange(n, dtype=np.int64) * doc
    rec = np.empty(n, dtype=[("key", "<U%d" % K), ("page", "<i8"), ("start", "<i8"), ("end", "<i8")])
    rec["key"], rec["page"] = names, start // 4096 * 4096
    rec["start"] = start - rec["page"]
    rec["end"] = rec["start"] + doc
    rec.tofile(os.path.join(path, "header.bin"))
    body.tofile(os.path.join(path, "body.bin"))


rows, cols = ARRAY_MIB * 256, 1024  # float32
open(os.path.join(ds, "cell,gene#X.yaml"), "w").write("dtype: float32\nshape:\n- %d\n- %d\nversion:\n- 1\n- 0\n" % (rows, cols))
block = np.arange(cols * 256, dtype=np.float32).tobytes()
with open(os.path.join(ds, "cell,gene#X.array"), "wb") as f:
    for _ in range(rows // 256):
        f.write(block)
payload = os.urandom(1024)
# Each document: id, a 480-byte buffer and a 128-float embedding (about
# 1 KiB), the plain file the same bytes.
EMB = np.random.default_rng(0).random((NDOCS, 128), dtype=np.float32)
np.save(os.path.join(W, "embeddings-direct.npy"), EMB)
docs = []
for i in range(NDOCS):
    key = "d%06d" % i
    dense = field(1, EMB[i].tobytes()) + field(2, varint(128)) + field(3, b"<f4")
    doc = field(1, key.encode()) + field(3, payload[:480]) + field(19, field(1, dense))
    docs.append((key, doc))
    open(os.path.join(plain, key), "wb").write(doc)
write_store(os.path.join(ds, "docs"), docs)
os.makedirs(os.path.join(ds, "db"))
for i in range(NDIRDB):
    open(os.path.join(ds, "db", "e%05d.pickle" % i), "wb").write(b"\x80\x04" + payload[:1000] + b".")
big = os.path.join(W, "big")
write_scale_store(os.path.join(big, "store"), NSCALE)
# Files written now are older than arrayfs's racy window (2 s) by the time
# the scale case opens them twice.
array = "cell,gene#X.array"
asize = os.path.getsize(os.path.join(ds, array))


# ---- mounts ------------------------------------------------------------
class Mount:
    def __init__(self, src, name, opts=()):
        self.dir = os.path.join(W, name)
        os.makedirs(self.dir, exist_ok=True)
        self.src, self.opts, self.log = src, list(opts), os.path.join(W, name + ".log")
        self.up()

    def up(self):
        o = []
        for x in self.opts:
            o += ["-o", x]
        sh(ARRAYFS, "mount", "--background", "--log", self.log, *o, self.src, self.dir)
        self.pid = json.load(open(os.path.join(self.dir, ".arrayfs/stats.json")))["pid"]

    def down(self):
        sh(ARRAYFS, "umount", self.dir)

    def remount(self):
        self.down()
        self.up()


class Peer:
    def __init__(self, name, args):
        self.name, self.args = name, args
        self.dir = os.path.join(W, name)
        os.makedirs(self.dir, exist_ok=True)
        self.up()

    def up(self):
        self.proc = subprocess.Popen(self.args + [self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.ismount(self.dir):
                return
            time.sleep(0.05)
        raise SystemExit("%s did not mount" % self.name)

    def down(self):
        subprocess.run(["umount", self.dir])
        self.proc.wait(timeout=30)

    def readahead(self, kb=1024):
        """Raise the mount's readahead as arrayfs raises its own."""
        dev = os.stat(self.dir).st_dev
        with open("/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev), os.minor(dev)), "w") as f:
            f.write(str(kb))


rss = {"peak": 0}


def sample_rss(mount, stop):
    while not stop.is_set():
        try:
            for line in open("/proc/%d/status" % mount.pid):
                if line.startswith("RssAnon:"):
                    rss["peak"] = max(rss["peak"], int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.1)


def read_seq(path, bs):
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, bs):
            pass
    finally:
        os.close(fd)


def mbps(path, bs):
    return asize / 1e6 / timed(lambda: read_seq(path, bs))


def memmap_sum(path):
    with np.errstate(all="ignore"):  # whatever the bytes say as floats
        return asize / 1e6 / timed(lambda: float(np.memmap(path, dtype=np.float32, mode="r").sum(dtype=np.float64)))


def random_iops(path, seconds=1.0 if a.quick else 1.5, threads=2):
    n = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(k):
        fd = os.open(path, os.O_RDONLY)
        rng = random.Random(k)
        pages = asize // 4096
        c = 0
        while time.perf_counter() < stop:
            for _ in range(64):
                os.pread(fd, 4096, rng.randrange(pages) * 4096)
            c += 64
        n[k] = c
        os.close(fd)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(n) / seconds


def dd_write(path, mib=64 if not a.quick else 16):
    buf = os.urandom(1 << 20)

    def go():
        fd = os.open(path, os.O_WRONLY)
        for i in range(mib):
            os.pwrite(fd, buf, i << 20)
        os.fsync(fd)
        os.close(fd)

    return mib / timed(go)


def open_loop(d, names, how):
    def go():
        if how == "builtin":
            for nm in names:
                with open(os.path.join(d, nm), "rb") as f:
                    f.read()
        else:
            for nm in names:
                fd = os.open(os.path.join(d, nm), os.O_RDONLY)
                os.read(fd, 1 << 16)
                os.close(fd)

    return len(names) / timed(go)


def parallel_loop(d, names, procs=4):
    prog = "import os,sys\nd=sys.argv[1]\nfor n in sys.argv[2:]:\n    f=open(os.path.join(d,n),'rb'); f.read(); f.close()\n"
    t = time.perf_counter()
    ps = [subprocess.Popen(["/usr/bin/python3", "-c", prog, d] + names[k::procs]) for k in range(procs)]
    [q.wait() for q in ps]
    return len(names) / (time.perf_counter() - t)


stop = threading.Event()
rw = Mount(ds, "mnt", ["pool_bytes=64M"])
threading.Thread(target=sample_rss, args=(rw, stop), daemon=True).start()
ro = Mount(ds, "mnt-ro", ["ro", "store_connections"])
# Each loop opens every other document of the store, in name order (50,000
# of the 100,000 by default), and every other file of the peers: the
# documents' figures are per document, and the default run stays well
# under 15 minutes on a slow day of this VM.
names = sorted(os.listdir(plain))[::2]
ideal = Peer("ideal", [IDEALFS, "-n", str(NDOCS), "-size", "1008"])
ideal_no = Peer("ideal-noopen", [IDEALFS, "-noopen", "-n", str(NDOCS), "-size", "1008"])
# The fewest round trips a read-write mount can have and still learn of a
# writer's close, where a document is committed: no OPEN, FLUSH kept.
ref_docs = Peer("fuseref-docs", [FUSEREF, "-n", str(NDOCS), "-size", "1008"])
inames = sorted(os.listdir(ideal.dir))[::2]
ideal_big = ref_big = None
try:
    if wanted("arrays"):
        section("arrays (%d MiB)" % ARRAY_MIB)
        direct_read = lambda bs: lambda: mbps(os.path.join(ds, array), bs)
        on = lambda m: os.path.join(m.dir, array)

        def first_read_row(m, bs, label, kind, also={}):
            def first_read():
                m.remount()
                return mbps(on(m), bs)
            row(".array first read after mount, dd bs=%s (%s)" % (label, kind), "MB/s",
                alternate({"arrayfs": first_read, "direct": direct_read(bs), **also}), 0.8)

        def reread_row(bs, label, kind, also={}):
            row(".array re-read, dd bs=%s (%s)" % (label, kind), "MB/s",
                alternate({"arrayfs": lambda: mbps(on(rw), bs), "direct": direct_read(bs), **also}), 0.8)

        def memmap_row(m, kind, also={}):
            row("numpy memmap sum of the .array (%s)" % kind, "MB/s",
                alternate({"arrayfs": lambda: memmap_sum(on(m)), "direct": lambda: memmap_sum(os.path.join(ds, array)), **also}), 0.8)

        def iops_row(kind):
            row("random 4 KiB preads, 2 threads (%s)" % kind, "IOPS",
                alternate({"arrayfs": lambda: random_iops(on(rw)), "direct": lambda: random_iops(os.path.join(ds, array))}), 0.5)

        # The same size of file in idealfs's memory, kept in the page
        # cache (FOPEN_KEEP_CACHE): what any go-fuse file system's cached
        # re-read reaches, the kernel's FUSE page cache.
        ideal_big = Peer("ideal-big", [IDEALFS, "-n", "1", "-size", str(asize)])
        big_file = os.path.join(ideal_big.dir, "doc-000000")
        read_seq(big_file, 1 << 20)
        # The array's size served from memory by scripts/fuseref, through
        # FUSE READs of 1 MiB and arrayfs's readahead, dropped from the
        # page cache at each open ("buffered") or DIRECT_IO as data.npy:
        # what a daemon that costs nothing reads a file the kernel does
        # not pass through at.
        ref_big = Peer("fuseref-big", [FUSEREF, "-big", str(asize)])
        ref_big.readahead()
        in_memory = lambda name, bs: {"in-memory FUSE": lambda: mbps(os.path.join(ref_big.dir, name), bs)}
        for bs, label in ((1 << 20, "1M"), (128 << 10, "128K")):
            first_read_row(rw, bs, label, "rw mount", in_memory("buffered", bs))
            first_read_row(ro, bs, label, "ro mount, passthrough")
            reread_row(bs, label, "rw", {"idealfs re-read": lambda: mbps(big_file, bs)})
            npy = os.path.join(rw.dir, ".arrayfs/views/cell,gene#X/data.npy")
            row("data.npy read, dd bs=%s (every read is a first read)" % label, "MB/s",
                alternate({"arrayfs": lambda: mbps(npy, bs), "direct": direct_read(bs), **in_memory("direct", bs)}), 0.5)
        emb = os.path.join(rw.dir, ".arrayfs/views/docs/embeddings.npy")
        edirect = os.path.join(W, "embeddings-direct.npy")
        esize = os.path.getsize(edirect)
        row("embeddings.npy of the %d-document store, read (direct: the same array as a .npy)" % NDOCS, "MB/s",
            alternate({"arrayfs": lambda: esize / 1e6 / timed(lambda: read_seq(emb, 1 << 20)),
                       "direct": lambda: esize / 1e6 / timed(lambda: read_seq(edirect, 1 << 20))}))
        memmap_row(rw, "rw", {"in-memory FUSE": lambda: memmap_sum(os.path.join(ref_big.dir, "buffered"))})
        memmap_row(ro, "ro")
        iops_row("rw")
        row("dd write + fsync into the .array", "MB/s",
            alternate({"arrayfs": lambda: dd_write(on(rw)), "direct": lambda: dd_write(os.path.join(ds, array))}), 0.5)
        # The read-write mount again, its readers passed through while no
        # writer has the array open (array_passthrough).
        rw.opts.append("array_passthrough")
        rw.remount()
        for bs, label in ((1 << 20, "1M"), (128 << 10, "128K")):
            first_read_row(rw, bs, label, "rw mount, array_passthrough")
            reread_row(bs, label, "rw, array_passthrough")
        memmap_row(rw, "rw, array_passthrough")
        iops_row("rw, array_passthrough")
        rw.opts.remove("array_passthrough")
        rw.remount()
        ideal_big.down()
        ideal_big = None
        ref_big.down()
        ref_big = None

    if wanted("documents"):
        section("documents (%d of ~1 KiB, %d in each loop)" % (NDOCS, len(names)))
        # Each reference is measured once, beside the row that uses it:
        # plain files and idealfs -noopen with the ro rows, idealfs with
        # the rw ones (which keeps the default run under 15 minutes).
        for m, kind in ((ro, "ro"), (rw, "rw")):
            d = os.path.join(m.dir, "docs")

            def first_pass(m=m, d=d):
                m.remount()
                return open_loop(d, names, "builtin")
            refs = {"idealfs-noopen": lambda: open_loop(ideal_no.dir, inames, "builtin"),
                    "plain files": lambda: open_loop(plain, names, "builtin")} if kind == "ro" else \
                   {"idealfs": lambda: open_loop(ideal.dir, inames, "builtin")}
            v = alternate(dict({"first": first_pass, "arrayfs": lambda: open_loop(d, names, "builtin")}, **refs))
            first = v.pop("first")
            if kind == "rw":
                # Warm (the kernel knows its entries), then one run.
                open_loop(ref_docs.dir, inames, "builtin")
                v["no OPEN, FLUSH kept (one run)"] = open_loop(ref_docs.dir, inames, "builtin")
            row("documents, builtin open() loop, %s mount, steady" % kind, "docs/s", v, 0.9 if kind == "ro" else 2,
                ref="idealfs-noopen" if kind == "ro" else "idealfs")
            firsts = {"arrayfs": first, "steady": v["arrayfs"]}
            if kind == "ro":
                # The same for the ideal file system, which has no work
                # to do per request: its first pass after its mount
                # against its steady state above.
                ideal_no.down()
                ideal_no.up()
                firsts["idealfs-noopen first pass (one run)"] = open_loop(ideal_no.dir, inames, "builtin")
                firsts["its steady"] = v["idealfs-noopen"]
            row("documents, first pass after mount against steady state, %s" % kind, "docs/s", firsts, 0.5, ref="steady")
            refs = {"idealfs-noopen": lambda: open_loop(ideal_no.dir, inames, "os")} if kind == "ro" else {}
            row("documents, os.open loop, %s mount" % kind, "docs/s",
                alternate(dict({"arrayfs": lambda: open_loop(d, names, "os")}, **refs, **{"plain files": lambda: open_loop(plain, names, "os")})),
                0.5 if kind == "ro" else None)
        # One process: the ro mount's steady state, measured above; and
        # idealfs -noopen's 4 processes against its own one, what the two
        # CPUs allow any FUSE file system.
        d = os.path.join(ro.dir, "docs")
        steady = [r for r in results if r["case"] == "documents, builtin open() loop, ro mount, steady"][0]["values"]
        one, ione = steady["arrayfs"], steady["idealfs-noopen"]
        row("documents, 4 reader processes against one (ro)", "docs/s",
            {"arrayfs": statistics.median(parallel_loop(d, names) for _ in range(RUNS)), "one process": one,
             "idealfs-noopen 4 processes (one run)": parallel_loop(ideal_no.dir, inames), "its one process": ione}, 1.5)

    if wanted("listing"):
        section("listing")
        # idealfs: what ls -l costs on any go-fuse file system (two GETXATTR
        # round trips per entry, for its ACL and security label).
        v = alternate({"arrayfs": lambda: timed(lambda: sh("ls", "-l", os.path.join(rw.dir, "docs"))),
                       "plain files": lambda: timed(lambda: sh("ls", "-l", plain))})
        v["idealfs (one run)"] = timed(lambda: sh("ls", "-l", ideal.dir))
        row("ls -l of the store", "s", v, 0.5, higher=False, ref="plain files")
        # The copies go to tmpfs when there is one: a no-op rsync stats
        # them from the dentry cache either way (0.93-1.21 s against
        # 0.93-1.00 s on ext4 for 100,000 files, by hand), and writing
        # and removing 200,000 files on the backing disk took two
        # minutes of the run.
        cpdir = W
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            cpdir = os.path.join("/dev/shm", os.path.basename(W))
            os.makedirs(cpdir, exist_ok=True)
        cp1, cp2 = os.path.join(cpdir, "copy-docs"), os.path.join(cpdir, "copy-plain")
        sh("rsync", "-a", os.path.join(rw.dir, "docs") + "/", cp1 + "/")
        sh("rsync", "-a", plain + "/", cp2 + "/")
        row("no-op rsync -a of the store", "s",
            alternate({"arrayfs": lambda: timed(lambda: sh("rsync", "-a", os.path.join(rw.dir, "docs") + "/", cp1 + "/")),
                       "plain files": lambda: timed(lambda: sh("rsync", "-a", plain + "/", cp2 + "/"))}), 0.5, higher=False)

    if wanted("writes"):
        section("writes")
        lbsrc = os.path.join(W, "lb-src")
        os.makedirs(lbsrc, exist_ok=True)
        lbm = os.path.join(W, "loopback")
        os.makedirs(lbm, exist_ok=True)
        lbp = subprocess.Popen([LOOPBACK] + (["-directmount"] if ROOT else []) + [lbm, lbsrc],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.ismount(lbm):
                break
            time.sleep(0.05)
        doc = docs[0][1]

        def creates(d, n=NCREATE):
            os.makedirs(d, exist_ok=True)
            if d.startswith(rw.dir):
                open(os.path.join(d, ".docarray"), "w").write("key_length: 36\n")

            def go():
                for i in range(n):
                    with open(os.path.join(d, "c%06d" % i), "wb") as f:
                        f.write(doc)
            return n / timed(go)

        k = [0]

        def fresh(base):
            k[0] += 1
            return os.path.join(base, "new%d" % k[0])

        row("creating 1 KiB documents one by one", "files/s",
            alternate({"arrayfs": lambda: creates(fresh(rw.dir)), "loopback": lambda: creates(fresh(lbm))}), 0.5)
        os.makedirs(os.path.join(lbm, "db"), exist_ok=True)
        for i in range(NDIRDB):
            open(os.path.join(lbsrc, "db", "e%05d.pickle" % i), "wb").write(b"\x80\x04" + payload[:1000] + b".")

        def rewrite(d):
            def go():
                for i in range(NDIRDB):
                    with open(os.path.join(d, "e%05d.pickle" % i), "wb") as f:
                        f.write(b"\x80\x04" + payload[:1000] + b".")
            return NDIRDB / timed(go)

        def publish(d):
            """Each entry as arrayfs publishes one at its close: written
            beside, fsync'd, renamed onto its name."""
            def go():
                for i in range(NDIRDB):
                    tmp = os.path.join(d, ".stage.e%05d.pickle" % i)
                    with open(tmp, "wb") as f:
                        f.write(b"\x80\x04" + payload[:1000] + b".")
                        os.fsync(f.fileno())
                    os.rename(tmp, os.path.join(d, "e%05d.pickle" % i))
            return NDIRDB / timed(go)

        v = alternate({"arrayfs": lambda: rewrite(os.path.join(rw.dir, "db")), "loopback": lambda: rewrite(os.path.join(lbm, "db"))})
        v["loopback, published as arrayfs does (one run)"] = publish(os.path.join(lbm, "db"))
        row("rewriting dirdb entries", "entries/s", v, 0.5, ref="loopback")
        subprocess.run(["umount", lbm])
        lbp.wait(timeout=30)

    if wanted("scale"):
        section("scale")
        stop.set()
        peak = rss["peak"]
        row("peak RssAnon of the daemon through the cases above (pool_bytes=64M)", "MiB",
            {"arrayfs": peak / 2**20, "pool_bytes + 64 MiB + 64 B/document": (128 * 2**20 + 64 * NDOCS) / 2**20}, 1, higher=False)
        for n, src in [(NSCALE, big)] + ([(10_000_000, None)] if a.big else []):
            if src is None:
                src = os.path.join(W, "big10")
                write_scale_store(os.path.join(src, "store"), n)
                # Its 1.8 GB are written back before it is measured, not
                # during the mounts that read them.
                os.sync()
                time.sleep(2.1)
            m = os.path.join(W, "mnt-big")
            os.makedirs(m, exist_ok=True)

            def first_byte():
                t = time.perf_counter()
                sh(ARRAYFS, "mount", "--background", "--log", os.path.join(W, "big.log"), src, m)
                open(os.path.join(m, "store", "s0000000"), "rb").read(1)
                took = time.perf_counter() - t
                sh(ARRAYFS, "umount", m)  # it waits for the index being saved
                os.sync()  # and the saved index is on disk before the next run
                return took

            def never_seen():
                # The store as the original left it: no index saved by arrayfs.
                idx = os.path.join(src, "store", ".arrayfs-docindex")
                if os.path.exists(idx):
                    os.remove(idx)
                return first_byte()
            # The first mount saves the index, the next one reads it.
            v = alternate({"first": never_seen, "next": first_byte})
            target = 0.2 if n <= 1_000_000 else 1.0
            row("store of %d documents: mount to first byte, first mount" % n, "s",
                {"arrayfs": v["first"], "target": target}, 1, higher=False)
            row("store of %d documents: mount to first byte, next mount (saved index)" % n, "s",
                {"arrayfs": v["next"], "target": target}, 1, higher=False)
finally:
    stop.set()
    for x in (ideal, ideal_no, ref_docs, ideal_big, ref_big):
        if x is not None:
            x.down()
    for m in (ro, rw):
        try:
            m.down()
        except Exception:
            subprocess.run(["umount", "-l", m.dir])

version = subprocess.run([ARRAYFS, "version"], capture_output=True, text=True).stdout.strip()
head = "Measured %s on %s (%s, %d CPUs), %s; median of %d runs, systems alternating%s; the run took %.1f minutes." % (
    datetime.date.today().isoformat(), platform.node() or "this machine", platform.release(), os.cpu_count(),
    version, RUNS, (", --quick sizes" if a.quick else "") + (", sections " + a.only if a.only else ""), (time.time() - T0) / 60)
print(head)
print()
print("| case | unit | arrayfs | reference | ratio | target | also measured |")
print("|---|---|---:|---|---:|---:|---|")
for r in results:
    refv = r["values"][r["reference"]]
    tgt = "" if r["target"] is None else ("%.2g" % r["target"])
    also = ", ".join("%s %.4g" % (k, v) for k, v in r["values"].items() if k not in ("arrayfs", r["reference"]))
    print("| %s | %s | %.4g | %s %.4g | %.2f | %s | %s |" % (r["case"], r["unit"], r["values"]["arrayfs"], r["reference"], refv, r["ratio"], tgt, also))
if a.json:
    json.dump({"header": head, "results": results}, open(a.json, "w"), indent=1)
