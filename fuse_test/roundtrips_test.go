package fuse_test

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// requests counts the requests of the given kinds (READDIRPLUS,
// GETATTR, ...) in the log of a mount made with the debug option.
func requests(t *testing.T, m *Mount, ops ...string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(string(mustRead(t, m.Log)), "\n") {
		for _, op := range ops {
			if strings.Contains(line, ": "+op+" n") {
				n++
			}
		}
	}
	return n
}

// TestStoreListingCached: the kernel keeps a store directory's listing
// from one open to the next (a second ls costs no READDIRPLUS), and the
// copy follows every change: creates, removals and renames through the
// mount, and the original's appends beside it, also in a directory held
// open and rewound.
func TestStoreListingCached(t *testing.T) {
	ds, store := storeConnDataset(t)
	m := mount(t, ds, "debug")
	plain := mount(t, ds, "ro")
	dir := m.Path("docs")
	same := func(when string) {
		t.Helper()
		got, want := readDir(t, dir), readDir(t, plain.Path("docs"))
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: the listing has %d names, a fresh mount's %d", when, len(got), len(want))
		}
	}
	first := readDir(t, dir)
	if len(first) != 301 { // and the marker
		t.Fatalf("%d names in the store, want 301", len(first))
	}
	before := requests(t, m, "READDIRPLUS", "READDIR")
	if again := readDir(t, dir); !slices.Equal(again, first) {
		t.Fatalf("the second listing differs from the first")
	}
	if got := requests(t, m, "READDIRPLUS", "READDIR") - before; got != 0 {
		t.Errorf("the second listing of an unchanged store sent %d READDIR requests, want none", got)
	}

	if err := os.WriteFile(m.Path("docs/made-here"), pbDoc("made-here", "m"), 0o644); err != nil {
		t.Fatal(err)
	}
	if names := readDir(t, dir); !slices.Contains(names, "made-here") {
		t.Fatalf("a document created through the mount is not listed")
	}
	if err := os.Remove(m.Path("docs/d05")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.Path("docs/d06"), m.Path("docs/moved-06")); err != nil {
		t.Fatal(err)
	}
	names := readDir(t, dir)
	if slices.Contains(names, "d05") || slices.Contains(names, "d06") || !slices.Contains(names, "moved-06") {
		t.Fatalf("after a removal and a rename through the mount the listing is stale")
	}
	m.Unmount() // everything written back, for the fresh mount and the original
	m = mount(t, ds, "debug")
	dir = m.Path("docs")
	readDir(t, dir)
	readDir(t, dir)

	// The original appends beside the mount.
	pyOriginal(t, origPrelude+`orig_op(sys.argv[1], 'append')`, store)
	if !waitFor(5*time.Second, func() bool { return slices.Contains(readDir(t, dir), "new-o") }) {
		t.Fatalf("the original's append is not listed after 5 s")
	}
	same("after the original's append")

	// A directory held open and rewound sees the next one.
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(-1); err != nil {
		t.Fatal(err)
	}
	pyOriginal(t, origPrelude+`
with session(sys.argv[1], False) as dam:
    dam.append(Document(id='late', text='o'))
`, store)
	ok := waitFor(5*time.Second, func() bool {
		if _, err := f.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		names, err := f.Readdirnames(-1)
		return err == nil && slices.Contains(names, "late")
	})
	if !ok {
		t.Fatalf("a directory held open and rewound does not list the original's new document after 5 s")
	}
	same("at the end")
}

// TestSetattrAnswerKept: the kernel keeps what a SETATTR answers, so an
// open(O_TRUNC) of a plain file or a dirdb entry (OPEN, then a SETATTR
// of the size), a chmod and a utimes send no GETATTR after it.
func TestSetattrAnswerKept(t *testing.T) {
	m := mount(t, posixDataset(t), "debug")
	files := kindFiles(t, m)
	for _, p := range []string{files["plain file"][0], files["dirdb entry"][0]} {
		data := mustRead(t, p)
		before := requests(t, m, "GETATTR")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Unix(1234567890, 0), time.Unix(1234567890, 0)); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := requests(t, m, "GETATTR") - before; got != 0 {
			t.Errorf("%s: %d GETATTRs after an open(O_TRUNC), a chmod and a utimes, want none", p, got)
		}
		if st.Size() != int64(len(data)) || st.Mode().Perm() != 0o640 || st.ModTime().Unix() != 1234567890 {
			t.Errorf("%s: size %d mode %v mtime %v after the changes", p, st.Size(), st.Mode(), st.ModTime())
		}
	}
}
