package fuse_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// posixDataset is a dataset with a docarray store (store/), a dirdb
// database (db/) and plain files (plain/), from the fixtures.
func posixDataset(t *testing.T) string {
	t.Helper()
	root, _ := fixtureStore(t)
	run(t, "cp", "-r", fixturePath(t, "dirdb/db"), filepath.Join(root, "db"))
	run(t, "chmod", "-R", "u+w", filepath.Join(root, "db"))
	if err := os.Mkdir(filepath.Join(root, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"p1", "p2", "p3", "p4"} {
		if err := os.WriteFile(filepath.Join(root, "plain", n), []byte("plain file "+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// kindFiles are, per kind of file, the directory and three of its files.
func kindFiles(t *testing.T, m *Mount) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for kind, dir := range map[string]string{"document": "store", "dirdb entry": "db", "plain file": "plain"} {
		var names []string
		ents, err := os.ReadDir(m.Path(dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && (dir != "db" || strings.HasSuffix(e.Name(), ".pickle")) {
				names = append(names, filepath.Join(m.Path(dir), e.Name()))
			}
		}
		if len(names) < 3 {
			t.Fatalf("%s: %d files, want 3 or more", dir, len(names))
		}
		out[kind] = names[:3]
	}
	return out
}

func fstat(t *testing.T, f *os.File) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatalf("fstat %s: %v", f.Name(), err)
	}
	return st
}

// TestOpenFilesOutliveTheirName: a document, a dirdb entry and a plain
// file open for reading or writing go on working after their name is
// unlinked or renamed over, as on ext4: fstat answers with nlink 0 and
// the size the descriptor sees, reads return its bytes, writes succeed,
// close succeeds, and nothing of it appears under any name.
func TestOpenFilesOutliveTheirName(t *testing.T) {
	root := posixDataset(t)
	m := mount(t, root)
	for kind, files := range kindFiles(t, m) {
		a, b, c := files[0], files[1], files[2]
		old := mustRead(t, b)

		// A reader, unlinked.
		r, err := os.Open(a)
		if err != nil {
			t.Fatal(err)
		}
		want := mustRead(t, a)
		if err := os.Remove(a); err != nil {
			t.Fatalf("%s: unlink: %v", kind, err)
		}
		if st := fstat(t, r); st.Nlink != 0 || st.Size != int64(len(want)) {
			t.Errorf("%s: fstat of a reader after unlink: nlink %d size %d, want 0 and %d", kind, st.Nlink, st.Size, len(want))
		}
		got := make([]byte, len(want)+10)
		if n, err := r.ReadAt(got, 0); n != len(want) || !bytes.Equal(got[:n], want) {
			t.Errorf("%s: read after unlink: %d bytes, %v", kind, n, err)
		}
		r.Close()

		// A reader of b, renamed over by c: it keeps b's bytes.
		r, err = os.Open(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(c, b); err != nil {
			t.Fatalf("%s: rename over: %v", kind, err)
		}
		if st := fstat(t, r); st.Nlink != 0 || st.Size != int64(len(old)) {
			t.Errorf("%s: fstat of a reader renamed over: nlink %d size %d, want 0 and %d", kind, st.Nlink, st.Size, len(old))
		}
		got = make([]byte, len(old)+10)
		if n, _ := r.ReadAt(got, 0); !bytes.Equal(got[:n], old) {
			t.Errorf("%s: a reader renamed over reads %d other bytes", kind, n)
		}
		r.Close()

		// A writer of a new file, unlinked before its close.
		content := mustRead(t, b)
		name := filepath.Join(filepath.Dir(a), "orphan")
		if kind == "dirdb entry" {
			name += ".pickle"
		}
		w, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(name); err != nil {
			t.Fatalf("%s: unlink of a file being written: %v", kind, err)
		}
		if st := fstat(t, w); st.Nlink != 0 || st.Size != int64(len(content)) {
			t.Errorf("%s: fstat of a writer after unlink: nlink %d size %d, want 0 and %d", kind, st.Nlink, st.Size, len(content))
		}
		if _, err := w.Write([]byte("more")); err != nil {
			t.Errorf("%s: write after unlink: %v", kind, err)
		}
		got = make([]byte, len(content)+10)
		if n, _ := w.ReadAt(got, 0); !bytes.Equal(got[:n], append(content, "more"...)) {
			t.Errorf("%s: read back after unlink: %d bytes, not what was written", kind, n)
		}
		if err := w.Sync(); err != nil {
			t.Errorf("%s: fsync after unlink: %v", kind, err)
		}
		if err := w.Close(); err != nil {
			t.Errorf("%s: close after unlink: %v", kind, err)
		}
		if _, err := os.Lstat(name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the unlinked file is back after its close: %v", kind, err)
		}

		// A writer of b, renamed over while it writes: b is what was
		// renamed there, and the writer's close publishes nothing.
		w, err = os.OpenFile(b, os.O_RDWR|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(content[:len(content)/2]); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, old, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name, b); err != nil {
			t.Fatalf("%s: rename over a file being written: %v", kind, err)
		}
		if _, err := w.Write(content[len(content)/2:]); err != nil {
			t.Errorf("%s: write after being renamed over: %v", kind, err)
		}
		if st := fstat(t, w); st.Nlink != 0 || st.Size != int64(len(content)) {
			t.Errorf("%s: fstat of a writer renamed over: nlink %d size %d, want 0 and %d", kind, st.Nlink, st.Size, len(content))
		}
		if err := w.Close(); err != nil {
			t.Errorf("%s: close after being renamed over: %v", kind, err)
		}
		if got := mustRead(t, b); !bytes.Equal(got, old) {
			t.Errorf("%s: after the close of a writer renamed over, the file holds %d other bytes", kind, len(got))
		}
	}
	// No staged file is left behind in the backing directories.
	for _, dir := range []string{"store", "db", "plain"} {
		ents, _ := os.ReadDir(filepath.Join(root, dir))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".arrayfs-stage.") {
				t.Errorf("%s: staged file %s left behind", dir, e.Name())
			}
		}
	}
}

// TestCreateModesAndKillPriv: a file or directory gets the mode its
// creator asked for less the creator's umask, not the daemon's too (a
// 0620 file stays 0620); and a write by a user who does not own a
// setuid or setgid file clears those bits, as ext4 does (pjdfstest
// open/02 and chmod/12).
func TestCreateModesAndKillPriv(t *testing.T) {
	m := mountForAll(t, openBase(t))
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	mode := func(p string) uint32 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 0o7777
	}
	check := func(name string, want uint32) {
		t.Helper()
		if got := mode(m.Path(name)); got != want {
			t.Errorf("%s: mode %#o through the mount, want %#o", name, got, want)
		}
		if got := mode(m.Backing(name)); got != want {
			t.Errorf("%s: mode %#o on the backing file, want %#o", name, got, want)
		}
	}
	files := map[string]uint32{"f0620": 0o620, "f0777": 0o777, "f4777": 0o4777, "f2777": 0o2777, "f6777": 0o6777}
	for name, perm := range files {
		fd, err := syscall.Open(m.Path(name), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, perm)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Close(fd)
		check(name, perm)
	}
	for name, perm := range map[string]uint32{"d0750": 0o750, "d1777": 0o1777} {
		if err := syscall.Mkdir(m.Path(name), perm); err != nil {
			t.Fatal(err)
		}
		check(name, perm)
	}
	syscall.Umask(0o027)
	fd, err := syscall.Open(m.Path("masked"), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	check("masked", 0o640)
	syscall.Umask(0)

	var script []string
	for _, name := range []string{"f4777", "f2777", "f6777"} {
		script = append(script, "printf x >> "+m.Path(name))
	}
	if out, err := asNobody(t, strings.Join(script, " && ")); err != nil {
		t.Fatalf("writing as nobody: %v\n%s", err, out)
	}
	for _, name := range []string{"f4777", "f2777", "f6777"} {
		check(name, 0o777)
	}
}
