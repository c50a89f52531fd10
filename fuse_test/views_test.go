package fuse_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// viewsDataset is one dataset of every kind of item: the daf arrays and
// the daf example dataset (with axis files) at the root, the docarray
// fixture store as docs/, the dirdb fixture database as db/.
func viewsDataset(t *testing.T) string {
	t.Helper()
	ds := filepath.Join(t.TempDir(), "ds")
	run(t, "mkdir", ds)
	for _, dir := range []string{"daf/arrays", "daf/example"} {
		src := fixturePath(t, dir)
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			run(t, "cp", filepath.Join(src, e.Name()), ds)
		}
	}
	run(t, "cp", "-r", fixturePath(t, "docarray/store"), filepath.Join(ds, "docs"))
	run(t, "cp", "-r", fixturePath(t, "dirdb/db"), filepath.Join(ds, "db"))
	run(t, "chmod", "-R", "u+w", ds)
	return ds
}

// TestArrayViewsAgreeWithNumpy: every array's data.npy, rows, ranges,
// columns and named rows and columns equal the numpy slices of the array
// read from its backing files; sparse rows equal the densified CSR rows
// and scipy reads matrix.mtx as the matrix.
func TestArrayViewsAgreeWithNumpy(t *testing.T) {
	m := mount(t, viewsDataset(t))
	out := pyRun(t, `
import numpy as np, os, sys, yaml, json, csv
import scipy.io, scipy.sparse as sp
V, D = sys.argv[1] + '/.arrayfs/views/', sys.argv[2] + '/'
def axis(name):
    p = D + name + '#.csv'
    if not os.path.exists(p): return None
    return [r[0] for r in list(csv.reader(open(p)))[1:]]
checked = 0
for base in sorted(os.listdir(V)):
    if not os.path.exists(D + base + '.yaml'):
        continue
    meta = yaml.safe_load(open(D + base + '.yaml'))
    info = json.load(open(V + base + '/info.json'))
    assert info['shape'] == meta['shape'], base
    axes = base.split('#')[0].split(',')
    if 'dtype' in meta:
        a = np.fromfile(D + base + '.array', dtype=meta['dtype']).reshape(meta['shape'])
        assert info['kind'] == 'dense' and info['numpy_dtype'] == a.dtype.str and info['path'] == base + '.array', info
        v = np.load(V + base + '/data.npy', mmap_mode='r')
        assert isinstance(v, np.memmap) and v.dtype == a.dtype and v.shape == a.shape and (v == a).all(), base
        with open(V + base + '/data.npy', 'rb') as f:
            head = f.read(10)
            hlen = int.from_bytes(head[8:10], 'little')
            assert head[:8] == b'\x93NUMPY\x01\x00' and (10 + hlen) % 64 == 0, (base, head)
        if a.ndim == 2:
            names = sorted(os.listdir(V + base + '/rows'))
            width = len(str(a.shape[0] - 1))
            assert [n for n in names if n != 'by-name'] == [str(i).zfill(width) for i in range(a.shape[0])], base
            for i in sorted({0, 3, a.shape[0] - 1}):
                assert (np.fromfile(V + base + '/rows/' + str(i).zfill(width), dtype=a.dtype) == a[i]).all()
                assert (np.fromfile(V + base + '/rows/%d' % i, dtype=a.dtype) == a[i]).all()
                assert (np.load(V + base + '/rows/%d.npy' % i) == a[i]).all()
            assert (np.fromfile(V + base + '/rows/2:5', dtype=a.dtype).reshape(3, -1) == a[2:5]).all()
            assert (np.load(V + base + '/rows/2:5.npy') == a[2:5]).all()
            assert (np.load(V + base + '/rows/0:%d.npy' % a.shape[0]) == a).all()
            assert not os.path.exists(V + base + '/rows/%d' % a.shape[0])
            assert not os.path.exists(V + base + '/rows/5:2')
            for j in sorted({0, 1, a.shape[1] - 1}):
                assert (np.fromfile(V + base + '/cols/%d' % j, dtype=a.dtype) == a[:, j]).all(), (base, j)
                assert (np.load(V + base + '/cols/%d.npy' % j) == a[:, j]).all()
            rows, cols = axis(axes[0]), axis(axes[1])
            if rows:
                assert sorted(os.listdir(V + base + '/rows/by-name')) == sorted(rows[:a.shape[0]])
                for i in (0, len(rows) - 1):
                    assert (np.fromfile(V + base + '/rows/by-name/' + rows[i], dtype=a.dtype) == a[i]).all()
            if cols:
                j = len(cols) // 2
                assert (np.fromfile(V + base + '/cols/by-name/' + cols[j], dtype=a.dtype) == a[:, j]).all()
        else:
            assert (np.load(V + base + '/3:7.npy') == a[3:7]).all()
            assert (np.fromfile(V + base + '/3:7', dtype=a.dtype) == a[3:7]).all()
            names = axis(axes[0])
            if names:
                k = len(names) - 1
                assert (np.fromfile(V + base + '/by-name/' + names[k], dtype=a.dtype) == a[k:k+1]).all()
    else:
        data = np.fromfile(D + base + '.data', dtype=meta['data_dtype'])
        ind = np.fromfile(D + base + '.indices', dtype=meta['indices_dtype'])
        ptr = np.fromfile(D + base + '.indptr', dtype=meta['indptr_dtype'])
        a = sp.csr_matrix((data, ind, ptr), shape=meta['shape'])
        assert info['kind'] == 'sparse-csr' and info['nnz'] == meta['nnz'], info
        for name, want in (('data', data), ('indices', ind), ('indptr', ptr)):
            got = np.load(V + base + '/' + name + '.npy', mmap_mode='r')
            assert got.dtype == want.dtype and (got == want).all(), (base, name)
        for i in sorted({0, 7, a.shape[0] - 1}):
            assert (np.load(V + base + '/rows/%d.npy' % i) == a[i].toarray()[0]).all(), (base, i)
            assert (np.fromfile(V + base + '/rows/%d' % i, dtype=data.dtype) == a[i].toarray()[0]).all()
        mm = scipy.io.mmread(V + base + '/matrix.mtx')
        assert mm.shape == a.shape and mm.nnz == a.nnz and (sp.csr_matrix(mm) != a).nnz == 0, base
        text = open(V + base + '/matrix.mtx', 'rb').read()
        assert len(text) == os.stat(V + base + '/matrix.mtx').st_size
        f = os.open(V + base + '/matrix.mtx', os.O_RDONLY)
        import random
        for k in range(300):
            o, l = random.randrange(len(text)), random.randrange(1, 9000)
            assert os.pread(f, l, o) == text[o:o+l], (base, o, l)
        os.close(f)
    checked += 1
print(checked)
`, m.Dir, m.Dataset)
	if strings.TrimSpace(out) != "13" {
		t.Fatalf("checked %s arrays, want the 13 of the fixtures", out)
	}
}

// TestViewsReadByOtherLanguages: a C program parses data.npy's header
// and sums its data; R reads matrix.mtx with Matrix::readMM and a row
// with readBin; Node reads a document's embedding.npy. Each agrees with
// numpy.
func TestViewsReadByOtherLanguages(t *testing.T) {
	m := mount(t, viewsDataset(t))
	views := m.Path(".arrayfs/views")
	want := strings.Fields(pyRun(t, `
import numpy as np, sys, scipy.io
V = sys.argv[1]
x = np.load(V + '/cell,gene#X/data.npy')
mm = scipy.io.mmread(V + '/cell,gene#sparse/matrix.mtx')
e = np.load(V + '/docs/doc-000/embedding.npy')
print('%.3f %d %.6f %.6f %.6f' % (x.astype('f8').sum(), mm.nnz, mm.sum(), x[5].astype('f8').sum(), e.astype('f8').sum()))
`, views))

	// C: the .npy header by hand (magic, version, length, dict), then the data.
	csrc := filepath.Join(t.TempDir(), "npysum.c")
	os.WriteFile(csrc, []byte(`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
	FILE *f = fopen(argv[1], "rb");
	if (!f) { perror("open"); return 1; }
	unsigned char pre[10];
	if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) { fprintf(stderr, "not a .npy 1.0\n"); return 1; }
	unsigned hlen = pre[8] | pre[9] << 8;
	char *h = calloc(hlen + 1, 1);
	fread(h, 1, hlen, f);
	if (!strstr(h, "'descr': '<f4'") || !strstr(h, "'fortran_order': False")) { fprintf(stderr, "header %s\n", h); return 1; }
	long r, c;
	if (sscanf(strstr(h, "'shape': (") + 10, "%ld, %ld", &r, &c) != 2) { fprintf(stderr, "shape in %s\n", h); return 1; }
	double sum = 0; float v;
	for (long i = 0; i < r * c; i++) { if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, "short data\n"); return 1; } sum += v; }
	printf("%.3f\n", sum);
	return 0;
}
`), 0o644)
	bin := filepath.Join(t.TempDir(), "npysum")
	run(t, "gcc", "-O2", "-o", bin, csrc)
	if got := strings.TrimSpace(run(t, bin, filepath.Join(views, "cell,gene#X/data.npy"))); got != want[0] {
		t.Errorf("C sum of data.npy: %s, numpy %s", got, want[0])
	}

	r := run(t, "Rscript", "-e", `
suppressMessages(library(Matrix))
a <- commandArgs(trailingOnly = TRUE)
m <- readMM(file.path(a[1], "cell,gene#sparse/matrix.mtx"))
r <- readBin(file.path(a[1], "cell,gene#X/rows/005"), "double", n = 64, size = 4, endian = "little")
cat(sprintf("%d %.6f %.6f\n", nnzero(m), sum(m), sum(r)))
`, views)
	if got := strings.Fields(r); len(got) != 3 || got[0] != want[1] || got[1] != want[2] || got[2] != want[3] {
		t.Errorf("R: %q, numpy %v", r, want[1:4])
	}

	node := run(t, "node", "-e", `
const fs = require('fs');
const b = fs.readFileSync(process.argv[1]);
if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not a .npy');
const hlen = b.readUInt16LE(8);
const header = b.toString('latin1', 10, 10 + hlen);
const descr = /'descr': '([^']+)'/.exec(header)[1];
const data = b.subarray(10 + hlen);
const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
const arr = descr === '<f4' ? new Float32Array(ab) : new Float64Array(ab);
let s = 0; for (const v of arr) s += v;
console.log(s.toFixed(6));
`, filepath.Join(views, "docs/doc-000/embedding.npy"))
	if got := strings.TrimSpace(node); got != want[4] {
		t.Errorf("Node sum of embedding.npy: %s, numpy %s", got, want[4])
	}
}

// TestDocumentViewsAgreeWithFixture: every document of the fixture
// store shows the fields store.expected.jsonl (written by the original)
// gives it, and the whole-store files list them in store order.
func TestDocumentViewsAgreeWithFixture(t *testing.T) {
	m := mount(t, viewsDataset(t))
	out := pyRun(t, `
import numpy as np, json, hashlib, os, sys
V = sys.argv[1]
exp = [json.loads(l) for l in open(sys.argv[2])]
ids = open(V + '/ids.txt').read().splitlines()
docs = [json.loads(l) for l in open(V + '/docs.jsonl')]
texts = [json.loads(l) for l in open(V + '/texts.jsonl')]
info = json.load(open(V + '/info.json'))
assert ids == [e['id'] for e in exp], ids[:3]
assert [d['id'] for d in docs] == ids and [x['id'] for x in texts] == ids
assert info['documents'] == len(exp) and info['embeddings'] is None and 'embeddings_absent' in info, info
assert not os.path.exists(V + '/embeddings.npy')
for e, dj, tx in zip(exp, docs, texts):
    p = V + '/' + dj['name']
    assert os.path.isdir(p), dj['name']
    j = json.load(open(p + '/doc.json'))
    for k in ['mime_type', 'uri', 'n_chunks', 'n_matches', 'content', 'embedding_dtype', 'embedding_shape', 'blob_dtype', 'blob_shape']:
        assert j.get(k) == e.get(k) and dj.get(k) == e.get(k), (dj['name'], k, j.get(k), e.get(k))
    assert tx['text'] == (e['text'] or None), (tx, e['text'])
    if e['text']:
        assert open(p + '/text', encoding='utf-8').read() == e['text']
    else:
        assert not os.path.exists(p + '/text')
    if e['tags']:
        assert json.load(open(p + '/tags.json')) == e['tags']
    if e['embedding'] is not None:
        a = np.load(p + '/embedding.npy')
        assert a.dtype.str == e['embedding_dtype'] and list(a.shape) == e['embedding_shape']
        assert np.allclose(a.ravel(), np.array(e['embedding']).ravel())
    else:
        assert not os.path.exists(p + '/embedding.npy')
    if e['blob'] is not None:
        a = np.load(p + '/blob.npy')
        assert a.dtype.str == e['blob_dtype'] and (a == np.array(e['blob'], dtype=a.dtype)).all()
    else:
        assert not os.path.exists(p + '/blob.npy')
    if e['buffer_sha256'] is not None:
        assert hashlib.sha256(open(p + '/buffer', 'rb').read()).hexdigest() == e['buffer_sha256']
    else:
        assert not os.path.exists(p + '/buffer')
print(len(exp))
`, m.Path(".arrayfs/views/docs"), fixturePath(t, "docarray/store.expected.jsonl"))
	if strings.TrimSpace(out) != "39" {
		t.Fatalf("checked %s documents, want 39", out)
	}
}

// TestStoreViewsStreamAndStack: a store whose documents share one
// embedding shape has embeddings.npy, N x D in store order; chunks and
// matches are document directories; the whole-store files follow a
// change of the store.
func TestStoreViewsStreamAndStack(t *testing.T) {
	ds := filepath.Join(t.TempDir(), "ds")
	os.Mkdir(ds, 0o755)
	pyOriginal(t, `
import sys, numpy as np
from docarray import Document
from docarray.memmap import DocumentArrayMemmap
dam = DocumentArrayMemmap(sys.argv[1] + '/s')
for i in range(3000):
    d = Document(id='d%04d' % i, text='text %d' % i, embedding=np.arange(4, dtype='float32') + i)
    if i == 5:
        d.chunks.append(Document(id='c0', text='chunk zero'))
        d.matches.append(Document(id='m0', embedding=np.ones(2)))
    dam.append(d)
`, ds)
	m := mount(t, ds)
	v := m.Path(".arrayfs/views/s")
	out := pyRun(t, `
import numpy as np, json, os, sys
V = sys.argv[1]
e = np.load(V + '/embeddings.npy', mmap_mode='r')
assert e.shape == (3000, 4) and e.dtype == np.float32, e.shape
assert (e == np.arange(4, dtype='float32') + np.arange(3000, dtype='float32')[:, None]).all()
ids = open(V + '/ids.txt').read().splitlines()
assert ids == ['d%04d' % i for i in range(3000)], ids[:3]
texts = [json.loads(l)['text'] for l in open(V + '/texts.jsonl')]
assert texts == ['text %d' % i for i in range(3000)]
assert sorted(os.listdir(V + '/d0005')) == ['chunks', 'doc.json', 'embedding.npy', 'matches', 'text']
assert open(V + '/d0005/chunks/0/text').read() == 'chunk zero'
assert json.load(open(V + '/d0005/chunks/0/doc.json'))['id'] == 'c0'
assert (np.load(V + '/d0005/matches/0/embedding.npy') == 1).all()
j = json.load(open(V + '/d0005/doc.json'))
assert j['n_chunks'] == 1 and j['n_matches'] == 1, j
assert json.load(open(V + '/info.json'))['embeddings'] == {'dtype': '<f4', 'shape': [3000, 4]}
print('ok')
`, v)
	if strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
	// A change of the store shows in its whole-store files.
	run(t, "rm", m.Path("s/d0001"))
	run(t, "cp", m.Path("s/d0002"), m.Path("s/new"))
	out = pyRun(t, `
import numpy as np, sys
V = sys.argv[1]
ids = open(V + '/ids.txt').read().splitlines()
assert len(ids) == 3000 and 'd0001' not in ids and ids[-1] == 'd0002', ids[-3:]
e = np.load(V + '/embeddings.npy')
assert e.shape == (3000, 4) and (e[-1] == e[1]).all()
print('ok')
`, v)
	if strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
}

// TestDirdbViews: every numpy entry of the dirdb fixture, and arrays
// pickled with protocols 2 to 5 (C and Fortran order, many dtypes), have
// a data.npy equal to pickle.load of the entry; other entries have none;
// a pickle crafted to run code is served without running it.
func TestDirdbViews(t *testing.T) {
	ds := viewsDataset(t)
	marker := filepath.Join(t.TempDir(), "pwned")
	pyRun(t, `
import numpy as np, pickle, sys
db = sys.argv[1] + '/db/'
arrs = {'f64': np.arange(12.0).reshape(3, 4), 'i32f': np.asfortranarray(np.arange(12, dtype='>i4').reshape(3, 4)),
        'u8': np.arange(5, dtype='u1'), 'b': np.array([True, False]), 'u': np.array(['ab', 'cde']),
        'c': np.arange(3) + 1j, 'big': np.arange(90000.0).reshape(300, 300), 'empty': np.zeros((0, 3)),
        'f16': np.arange(6, dtype='f2'), 'scalar': np.array(7)}
for name, a in arrs.items():
    for p in (2, 3, 4, 5):
        pickle.dump(a, open(db + 't-%s-p%d.pickle' % (name, p), 'wb'), protocol=p)
pickle.dump({'x': np.arange(3)}, open(db + 't-dict.pickle', 'wb'))
pickle.dump(np.array([{'a': 1}], dtype=object), open(db + 't-object.pickle', 'wb'))
class Evil:
    def __reduce__(self):
        import os
        return (os.system, ('touch ' + sys.argv[2],))
pickle.dump(Evil(), open(db + 't-evil.pickle', 'wb'))
`, ds, marker)
	m := mount(t, ds)
	out := pyRun(t, `
import numpy as np, pickle, os, sys, json
V, D = sys.argv[1] + '/.arrayfs/views/db/', sys.argv[2] + '/db/'
arrays = others = 0
for root, dirs, files in os.walk(D):
    for f in sorted(files):
        if not f.endswith('.pickle') or 'evil' in f:
            continue
        rel = os.path.relpath(os.path.join(root, f), D)[:-7]
        meta = json.load(open(V + rel + '/meta.json'))
        assert meta['entry'] == 'db/' + rel, meta
        obj = pickle.load(open(os.path.join(root, f), 'rb'))
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            a = np.load(V + rel + '/data.npy', mmap_mode='r')
            assert a.shape == obj.shape and a.dtype.newbyteorder('=') == obj.dtype.newbyteorder('='), (rel, a.dtype, obj.dtype)
            assert (np.asarray(a) == obj).all() and a.flags.f_contiguous == obj.flags.f_contiguous, rel
            assert meta['ndarray']['shape'] == list(obj.shape)
            arrays += 1
        else:
            assert not os.path.exists(V + rel + '/data.npy') and meta['ndarray'] is None and meta['not_ndarray'], rel
            others += 1
evil = json.load(open(V + 't-evil/meta.json'))
assert evil['ndarray'] is None and not os.path.exists(V + 't-evil/data.npy')
print(arrays, others)
`, m.Dir, m.Dataset)
	if strings.TrimSpace(out) != "47 8" {
		t.Errorf("numpy entries with data.npy, others without: %s, want 47 8", out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("reading the crafted pickle's views ran its code")
	}
	// The metadata of an entry is in its meta.json.
	meta := run(t, "cat", m.Path(".arrayfs/views/db/set-001/meta.json"))
	if !strings.Contains(meta, `"note": "café"`) {
		t.Errorf("meta.json of set-001 lacks set-001.json: %s", meta)
	}
}

// TestWritesThroughViews: a row, a column, data.npy written in place and
// a document's text and tags written through views reach the backing
// files, as an independent reader (numpy on the backing file, the
// original DocumentArrayMemmap) sees them after unmount; other views
// refuse writes with EROFS and a refused text leaves the document as it
// was.
func TestWritesThroughViews(t *testing.T) {
	m := mount(t, viewsDataset(t))
	v := m.Path(".arrayfs/views")
	out := pyRun(t, `
import numpy as np, os, sys, errno, json
V, M = sys.argv[1], sys.argv[2]
with open(V + '/cell,gene#X/rows/007', 'r+b') as f:
    f.write(np.arange(64, dtype='<f4').tobytes())
with open(V + '/cell,gene#X/cols/3', 'r+b') as f:
    f.write(np.full(1000, 5.5, dtype='<f4').tobytes())
with open(V + '/cell,gene#X/rows/10:12', 'r+b') as f:
    f.seek(4)
    f.write(np.float32(-1).tobytes())
x = np.load(V + '/cell,gene#X/data.npy', mmap_mode='r+')
x[20, 20] = 42
x.flush()
del x
# The canonical file shows the writes at once.
a = np.fromfile(M + '/cell,gene#X.array', dtype='<f4').reshape(1000, 64)
assert (a[7, :3] == [0, 1, 2]).all() and (a[:, 3] == 5.5).all() and a[10, 1] == -1 and a[20, 20] == 42
for p, mode in (('/cell,gene#X/info.json', 'w'), ('/docs/doc-000/doc.json', 'w'), ('/cell,gene#sparse/matrix.mtx', 'r+b'), ('/db/set-000/data.npy', 'r+b')):
    try:
        open(V + p, mode)
        raise SystemExit('opened ' + p + ' for writing')
    except OSError as e:
        assert e.errno == errno.EROFS, (p, e)
try:
    with open(V + '/cell,gene#X/rows/007', 'r+b') as f:
        f.write(b'x' * 300)
    raise SystemExit('a row took 300 bytes')
except OSError as e:
    assert e.errno == errno.EFBIG, e
with open(V + '/docs/doc-000/text', 'w') as f:
    f.write('new text ✓')
with open(V + '/docs/doc-002/tags.json', 'w') as f:
    json.dump({'k': [1, 'two', None, {'n': True}]}, f)
try:
    with open(V + '/docs/doc-004/text', 'wb') as f:
        f.write(b'\xff\xfe')
    raise SystemExit('invalid UTF-8 accepted')
except OSError as e:
    assert e.errno == errno.EINVAL, e
assert open(V + '/docs/doc-000/text').read() == 'new text ✓'
print('ok')
`, v, m.Dir)
	if strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
	m.Unmount()
	out = pyRun(t, `
import numpy as np, sys
a = np.fromfile(sys.argv[1] + '/cell,gene#X.array', dtype='<f4').reshape(1000, 64)
assert (a[7, :3] == [0, 1, 2]).all() and (a[7, 4:] == np.arange(4, 64)).all()
assert (a[:, 3] == 5.5).all() and a[10, 1] == -1 and a[20, 20] == 42
print('ok')
`, m.Dataset)
	if strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
	out = pyOriginal(t, `
import sys
from docarray.memmap import DocumentArrayMemmap
dam = DocumentArrayMemmap(sys.argv[1] + '/docs')
d0, d2, d4 = dam['doc-000'], dam['doc-002'], dam['doc-004']
assert d0.text == 'new text ✓', d0.text
assert dict(d2.tags) == {'k': [1.0, 'two', None, {'n': True}]}, d2.tags
assert d4.text and d4.text != '', d4.text
print('ok')
`, m.Dataset)
	if strings.TrimSpace(out) != "ok" {
		t.Fatal(out)
	}
}

// TestViewsHiddenFollowAndNotCopied: /.arrayfs is not listed (it is with
// views=visible) and rsync -a of the mount copies no view; the views of
// an item that changes show the new content, and those of an item that
// goes away go with it.
func TestViewsHiddenFollowAndNotCopied(t *testing.T) {
	m := mount(t, viewsDataset(t))
	if ls := run(t, "ls", "-a", m.Dir); strings.Contains(ls, ".arrayfs") {
		t.Fatalf("ls -a lists .arrayfs:\n%s", ls)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, "rsync", "-a", m.Dir+"/", dst+"/")
	if _, err := os.Stat(filepath.Join(dst, ".arrayfs")); err == nil {
		t.Fatal("rsync -a copied .arrayfs")
	}
	row := m.Path(".arrayfs/views/cell#i64/0:1")
	if got := mustRead(t, row); len(got) != 8 {
		t.Fatalf("cell#i64/0:1 is %d bytes", len(got))
	}
	// The item changes through its canonical file: the view shows it.
	f, err := os.OpenFile(m.Path("cell#i64.array"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{9, 0, 0, 0, 0, 0, 0, 0}, 0)
	f.Close()
	if got := mustRead(t, row); got[0] != 9 {
		t.Errorf("the view shows %v after the array changed, want 9 first", got)
	}
	// The item goes: its views go.
	run(t, "rm", m.Path("cell#i64.yaml"))
	if _, err := os.Stat(m.Path(".arrayfs/views/cell#i64")); err == nil {
		t.Error("the views of an array whose yaml was removed are still there")
	}
	if ls := run(t, "ls", m.Path(".arrayfs/views")); strings.Contains(ls, "cell#i64\n") {
		t.Errorf("views still lists cell#i64:\n%s", ls)
	}
	run(t, "rm", m.Path("docs/doc-000"))
	if _, err := os.Stat(m.Path(".arrayfs/views/docs/doc-000")); err == nil {
		t.Error("the views of a removed document are still there")
	}
	m.Unmount()

	vis := mount(t, m.Dataset, "views=visible")
	if ls := run(t, "ls", "-a", vis.Dir); !strings.Contains(ls, ".arrayfs") {
		t.Errorf("views=visible: ls -a does not list .arrayfs:\n%s", ls)
	}
}

// TestDerivedXattrs: getfattr shows an array data file's kind, dtype and
// shape and a document's full id and mime type; plain files keep their
// own attributes; the derived ones can be set only to what they are.
func TestDerivedXattrs(t *testing.T) {
	m := mount(t, viewsDataset(t))
	out := run(t, "getfattr", "--absolute-names", "-d", m.Path("cell,gene#X.array"), m.Path("cell,gene#sparse.indices"), m.Path("docs/a-very-long-document-identifier-that"))
	for _, want := range []string{
		`user.arrayfs.kind="dense"`, `user.arrayfs.dtype="float32"`, `user.arrayfs.shape="[1000,64]"`,
		`user.arrayfs.kind="sparse-csr"`, `user.arrayfs.dtype="int32"`,
		`user.arrayfs.id="a-very-long-document-identifier-that-exceeds-36-characters"`, `user.arrayfs.mime_type="text/plain"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("getfattr -d lacks %s:\n%s", want, out)
		}
	}
	if err := os.WriteFile(m.Path("notes.txt"), []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "setfattr", "-n", "user.note", "-v", "mine", m.Path("notes.txt"))
	if got := run(t, "getfattr", "--absolute-names", "-n", "user.note", "--only-values", m.Path("notes.txt")); got != "mine" {
		t.Errorf("a plain file's own attribute reads %q", got)
	}
	run(t, "setfattr", "-n", "user.arrayfs.dtype", "-v", "float32", m.Path("cell,gene#X.array"))
	if err := exec.Command("setfattr", "-n", "user.arrayfs.dtype", "-v", "int8", m.Path("cell,gene#X.array")).Run(); err == nil {
		t.Error("a derived attribute took another value")
	}
}

// TestMappingsSeeWritesThroughOtherPaths: a shared mapping of a
// canonical .array file, made before the write, sees a row written
// through its view and a document's bytes mapped before a write of its
// text view show the new document; a write through the canonical
// file's own mapping shows in the views at once. Every way into the
// same bytes agrees, whichever was written (issue 11's mmap promise).
func TestMappingsSeeWritesThroughOtherPaths(t *testing.T) {
	m := mount(t, viewsDataset(t))
	out := pyRun(t, `
import numpy as np, mmap, os, sys
M = sys.argv[1]
V = M + '/.arrayfs/views'
A = M + '/cell,gene#X.array'
canon = np.memmap(A, dtype='<f4', mode='r', shape=(1000, 64))
before = canon[7].copy()
with open(V + '/cell,gene#X/rows/007', 'r+b') as f:
    f.write((np.arange(64, dtype='<f4') + 100).tobytes())
assert (canon[7] == np.arange(64) + 100).all(), ('the mapping made before shows', canon[7][:4], 'was', before[:4])
# The other way: a write through a shared writable mapping of the
# canonical file, flushed (msync), reaches the row and data.npy views.
w = np.memmap(A, dtype='<f4', mode='r+', shape=(1000, 64))
w[9, :] = -7
w.flush()
row = np.frombuffer(open(V + '/cell,gene#X/rows/009', 'rb').read(), dtype='<f4')
assert (row == -7).all(), row[:4]
npy = np.load(V + '/cell,gene#X/data.npy', mmap_mode='r')
assert (npy[9] == -7).all() and (npy[7] == np.arange(64) + 100).all()
del w, canon, npy
# A document: mapped, then its text rewritten through the text view.
D = M + '/docs/doc-000'
f = open(D, 'rb')
mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
old = bytes(mm)
with open(V + '/docs/doc-000/text', 'w') as t:
    t.write('rewritten through the view')
new = open(D, 'rb').read()
assert new != old and b'rewritten through the view' in new
f2 = open(D, 'rb')
mm2 = mmap.mmap(f2.fileno(), 0, prot=mmap.PROT_READ)
assert bytes(mm2) == new, 'a new mapping shows the old document'
print('ok')
`, m.Dir)
	if strings.TrimSpace(out) != "ok" {
		t.Errorf("mappings: %s", out)
	}
}
