package fuse_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// An fsx of our own: random operations on a plain file, a daf array
// file, a dirdb entry and a document, through the mount, against an
// in-memory model of what each must hold, every read checked; and
// after each close, what the backing file (for the formats whose file is
// the bytes: plain, array, dirdb) holds. ARRAYFS_FSX_OPS sets the
// number of operations (scripts/fsx); scripts/test runs a short pass.

// modelFile is one file of the model: where it is now and its bytes.
type modelFile struct {
	kind    string // plain, array, dirdb, document
	name    string // dataset-relative path now
	names   [2]string
	data    []byte
	exists  bool
	fixed   bool // its size never changes (an array's is the yaml's)
	backing bool // the backing file holds exactly its bytes after a close
}

type model struct {
	t     *testing.T
	rng   *rand.Rand
	root  string
	m     *Mount
	files []*modelFile
	ops   map[string]int
	// verbose logs every operation (ARRAYFS_FSX_VERBOSE=1).
	verbose bool
}

func TestModelRandomOps(t *testing.T) {
	n := 400
	if v := os.Getenv("ARRAYFS_FSX_OPS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("ARRAYFS_FSX_OPS=%q: %v", v, err)
		}
	}
	seed := uint64(1)
	if v := os.Getenv("ARRAYFS_FSX_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	root := fixtureDataset(t, map[string]string{"db": "dirdb/db"})
	os.Mkdir(filepath.Join(root, "plain"), 0o755)
	const rows, cols = 16, 256 // float32: 16 KiB
	os.WriteFile(filepath.Join(root, "cell,gene#M.yaml"), []byte(fmt.Sprintf("dtype: float32\nshape:\n- %d\n- %d\nversion:\n- 1\n- 0\n", rows, cols)), 0o644)
	array := make([]byte, rows*cols*4)
	os.WriteFile(filepath.Join(root, "cell,gene#M.array"), array, 0o644)
	os.WriteFile(filepath.Join(root, "plain", "f"), []byte("plain"), 0o644)
	doc := pbDoc("modeldoc", "first")
	md := &model{t: t, rng: rand.New(rand.NewPCG(seed, 7)), root: root, ops: map[string]int{}, verbose: os.Getenv("ARRAYFS_FSX_VERBOSE") != ""}
	md.m = mount(t, root)
	if err := os.WriteFile(md.m.Path("store/modeldoc"), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	set := mustRead(t, filepath.Join(root, "db", "set-000.pickle"))
	md.files = []*modelFile{
		{kind: "plain", names: [2]string{"plain/f", "plain/g"}, data: []byte("plain"), exists: true, backing: true},
		{kind: "array", names: [2]string{"cell,gene#M.array", "cell,gene#M.array"}, data: array, exists: true, fixed: true, backing: true},
		{kind: "dirdb", names: [2]string{"db/set-000.pickle", "db/set-900.pickle"}, data: set, exists: true, backing: true},
		{kind: "document", names: [2]string{"store/modeldoc", "store/modeldoc-moved"}, data: doc, exists: true},
	}
	for _, f := range md.files {
		f.name = f.names[0]
	}
	for i := range n {
		f := md.files[md.rng.IntN(len(md.files))]
		md.step(i, f)
		if md.rng.IntN(200) == 0 {
			md.op("remount")
			md.m.Unmount()
			md.m = mount(t, root)
			for _, g := range md.files {
				md.check(i, g, "after a remount")
			}
		}
		if t.Failed() {
			t.Fatalf("stopped at operation %d (seed %d); operations so far: %v", i, seed, md.ops)
		}
	}
	t.Logf("%d operations, no mismatch: %v", n, md.ops)
}

func (md *model) op(name string) {
	md.ops[name]++
	if md.verbose {
		md.t.Logf("%s", name)
	}
}

// step does one random operation on f and checks f after it.
func (md *model) step(i int, f *modelFile) {
	t, rng := md.t, md.rng
	p := md.m.Path(f.name)
	if !f.exists {
		// Create it again, whole.
		md.op(f.kind + " create")
		data := md.newContent(f, 1+rng.IntN(5000))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Errorf("op %d: create %s: %v", i, f.name, err)
			return
		}
		f.data, f.exists = data, true
		md.check(i, f, "after create")
		return
	}
	switch r := rng.IntN(100); {
	case r < 30 && f.kind != "document": // writes at offsets, through one handle
		md.op(f.kind + " write")
		h, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Errorf("op %d: open %s: %v", i, f.name, err)
			return
		}
		data := bytes.Clone(f.data)
		for range 1 + rng.IntN(4) {
			limit := 70000
			if f.fixed {
				limit = len(data)
			}
			off := rng.IntN(limit)
			buf := randomBytes(rng, 1+rng.IntN(min(9000, limit-off)))
			if _, err := h.WriteAt(buf, int64(off)); err != nil {
				t.Errorf("op %d: write %s at %d: %v", i, f.name, off, err)
				h.Close()
				return
			}
			if off+len(buf) > len(data) {
				data = append(data, make([]byte, off+len(buf)-len(data))...)
			}
			copy(data[off:], buf)
			// The handle reads its own writes.
			got := make([]byte, len(data)+1)
			if n, _ := h.ReadAt(got, 0); !bytes.Equal(got[:n], data) {
				t.Errorf("op %d: %s read back through the writing handle: %d bytes, differs from what was written", i, f.name, n)
			}
		}
		if rng.IntN(3) == 0 {
			md.op(f.kind + " fsync")
			if err := h.Sync(); err != nil {
				t.Errorf("op %d: fsync %s: %v", i, f.name, err)
			}
		}
		if err := h.Close(); err != nil {
			t.Errorf("op %d: close %s: %v", i, f.name, err)
		}
		f.data = data
		md.check(i, f, "after writes at offsets")
	case r < 45 && !f.fixed: // truncate (a document's content must stay a document)
		if f.kind == "document" {
			md.replaceDoc(i, f)
			return
		}
		md.op(f.kind + " truncate")
		size := rng.IntN(len(f.data) + 3000)
		if err := os.Truncate(p, int64(size)); err != nil {
			t.Errorf("op %d: truncate %s to %d: %v", i, f.name, size, err)
			return
		}
		if size <= len(f.data) {
			f.data = f.data[:size]
		} else {
			f.data = append(f.data, make([]byte, size-len(f.data))...)
		}
		md.check(i, f, "after truncate")
	case r < 60: // replace the whole content (O_TRUNC), or an append
		if f.kind == "document" {
			md.replaceDoc(i, f)
			return
		}
		if f.fixed {
			md.op(f.kind + " rewrite")
			data := randomBytes(rng, len(f.data))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Errorf("op %d: rewrite %s: %v", i, f.name, err)
				return
			}
			f.data = data
			md.check(i, f, "after a rewrite")
			return
		}
		md.op(f.kind + " append")
		h, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Errorf("op %d: open %s O_APPEND: %v", i, f.name, err)
			return
		}
		buf := randomBytes(rng, 1+rng.IntN(3000))
		_, werr := h.Write(buf)
		cerr := h.Close()
		if werr != nil || cerr != nil {
			t.Errorf("op %d: append to %s: %v, close %v", i, f.name, werr, cerr)
			return
		}
		f.data = append(f.data, buf...)
		md.check(i, f, "after an append")
	case r < 70 && f.kind == "document": // a write that leaves no document is refused
		md.op("document refused write")
		h, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Errorf("op %d: open %s O_TRUNC: %v", i, f.name, err)
			return
		}
		h.Write([]byte{0xff, 0xff, 0xff, 0xff})
		if err := h.Close(); err == nil {
			t.Errorf("op %d: %s: the close of bytes that are no document succeeded", i, f.name)
		}
		md.check(i, f, "after a refused write")
	case r < 78 && f.names[0] != f.names[1]: // rename to its other name
		md.op(f.kind + " rename")
		to := f.names[0]
		if f.name == to {
			to = f.names[1]
		}
		if err := os.Rename(p, md.m.Path(to)); err != nil {
			t.Errorf("op %d: rename %s to %s: %v", i, f.name, to, err)
			return
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("op %d: %s still there after its rename: %v", i, f.name, err)
		}
		f.name = to
		md.check(i, f, "after a rename")
	case r < 82 && !f.fixed: // unlink (created again by a later step)
		md.op(f.kind + " unlink")
		if err := os.Remove(p); err != nil {
			t.Errorf("op %d: unlink %s: %v", i, f.name, err)
			return
		}
		f.exists = false
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("op %d: %s still there after unlink: %v", i, f.name, err)
		}
	default:
		md.op(f.kind + " read")
		md.check(i, f, "")
	}
}

// replaceDoc writes a new document over f (open O_TRUNC, write, close).
func (md *model) replaceDoc(i int, f *modelFile) {
	md.op("document replace")
	data := md.newContent(f, 1+md.rng.IntN(3000))
	if err := os.WriteFile(md.m.Path(f.name), data, 0o644); err != nil {
		md.t.Errorf("op %d: replace document %s: %v", i, f.name, err)
		return
	}
	f.data = data
	md.check(i, f, "after a replacement")
}

// newContent is content f may hold: a document for a document.
func (md *model) newContent(f *modelFile, size int) []byte {
	if f.kind == "document" {
		return pbDoc(filepath.Base(f.name), fmt.Sprintf("text %x", randomBytes(md.rng, size/2)))
	}
	return randomBytes(md.rng, size)
}

// check reads f through the mount (and its backing file where that is
// the bytes) and compares with the model; a name f is not at must not
// exist.
func (md *model) check(i int, f *modelFile, when string) {
	t := md.t
	t.Helper()
	got, err := os.ReadFile(md.m.Path(f.name))
	if !f.exists {
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("op %d %s: %s exists, the model says it does not (%v)", i, when, f.name, err)
		}
		return
	}
	if err != nil {
		t.Errorf("op %d %s: read %s: %v", i, when, f.name, err)
		return
	}
	if !bytes.Equal(got, f.data) {
		t.Errorf("op %d %s: %s through the mount: %d bytes, the model has %d (first difference at %d)", i, when, f.name, len(got), len(f.data), firstDiff(got, f.data))
	}
	if st, err := os.Stat(md.m.Path(f.name)); err != nil || st.Size() != int64(len(f.data)) {
		t.Errorf("op %d %s: stat %s: size %v, %v; the model has %d", i, when, f.name, sizeOf(st), err, len(f.data))
	}
	if f.backing {
		if b, err := os.ReadFile(filepath.Join(md.root, f.name)); err != nil || !bytes.Equal(b, f.data) {
			t.Errorf("op %d %s: the backing file of %s: %d bytes, %v; the model has %d (first difference at %d)", i, when, f.name, len(b), err, len(f.data), firstDiff(b, f.data))
		}
	}
	for _, other := range f.names {
		if other != f.name {
			if _, err := os.Lstat(md.m.Path(other)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("op %d %s: %s exists beside %s: %v", i, when, other, f.name, err)
			}
		}
	}
}

func sizeOf(st os.FileInfo) any {
	if st == nil {
		return "?"
	}
	return st.Size()
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
