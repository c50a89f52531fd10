package fuse_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dafHashes reads every array of dir with numpy (testdata/daf_hashes.py).
func dafHashes(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	out := run(t, python, filepath.Join(repoRoot, "fuse_test", "testdata", "daf_hashes.py"), dir)
	var h map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("daf_hashes.py: %v\n%s", err, out)
	}
	return h
}

// expectedArrays parses fixtures/daf/arrays.expected.txt (the original
// reader's output) into name -> field -> value.
func expectedArrays(t *testing.T) map[string]map[string]string {
	t.Helper()
	data := mustRead(t, fixturePath(t, "daf/arrays.expected.txt"))
	out := map[string]map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Split(line, "\t")
		m := map[string]string{"kind": f[1]}
		for _, kv := range f[2:] {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		out[f[0]] = m
	}
	return out
}

func TestDafFixtureArraysThroughMount(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds)
	for _, e := range readDir(t, ds) {
		sameFile(t, filepath.Join(ds, e), m.Path(e))
	}
	got := dafHashes(t, m.Dir)
	want := expectedArrays(t)
	if len(got) != len(want) {
		t.Fatalf("numpy found %d arrays through the mount, the fixture has %d", len(got), len(want))
	}
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Errorf("%s: not read through the mount", name)
			continue
		}
		switch w["kind"] {
		case "dense":
			if g["sha256"] != w["sha256"] || g["dtype"] != w["dtype"] || jsonString(g["shape"]) != w["shape"] {
				t.Errorf("%s: numpy through the mount read %v, the original reader %v", name, g, w)
			}
		case "sparse-csr":
			for _, part := range []string{"data", "indices", "indptr"} {
				if g[part] != w[part] {
					t.Errorf("%s.%s: %v, want %v", name, part, g[part], w[part])
				}
			}
		}
	}
	m.Unmount()
}

func TestDafExampleDatasetThroughMount(t *testing.T) {
	ds := fixture(t, "daf/example")
	m := mount(t, ds)
	for _, e := range readDir(t, ds) {
		sameFile(t, filepath.Join(ds, e), m.Path(e))
	}
	direct, through := dafHashes(t, ds), dafHashes(t, m.Dir)
	if len(direct) == 0 || jsonString(direct) != jsonString(through) {
		t.Errorf("numpy reads differ:\ndirect  %v\nthrough %v", direct, through)
	}
	m.Unmount()
}

func TestDafNumpyWritesPersist(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds)
	pyRun(t, `
import sys, numpy as np
a = np.memmap(sys.argv[1], dtype='float32', mode='r+', shape=(1000, 64))
a[0, :] = -1.0
a[999, 63] = 12345.5
a[500, 10:20] = np.arange(10)
a.flush()
del a
`, m.Path("cell,gene#X.array"))
	m.Unmount()
	out := pyRun(t, `
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype='float32').reshape(1000, 64)
assert (a[0] == -1).all(), a[0]
assert a[999, 63] == 12345.5
assert (a[500, 10:20] == np.arange(10)).all()
assert a[1, 0] == 64 * 0.5  # untouched: (i*64+j)*0.5
print("ok", a.size)
`, filepath.Join(ds, "cell,gene#X.array"))
	if strings.TrimSpace(out) != "ok 64000" {
		t.Fatalf("backing file after unmount: %s", out)
	}
	// And through a new mount.
	m2 := mount(t, ds)
	sameFile(t, filepath.Join(ds, "cell,gene#X.array"), m2.Path("cell,gene#X.array"))
	m2.Unmount()
}

func TestDafRefusedWritesLeaveContentIntact(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds)
	i64, flag := "cell#i64.array", "cell#flag.array"
	before := map[string][]byte{i64: mustRead(t, filepath.Join(ds, i64)), flag: mustRead(t, filepath.Join(ds, flag))}
	intact := func(what string) {
		t.Helper()
		for rel, data := range before {
			if got := mustRead(t, m.Path(rel)); !bytes.Equal(got, data) {
				t.Fatalf("after %s: %s changed through the mount (%d bytes)", what, rel, len(got))
			}
			if got := mustRead(t, filepath.Join(ds, rel)); !bytes.Equal(got, data) {
				t.Fatalf("after %s: backing %s changed (%d bytes)", what, rel, len(got))
			}
		}
	}

	// A write past the end, in place.
	out, err := runTimeout(time.Minute, "dd", "if=/dev/zero", "of="+m.Path(i64), "bs=16", "count=1", "seek=7992", "oflag=seek_bytes", "conv=notrunc")
	if err == nil || !strings.Contains(out, "File too large") {
		t.Fatalf("dd past the end: %v %s; want EFBIG", err, out)
	}
	intact("dd past the end")

	// truncate(1) to another size.
	out, err = runTimeout(time.Minute, "truncate", "-s", "10", m.Path(i64))
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("truncate: %v %s; want EINVAL", err, out)
	}
	intact("truncate")

	// cp of a file of the wrong size over the array (O_TRUNC, staged).
	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, []byte{1, 2, 3}, 0o644)
	if out, err := runTimeout(time.Minute, "cp", small, m.Path(flag)); err == nil {
		t.Fatalf("cp of 3 bytes over a 1000-byte array succeeded: %s", out)
	}
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, 1001), 0o644)
	if out, err := runTimeout(time.Minute, "cp", big, m.Path(flag)); err == nil {
		t.Fatalf("cp of 1001 bytes over a 1000-byte array succeeded: %s", out)
	}
	intact("cp of the wrong size")

	// mv of the wrong size onto the array.
	os.WriteFile(m.Path("wrong"), []byte("xyz"), 0o644)
	if out, err := runTimeout(time.Minute, "mv", m.Path("wrong"), m.Path(flag)); err == nil {
		t.Fatalf("mv of 3 bytes onto the array succeeded: %s", out)
	}
	intact("mv of the wrong size")
	names := strings.Join(readDir(t, ds), " ")
	if strings.Contains(names, ".arrayfs-stage") {
		t.Fatalf("staged files left in the dataset: %s", names)
	}

	// The right size replaces atomically, keeping mode and xattrs.
	run(t, "setfattr", "-n", "user.origin", "-v", "lab", m.Path(flag))
	run(t, "chmod", "0604", m.Path(flag))
	right := filepath.Join(t.TempDir(), "right")
	newFlags := bytes.Repeat([]byte{1, 0}, 500)
	os.WriteFile(right, newFlags, 0o644)
	run(t, "cp", right, m.Path(flag))
	if got := mustRead(t, m.Path(flag)); !bytes.Equal(got, newFlags) {
		t.Fatal("cp of the right size not visible through the mount")
	}
	// The replacement is a new backing inode; the mount shows it as soon
	// as the kernel has been told to look the name up again, well before
	// its one-second entry cache would expire by itself.
	var bst, mst syscall.Stat_t
	syscall.Stat(filepath.Join(ds, flag), &bst)
	deadline := time.Now().Add(300 * time.Millisecond)
	for syscall.Stat(m.Path(flag), &mst); mst.Ino != bst.Ino && time.Now().Before(deadline); syscall.Stat(m.Path(flag), &mst) {
		time.Sleep(10 * time.Millisecond)
	}
	if mst.Ino != bst.Ino {
		t.Errorf("after a replacement the mount shows inode %d, the backing file is %d", mst.Ino, bst.Ino)
	}
	if out := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.origin", m.Path(flag)); out != "lab" || bst.Mode&0o777 != 0o604 {
		t.Errorf("the replacement lost the file's xattr (%q) or mode (%o)", out, bst.Mode&0o777)
	}
	m.Unmount()
	if got := mustRead(t, filepath.Join(ds, flag)); !bytes.Equal(got, newFlags) {
		t.Fatal("cp of the right size not on disk")
	}
	// Every refusal was logged with the path and the reason.
	log := readFile(m.Log)
	if strings.Contains(log, "overriding ino") {
		t.Errorf("go-fuse saw two inode numbers for one node:\n%s", log)
	}
	for _, want := range []string{
		`cell#i64.array: write: refused: writing 16 bytes at offset 7992`,
		`cell#i64.array: truncate: refused: truncating to 10 bytes`,
		`cell#flag.array: close: refused: the new content is 3 bytes, its yaml says 1000`,
		`cell#flag.array: rename: refused: wrong is 3 bytes`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// The pool holds dirty chunks until a write-back point (the close of the
// file, SIGTERM) writes them back.
func TestDafSigtermWritesBack(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds, "writeback=0")
	payload := bytes.Repeat([]byte{0xAB}, 200000)
	// The pool is looked at while the file is open: the close of its
	// last handle writes it back (in the background, which would race
	// with the look).
	f, err := os.OpenFile(m.Path("cell,gene#X.array"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 0); err != nil {
		t.Fatal(err)
	}
	if s := m.stats(); s.Pool.Units == 0 {
		t.Fatalf("no dirty units in the pool after a write: %+v", s.Pool)
	}
	f.Close()
	m.Signal(syscall.SIGTERM)
	if !regexp.MustCompile(`everything written back \([1-9][0-9]* units`).MatchString(readFile(m.Log)) {
		t.Fatalf("the daemon did not write back its units at SIGTERM:\n%s", readFile(m.Log))
	}
	got := mustRead(t, filepath.Join(ds, "cell,gene#X.array"))
	if !bytes.Equal(got[:len(payload)], payload) || len(got) != 256000 {
		t.Fatal("data written before SIGTERM is not in the backing file")
	}
}

// umount(8) from outside: the daemon still writes back before it exits.
func TestDafExternalUmountWritesBack(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds, "writeback=0")
	run(t, "dd", "if=/dev/urandom", "of="+m.Path("cell,gene#u8.array"), "bs=1000", "count=64", "conv=notrunc", "status=none")
	want := mustRead(t, m.Path("cell,gene#u8.array"))
	run(t, "umount", m.Dir)
	m.waitGone(time.Minute)
	m.finish()
	if !regexp.MustCompile(`everything written back \([1-9][0-9]* units`).MatchString(readFile(m.Log)) {
		t.Fatalf("no write-back after an external umount:\n%s", readFile(m.Log))
	}
	if got := mustRead(t, filepath.Join(ds, "cell,gene#u8.array")); !bytes.Equal(got, want) {
		t.Fatal("backing file differs from what was written")
	}
}

func TestDafCorruptDatasetMountsAndChecks(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	bad := map[string]string{
		"baddtype.yaml":  "dtype: complex128\nshape: [2]\nversion: [1, 0]\n",
		"baddtype.array": strings.Repeat("x", 32),
		"badver.yaml":    "dtype: int8\nshape: [2]\nversion: [3, 0]\n",
		"badver.array":   "xx",
		"mismatch.yaml":  "dtype: int32\nshape: [10]\nversion: [1, 0]\n",
		"mismatch.array": "12 bytes....",
		"both.yaml":      "dtype: int8\nshape: [2]\nversion: [1, 0]\n",
		"both.array":     "xx",
		"both.data":      "xx",
		"garbled.yaml":   "dtype: [int8\n  shape: {{\n",
		"garbled.array":  "xx",
		"created.yaml":   "2022-07-06 16:49:44\n",
	}
	for name, content := range bad {
		os.WriteFile(filepath.Join(ds, name), []byte(content), 0o644)
	}
	m := mount(t, ds)
	for i := 0; i < 2; i++ {
		for name := range bad {
			sameFile(t, filepath.Join(ds, name), m.Path(name))
		}
	}
	// Corrupt items are plain files: writing past their "size" works.
	os.WriteFile(m.Path("mismatch.array"), []byte("now 40 bytes, the yaml's size..........."), 0o644)
	// Valid items are still served as arrays.
	if got := dafHashes(t, m.Dir)["cell,gene#X"]; got == nil || got["sha256"] != expectedArrays(t)["cell,gene#X"]["sha256"] {
		t.Errorf("valid array beside corrupt ones: %v", got)
	}
	out, err := runTimeout(time.Minute, arrayfsBin, "check", ds)
	if exit, ok := err.(interface{ ExitCode() int }); !ok || exit.ExitCode() != 1 {
		t.Fatalf("arrayfs check exit: %v\n%s", err, out)
	}
	for _, want := range []string{"baddtype.yaml: unknown dtype", "badver.yaml: unsupported format version 3.0",
		"both.yaml: conflict: both both.array and both.data exist", "garbled.yaml: unreadable yaml"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "mismatch") || strings.Contains(out, "created.yaml") || strings.Contains(out, "cell,gene#X") {
		t.Errorf("check reports valid items:\n%s", out)
	}
	m.Unmount()
	log := readFile(m.Log)
	for _, want := range []string{"baddtype.yaml: unknown dtype", "garbled.yaml: unreadable yaml", "both.yaml: conflict"} {
		if n := strings.Count(log, want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, log)
		}
	}
	if out, err := runTimeout(time.Minute, arrayfsBin, "check", fixture(t, "daf/example")); err != nil {
		t.Errorf("check of the daf example: %v\n%s", err, out)
	}
}

// Copying NAME.array and then NAME.yaml into the mount makes an array.
func TestDafArrayRecognisedWhenYamlArrives(t *testing.T) {
	ds := t.TempDir()
	m := mount(t, ds)
	src := fixture(t, "daf/arrays")
	run(t, "cp", filepath.Join(src, "cell#i64.array"), m.Dir)
	// Plain for now: it can grow.
	run(t, "dd", "if=/dev/zero", "of="+m.Path("cell#i64.array"), "bs=8", "count=1", "seek=1000", "conv=notrunc", "status=none")
	run(t, "truncate", "-s", "8000", m.Path("cell#i64.array"))
	run(t, "cp", filepath.Join(src, "cell#i64.yaml"), m.Dir)
	out, err := runTimeout(time.Minute, "dd", "if=/dev/zero", "of="+m.Path("cell#i64.array"), "bs=8", "count=1", "seek=1000", "conv=notrunc")
	if err == nil || !strings.Contains(out, "File too large") {
		t.Fatalf("once its yaml is there, the array must refuse to grow: %v %s", err, out)
	}
	if got := dafHashes(t, m.Dir)["cell#i64"]; got == nil || got["sha256"] != expectedArrays(t)["cell#i64"]["sha256"] {
		t.Errorf("array copied in: %v", got)
	}
	m.Unmount()
}

func readDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.ReplaceAll(string(b), ",", ", ")
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestArrayReadersPassThroughOnReadOnlyMounts: on a read-only mount the
// kernel reads an array's data file itself (FUSE passthrough): read(),
// numpy's memmap and a view all show the file's bytes, and the daemon
// serves no READ of the data file. A read-write mount serves them (a
// writer may open the file at any time, and the kernel refuses a
// non-passthrough open of an inode open in passthrough).
func TestArrayReadersPassThroughOnReadOnlyMounts(t *testing.T) {
	// Passthrough needs CAP_SYS_ADMIN in the daemon; elsewhere the
	// daemon serves the reads (and the bytes must be the same).
	root := os.Geteuid() == 0
	ds := fixture(t, "daf/arrays")
	want := mustRead(t, filepath.Join(ds, "cell,gene#X.array"))
	for _, c := range []struct {
		opt         string
		passthrough bool
	}{{"ro", root}, {"rw", false}} {
		m := mount(t, ds, c.opt)
		if got := mustRead(t, m.Path("cell,gene#X.array")); !bytes.Equal(got, want) {
			t.Fatalf("%s: read differs from the backing file", c.opt)
		}
		out := pyRun(t, `
import numpy as np, sys
a = np.memmap(sys.argv[1], dtype='<f4', mode='r', shape=(1000, 64))
b = np.fromfile(sys.argv[2], dtype='<f4').reshape(1000, 64)
print((a == b).all())
`, m.Path("cell,gene#X.array"), filepath.Join(ds, "cell,gene#X.array"))
		if strings.TrimSpace(out) != "True" {
			t.Fatalf("%s: numpy memmap through the mount differs: %s", c.opt, out)
		}
		if reads := m.stats().Reads.Array; (reads == 0) != c.passthrough {
			t.Errorf("%s: the daemon served %d READs of the array, passthrough wanted: %v", c.opt, reads, c.passthrough)
		}
		m.Unmount()
	}
}
