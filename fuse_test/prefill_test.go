package fuse_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pyBuiltinRead reads each file with Python's builtin open(), which asks
// isatty (an IOCTL) before its first read, and prints each file's bytes
// as hex, one per line.
const pyBuiltinRead = `
import sys
for p in sys.argv[1:]:
    with open(p, 'rb') as f:
        print(f.read().hex())
`

// pyReadsMatch reads paths with Python's builtin open() (pyBuiltinRead)
// and fails unless each reads want of its name (what a plain mount
// reads).
func pyReadsMatch(t *testing.T, what string, paths []string, want map[string][]byte) {
	t.Helper()
	out := strings.Fields(pyRun(t, pyBuiltinRead, paths...))
	if len(out) != len(paths) {
		t.Fatalf("%s: read %d of %d documents", what, len(out), len(paths))
	}
	for i, p := range paths {
		if out[i] != hex.EncodeToString(want[filepath.Base(p)]) {
			t.Fatalf("%s: %s differs from a plain mount's", what, p)
		}
	}
}

// TestStoreConnectionPrefill: on a store connection a document's bytes
// are put into the page cache at the IOCTL that Python's open() sends,
// so its first read needs no READ; and a document the original changes
// while readers loop over it is never left stale in that cache.
func TestStoreConnectionPrefill(t *testing.T) {
	ds, store := storeConnDataset(t)
	m := mount(t, ds, "ro,store_connections")
	plain := mount(t, ds, "ro")
	want := docBytes(t, plain.Path("docs"))
	names := readDir(t, m.Path("docs"))
	if !waitFor(5*time.Second, func() bool { return storeConnAt(m.Path("docs")) }) {
		t.Fatalf("no store connection mounted at %s after a listing", m.Path("docs"))
	}
	var paths []string
	for _, name := range names {
		if name != ".docarray" {
			paths = append(paths, m.Path("docs/"+name))
		}
	}
	if len(paths) != 300 {
		t.Fatalf("%d documents listed, want 300", len(paths))
	}
	before := m.stats().Reads
	pyReadsMatch(t, "through the store connection", paths, want)
	after := m.stats().Reads
	if got := after.DocumentsPrefilled - before.DocumentsPrefilled; got != 300 {
		t.Errorf("%d documents put into the page cache at their IOCTL, want 300", got)
	}
	if got := after.Document - before.Document; got != 0 {
		t.Errorf("%d READs of documents read after their IOCTL, want none", got)
	}
	// A program that never asks isatty still reads through READ.
	if b := mustRead(t, m.Path("docs/d02")); !bytes.Equal(b, want["d02"]) {
		t.Fatalf("d02 read by Go differs: %q", b)
	}

	// Readers loop over d02 and d03 with open() while the original
	// rewrites them, each rewrite a change behind the mount's back.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := filepath.Join(t.TempDir(), "stop")
	loop := exec.CommandContext(ctx, python, "-c", `
import os, sys
while not os.path.exists(sys.argv[1]):
    for p in sys.argv[2:]:
        with open(p, 'rb') as f:
            f.read()
`, stop, m.Path("docs/d02"), m.Path("docs/d03"))
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	pyOriginal(t, origPrelude+`
for k in range(12):
    orig_op(sys.argv[1], 'set:d02=w%d' % k)
    orig_op(sys.argv[1], 'set:d03=w%d' % k)
`, store)
	os.WriteFile(stop, nil, 0o644)
	if err := loop.Wait(); err != nil {
		t.Fatalf("the reader loop: %v", err)
	}
	final := map[string][]byte{}
	ok := waitFor(5*time.Second, func() bool {
		for _, name := range []string{"d02", "d03"} {
			final[name] = mustRead(t, plain.Path("docs/"+name))
		}
		out := strings.Fields(pyRun(t, pyBuiltinRead, m.Path("docs/d02"), m.Path("docs/d03")))
		return bytes.Contains(final["d02"], []byte("w11")) && bytes.Contains(final["d03"], []byte("w11")) &&
			len(out) == 2 && out[0] == hex.EncodeToString(final["d02"]) && out[1] == hex.EncodeToString(final["d03"])
	})
	if !ok {
		t.Fatalf("5 s after the original's last rewrite, open() on the store connection does not read it")
	}
	// And it stays so: nothing stale lands in the cache later.
	for i := 0; i < 10; i++ {
		out := strings.Fields(pyRun(t, pyBuiltinRead, m.Path("docs/d02"), m.Path("docs/d03")))
		if len(out) != 2 || out[0] != hex.EncodeToString(final["d02"]) || out[1] != hex.EncodeToString(final["d03"]) {
			t.Fatalf("read %d after the last rewrite: an older version came back", i)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDocumentPrefilledAtOpen: on a read-write mount a document's bytes
// are put into the page cache at its first OPEN, so its first read by
// Python's open() sends no READ and the next pass no GETATTR (the kernel
// marks atime stale after each READ on a writable mount); and what is
// written through the mount is what the next open() reads.
func TestDocumentPrefilledAtOpen(t *testing.T) {
	ds, _ := storeConnDataset(t)
	m := mount(t, ds, "debug")
	plain := mount(t, ds, "ro")
	want := docBytes(t, plain.Path("docs"))
	var paths []string
	for _, name := range readDir(t, m.Path("docs")) {
		if name != ".docarray" {
			paths = append(paths, m.Path("docs/"+name))
		}
	}
	if len(paths) != 300 {
		t.Fatalf("%d documents listed, want 300", len(paths))
	}
	before := m.stats().Reads
	pyReadsMatch(t, "first pass", paths, want)
	after := m.stats().Reads
	if got := after.DocumentsPrefilled - before.DocumentsPrefilled; got != 300 {
		t.Errorf("%d documents put into the page cache at their first OPEN, want 300", got)
	}
	if got := after.Document - before.Document; got != 0 {
		t.Errorf("%d READs of documents on their first pass, want none", got)
	}
	sent := requests(t, m, "GETATTR", "READ")
	pyReadsMatch(t, "second pass", paths, want)
	if got := requests(t, m, "GETATTR", "READ") - sent; got != 0 {
		t.Errorf("the second pass sent %d GETATTR and READ requests, want none", got)
	}

	// What is written through the mount is what open() reads next, for
	// documents read before (their pages dropped at the commit) and new
	// ones (put into the cache at their first reader's OPEN).
	for k := 0; k < 20; k++ {
		for _, name := range []string{fmt.Sprintf("d%02d", k), fmt.Sprintf("new-%02d", k)} {
			doc := pbDoc(name, fmt.Sprintf("written through the mount, %s, round %d", name, k))
			if err := os.WriteFile(m.Path("docs/"+name), doc, 0o644); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				out := strings.TrimSpace(pyRun(t, pyBuiltinRead, m.Path("docs/"+name)))
				if out != hex.EncodeToString(doc) {
					t.Fatalf("%s read by open() (%d) after it was written: %s, want %x", name, i, out, doc)
				}
			}
			if b := mustRead(t, m.Path("docs/"+name)); !bytes.Equal(b, doc) {
				t.Fatalf("%s read by Go after it was written differs", name)
			}
		}
	}
}

// TestPrefillAtOpenRacingWriters: a document's first OPEN, which puts it
// into the page cache, races a writer of the same document; a read that
// starts after the writer's close returned reads what it wrote, never
// the version the first OPEN put into the cache. (What a read sees while
// the writer has the document open is not checked: the kernel gives the
// file the writer's size, and a reader reads its own version within it,
// so it may see it empty or cut or padded with zeros.)
func TestPrefillAtOpenRacingWriters(t *testing.T) {
	ds, _ := storeConnDataset(t)
	m := mount(t, ds)
	for i := 0; i < 150; i++ {
		p := m.Path(fmt.Sprintf("docs/race-%03d", i))
		v0, v1 := pbDoc("race", fmt.Sprintf("v0 %d", i)), pbDoc("race", fmt.Sprintf("v1 %d, longer than v0", i))
		if err := os.WriteFile(p, v0, 0o644); err != nil {
			t.Fatal(err)
		}
		var written atomic.Bool
		done := make(chan error, 1)
		go func() {
			err := os.WriteFile(p, v1, 0o644)
			written.Store(true)
			done <- err
		}()
		for n := 0; ; n++ {
			after := written.Load()
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if after {
				if !bytes.Equal(b, v1) {
					t.Fatalf("%s: a read started after the writer's close read the version before it", p)
				}
				if n > 0 {
					break
				}
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
