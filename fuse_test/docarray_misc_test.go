package fuse_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDocLongAndEscapedNames: keys that cannot be file names as they
// are: escaped, or shortened with a hash past 255 bytes; both read
// back, and the shortened one can be rewritten in place.
func TestDocLongAndEscapedNames(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("😀", 80) // 320 bytes of UTF-8
	docs := []storeDoc{
		{"plain", pbDoc("plain", "p")},
		{long, pbDoc(long, "long")},
		{"../x", pbDoc("../x", "dots and a slash")},
		{"..", pbDoc("..", "dotdot")},
		{"100%", pbDoc("100%", "percent")},
	}
	writeDocStore(t, filepath.Join(root, "s"), 80, docs)
	m := mount(t, root)
	names := readdirNames(t, m.Path("s"))
	if len(names) != 6 || names[0] != "plain" || names[2] != "..%2Fx" || names[3] != "%2E%2E" || names[4] != "100%25" {
		t.Fatalf("names %q", names)
	}
	if n := names[1]; len(n) > 255 || !strings.Contains(n, "%#") || !strings.HasPrefix(n, "😀😀") {
		t.Fatalf("long key's name %q (%d bytes)", n, len(n))
	}
	for i, n := range names[:5] {
		if got := mustRead(t, m.Path("s/"+n)); !bytes.Equal(got, docs[i].Data) {
			t.Errorf("%s: %q", n, got)
		}
	}
	newLong := pbDoc(long, "rewritten through the shortened name")
	if err := os.WriteFile(m.Path("s/"+names[1]), newLong, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("s/50%off"), pbDoc("x", "y"), 0o644); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("non-canonical name: %v", err)
	}
	m.Unmount()
	docs[1].Data = newLong
	sameDocs(t, "on disk", readDocStore(t, filepath.Join(root, "s"), 80).Docs, docs)
}

// TestDocMoveAndExchange: mv between two stores moves the document (and
// its inode number); RENAME_EXCHANGE swaps two names in a store.
func TestDocMoveAndExchange(t *testing.T) {
	root := t.TempDir()
	a, b, c := pbDoc("a", "A"), pbDoc("b", "B"), pbDoc("c", "C")
	writeDocStore(t, filepath.Join(root, "s1"), 36, []storeDoc{{"a", a}, {"b", b}})
	writeDocStore(t, filepath.Join(root, "s2"), 36, []storeDoc{{"c", c}})
	m := mount(t, root)
	var st0, st1 syscall.Stat_t
	syscall.Stat(m.Path("s1/a"), &st0)
	run(t, "mv", m.Path("s1/a"), m.Path("s2/a-moved"))
	if err := syscall.Stat(m.Path("s2/a-moved"), &st1); err != nil || st1.Ino != st0.Ino {
		t.Errorf("moved document: inode %d, was %d (%v)", st1.Ino, st0.Ino, err)
	}
	if err := renameExchange(m.Path("s2/c"), m.Path("s2/a-moved")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, m.Path("s2/c")); !bytes.Equal(got, a) {
		t.Errorf("after exchange c holds %q", got)
	}
	m.Unmount()
	sameDocs(t, "s1", readDocStore(t, filepath.Join(root, "s1"), 36).Docs, []storeDoc{{"b", b}})
	sameDocs(t, "s2", readDocStore(t, filepath.Join(root, "s2"), 36).Docs, []storeDoc{{"a-moved", c}, {"c", a}})
}

// TestDocUntouchedMtimeAndLocks: an untouched document shows body.bin's
// mtime as first seen, and keeps it; a read-only mount refuses writes;
// a second mount of a locked store serves it read-only.
func TestDocUntouchedMtimeAndLocks(t *testing.T) {
	root, _ := fixtureStore(t)
	body := filepath.Join(root, "store", "body.bin")
	first, _ := os.Stat(body)
	m := mount(t, root)
	if fi, err := os.Stat(m.Path("store/doc-010")); err != nil || !fi.ModTime().Equal(first.ModTime()) {
		t.Errorf("untouched mtime %v, body.bin %v (%v)", fi.ModTime(), first.ModTime(), err)
	}
	// A second writable mount of the dataset is refused (mounts_test.go);
	// a read-only one serves the store beside the first.
	m2 := mount(t, root, "ro")
	if err := os.WriteFile(m2.Path("store/x"), pbDoc("x", "x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through a read-only mount: %v", err)
	}
	if got := mustRead(t, m2.Path("store/doc-010")); len(got) == 0 {
		t.Error("store not readable through a second, read-only mount")
	}
	m2.Unmount()
	m.Unmount()
	later := first.ModTime().Add(time.Hour)
	os.Chtimes(body, later, later)
	m = mount(t, root, "ro")
	if fi, err := os.Stat(m.Path("store/doc-010")); err != nil || !fi.ModTime().Equal(first.ModTime()) {
		t.Errorf("untouched mtime after body.bin changed: %v, want %v (%v)", fi.ModTime(), first.ModTime(), err)
	}
	if err := os.WriteFile(m.Path("store/doc-010"), pbDoc("x", "x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write on a read-only mount: %v", err)
	}
	m.Unmount()
}

// TestSavedIndexBesideTheStore: the first open of a store saves its
// index beside it (.arrayfs-docindex), which the next mount reads; the
// mount never shows it, rsync does not copy it, and the original
// DocumentArrayMemmap is unbothered by it.
func TestSavedIndexBesideTheStore(t *testing.T) {
	requireFUSE(t)
	ds := filepath.Join(t.TempDir(), "ds")
	run(t, "mkdir", ds)
	run(t, "cp", "-r", fixturePath(t, "docarray/store"), filepath.Join(ds, "docs"))
	run(t, "chmod", "-R", "u+w", ds)
	// An index is saved only of a header.bin older than the racy window.
	time.Sleep(2100 * time.Millisecond)
	m := mount(t, ds)
	want := mustRead(t, m.Path("docs/doc-000"))
	index := m.Backing("docs/.arrayfs-docindex")
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(index); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(index); err != nil {
		t.Fatalf("no saved index after the first open: %v", err)
	}
	m.Unmount()

	m = mount(t, ds)
	if ls := run(t, "ls", "-a", m.Path("docs")); strings.Contains(ls, ".arrayfs-docindex") {
		t.Fatalf("the mount shows the saved index:\n%s", ls)
	}
	if _, err := os.Stat(m.Path("docs/.arrayfs-docindex")); err == nil {
		t.Fatal("the saved index can be looked up through the mount")
	}
	if got := mustRead(t, m.Path("docs/doc-000")); !bytes.Equal(got, want) {
		t.Fatal("a document read through the saved index differs")
	}
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, "rsync", "-a", m.Dir+"/", dst+"/")
	if _, err := os.Stat(filepath.Join(dst, "docs/.arrayfs-docindex")); err == nil {
		t.Fatal("rsync copied the saved index")
	}
	m.Unmount()
	out := pyOriginal(t, `
import sys
from docarray.memmap import DocumentArrayMemmap
dam = DocumentArrayMemmap(sys.argv[1])
print(len(dam), dam['doc-000'].text)
`, filepath.Join(ds, "docs"))
	if !strings.HasPrefix(out, "39 hello world #0") {
		t.Fatalf("the original reads: %q", out)
	}
}
