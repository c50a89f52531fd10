package fuse_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReusedInodeNumbersNeverShareANode: whole-file rewrites (O_TRUNC,
// write, close) of an array's data file and of a dirdb entry, both
// staged and renamed into place, free an inode number and take a new
// one over and over; the backing file system hands a freed number out
// again at once. Readers stat and read both meanwhile. Two live files
// must never be one node: before node identities carried a generation,
// the entry's new file got the array's old number, the kernel's lookup
// found the array's node, and writes to db/e.pickle landed in the array
// (or failed with the array's EFBIG).
func TestReusedInodeNumbersNeverShareANode(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	const arraySize = 4096
	os.WriteFile(filepath.Join(ds, "arr.yaml"), []byte("dtype: uint8\nshape: [4096]\nversion: [1, 0]\n"), 0o644)
	os.WriteFile(filepath.Join(ds, "arr.array"), bytes.Repeat([]byte{'A'}, arraySize), 0o644)
	os.Mkdir(filepath.Join(ds, "db"), 0o755)
	os.WriteFile(filepath.Join(ds, "db", "e.pickle"), bytes.Repeat([]byte{'b'}, 1000), 0o644)
	m := mount(t, ds)
	arr, ent := m.Path("arr.array"), m.Path("db/e.pickle")

	// uniform reports whether data is n copies of one byte within [lo, hi].
	uniform := func(data []byte, n int, lo, hi byte) bool {
		if len(data) != n || n == 0 || data[0] < lo || data[0] > hi {
			return false
		}
		return bytes.Count(data, data[:1]) == n
	}
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	w := newWorkers()
	w.loop(func(i int) bool { // rewrites the array: 'A'..'Z'
		if err := os.WriteFile(arr, bytes.Repeat([]byte{byte('A' + i%26)}, arraySize), 0o644); err != nil {
			fail("rewrite of arr.array: %v", err)
		}
		return true
	})
	w.loop(func(i int) bool { // rewrites the entry: 'a'..'z', 1000 bytes
		if err := os.WriteFile(ent, bytes.Repeat([]byte{byte('a' + i%26)}, 1000), 0o644); err != nil {
			fail("rewrite of db/e.pickle: %v", err)
		}
		return true
	})
	for r := 0; r < 2; r++ {
		w.loop(func(i int) bool { // readers
			// Both open at once: two live files, whose numbers the
			// backing file system cannot hand out again meanwhile.
			fa, err1 := os.Open(arr)
			fe, err2 := os.Open(ent)
			if err1 == nil && err2 == nil {
				var sa, se syscall.Stat_t
				if syscall.Fstat(int(fa.Fd()), &sa) == nil && syscall.Fstat(int(fe.Fd()), &se) == nil && sa.Ino == se.Ino {
					fail("arr.array and db/e.pickle, both open, show the same inode number %d", sa.Ino)
				}
				if data, err := io.ReadAll(fa); err == nil && !uniform(data, arraySize, 'A', 'Z') {
					fail("arr.array read %d bytes that are not one of its rewrites (%q...)", len(data), head(data))
				}
				if data, err := io.ReadAll(fe); err == nil && !uniform(data, 1000, 'a', 'z') {
					fail("db/e.pickle read %d bytes that are not one of its rewrites (%q...)", len(data), head(data))
				}
			}
			for _, f := range []*os.File{fa, fe} {
				if f != nil {
					f.Close()
				}
			}
			// By name, a stat sees one of the versions, whole.
			var st syscall.Stat_t
			if syscall.Stat(arr, &st) == nil && st.Size != arraySize {
				fail("stat of arr.array: size %d, want %d", st.Size, arraySize)
			}
			return true
		})
	}
	time.Sleep(10 * time.Second)
	w.halt()

	m.Unmount()
	if data := mustRead(t, filepath.Join(ds, "arr.array")); !uniform(data, arraySize, 'A', 'Z') {
		t.Errorf("backing arr.array is not one of its rewrites: %d bytes %q...", len(data), head(data))
	}
	if data := mustRead(t, filepath.Join(ds, "db", "e.pickle")); !uniform(data, 1000, 'a', 'z') {
		t.Errorf("backing db/e.pickle is not one of its rewrites: %d bytes %q...", len(data), head(data))
	}
}

func head(b []byte) string {
	if len(b) > 16 {
		b = b[:16]
	}
	return fmt.Sprintf("%s", b)
}
