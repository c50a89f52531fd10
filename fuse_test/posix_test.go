package fuse_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixtureDataset is the docarray fixture store (store/) with more
// fixtures copied beside it: a directory name to a fixture's path.
func fixtureDataset(t *testing.T, more map[string]string) string {
	t.Helper()
	root, _ := fixtureStore(t)
	for dst, src := range more {
		run(t, "cp", "-r", fixturePath(t, src), filepath.Join(root, dst))
		run(t, "chmod", "-R", "u+w", filepath.Join(root, dst))
	}
	return root
}

// posixDataset is a dataset with a docarray store (store/), a dirdb
// database (db/) and plain files (plain/), from the fixtures.
func posixDataset(t *testing.T) string {
	t.Helper()
	root := fixtureDataset(t, map[string]string{"db": "dirdb/db"})
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

// TestDocumentsAndEntriesAsFiles: documents and dirdb entries answer
// what files do: lseek SEEK_DATA/SEEK_HOLE (all data, the hole at the
// end), a shared read-only mapping equal to read(), blocks for du,
// utimes to the nanosecond, O_APPEND and fsync/fdatasync, O_EXCL on an
// existing name.
func TestDocumentsAndEntriesAsFiles(t *testing.T) {
	m := mount(t, posixDataset(t))
	for kind, files := range kindFiles(t, m) {
		p := files[0]
		data := mustRead(t, p)
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if off, err := unix.Seek(fd, 0, unix.SEEK_DATA); err != nil || off != 0 {
			t.Errorf("%s: SEEK_DATA from 0: %d, %v; want 0", kind, off, err)
		}
		if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != int64(len(data)) {
			t.Errorf("%s: SEEK_HOLE from 0: %d, %v; want the size %d", kind, off, err, len(data))
		}
		if _, err := unix.Seek(fd, int64(len(data))+1, unix.SEEK_DATA); err != unix.ENXIO {
			t.Errorf("%s: SEEK_DATA past the end: %v, want ENXIO", kind, err)
		}
		mapped, err := unix.Mmap(fd, 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Errorf("%s: mmap: %v", kind, err)
		} else {
			if !bytes.Equal(mapped, data) {
				t.Errorf("%s: the mapping differs from read()", kind)
			}
			unix.Munmap(mapped)
		}
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		if st.Blocks*512 < st.Size || st.Nlink != 1 {
			t.Errorf("%s: blocks %d for %d bytes, nlink %d", kind, st.Blocks, st.Size, st.Nlink)
		}
		unix.Close(fd)

		ts := []unix.Timespec{{Sec: 1234567890, Nsec: 123456789}, {Sec: 1234567890, Nsec: 987654321}}
		if err := unix.UtimesNano(p, ts); err != nil {
			t.Errorf("%s: utimensat: %v", kind, err)
		} else if err := unix.Stat(p, &st); err != nil || st.Mtim != ts[1] {
			t.Errorf("%s: mtime after utimensat %v, want %v (%v)", kind, st.Mtim, ts[1], err)
		}

		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if kind != "document" { // appending to a document leaves no document
			if _, err := f.Write([]byte("+")); err != nil {
				t.Errorf("%s: append: %v", kind, err)
			}
			data = append(data, '+')
		}
		if err := f.Sync(); err != nil {
			t.Errorf("%s: fsync: %v", kind, err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Errorf("%s: fdatasync: %v", kind, err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("%s: close: %v", kind, err)
		}
		if got := mustRead(t, p); !bytes.Equal(got, data) {
			t.Errorf("%s: after the append: %d bytes, want %d", kind, len(got), len(data))
		}
		if _, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, os.ErrExist) {
			t.Errorf("%s: O_EXCL on an existing name: %v, want EEXIST", kind, err)
		}
	}
}

// TestSeekdirInALargeStore: telldir/seekdir (lseek of a directory
// descriptor to an offset getdents gave) resume a listing of 100,000
// documents exactly where it was, and rewinddir starts it again.
func TestSeekdirInALargeStore(t *testing.T) {
	root := t.TempDir()
	docs := make([]storeDoc, 100_000)
	for i := range docs {
		key := fmt.Sprintf("d%06d", i)
		docs[i] = storeDoc{key, pbDoc(key, "")}
	}
	writeDocStore(t, filepath.Join(root, "s"), 36, docs)
	m := mount(t, root)
	fd, err := unix.Open(m.Path("s"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	type ent struct {
		name string
		off  int64
	}
	read := func(max int) []ent {
		var out []ent
		buf := make([]byte, 8192)
		for len(out) < max {
			n, err := unix.Getdents(fd, buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			for b := buf[:n]; len(b) > 0; {
				reclen := int(b[16]) | int(b[17])<<8
				off := int64(binary.LittleEndian.Uint64(b[8:]))
				name := string(bytes.TrimRight(b[19:reclen], "\x00"))
				out = append(out, ent{name, off})
				b = b[reclen:]
			}
		}
		return out
	}
	all := read(1 << 30)
	var names []string
	for _, e := range all {
		if e.name != "." && e.name != ".." {
			names = append(names, e.name)
		}
	}
	if len(names) != len(docs)+1 { // and .docarray
		t.Fatalf("listed %d names, want %d", len(names), len(docs)+1)
	}
	for _, k := range []int{1, 777, 50_000, len(all) - 2} {
		if _, err := unix.Seek(fd, all[k].off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		rest := read(3)
		if len(rest) == 0 || rest[0].name != all[k+1].name {
			t.Errorf("seekdir to the offset of entry %d (%s): next is %v, want %s", k, all[k].name, rest, all[k+1].name)
		}
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if again := read(1 << 30); len(again) != len(all) {
		t.Errorf("after rewinddir: %d entries, want %d", len(again), len(all))
	}
}

// TestHugeSizesRefused: a truncation or a write of a document or a
// marker far past any size it can have is refused with EFBIG (pjdfstest
// truncate/12 truncates to 999 TB), never a crash of the handler, and
// the content stays.
func TestHugeSizesRefused(t *testing.T) {
	m := mount(t, posixDataset(t))
	for _, p := range []string{kindFiles(t, m)["document"][0], m.Path("store/.docarray")} {
		before := mustRead(t, p)
		if err := os.Truncate(p, 999_999_999_999_999); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("%s: truncate to 999 TB: %v, want EFBIG", p, err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 50); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("%s: ftruncate to 1 PiB: %v, want EFBIG", p, err)
		}
		if _, err := f.WriteAt([]byte("x"), 1<<40); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("%s: write at 1 TiB: %v, want EFBIG", p, err)
		}
		f.Close()
		if got := mustRead(t, p); !bytes.Equal(got, before) {
			t.Errorf("%s changed: %d bytes, was %d", p, len(got), len(before))
		}
	}
}

// TestNamesLongerThanNameMax: a name longer than 255 bytes is
// ENAMETOOLONG in every kind of directory, for every call that takes
// one, as on ext4 (pjdfstest */02.t): in a store it used to make a
// document whose key then had another name. 255 bytes is still a name.
func TestNamesLongerThanNameMax(t *testing.T) {
	m := mount(t, posixDataset(t))
	long := strings.Repeat("n", 256)
	for _, dir := range []string{"store", "db", "plain"} {
		existing := kindFiles(t, m)[map[string]string{"store": "document", "db": "dirdb entry", "plain": "plain file"}[dir]][0]
		p := filepath.Join(m.Path(dir), long)
		if dir == "db" {
			p = filepath.Join(m.Path(dir), long[:250]+".pickle")
		}
		calls := map[string]error{}
		_, calls["lstat"] = os.Lstat(p)
		_, calls["open O_CREAT"] = os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		calls["mkdir"] = os.Mkdir(p, 0o755)
		calls["symlink"] = os.Symlink("x", p)
		calls["link"] = os.Link(existing, p)
		calls["rename to it"] = os.Rename(existing, p)
		calls["unlink"] = os.Remove(p)
		calls["chmod"] = os.Chmod(p, 0o600)
		for call, err := range calls {
			if !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Errorf("%s: %s of a %d-byte name: %v, want ENAMETOOLONG", dir, call, len(filepath.Base(p)), err)
			}
		}
		if _, err := os.Stat(existing); err != nil {
			t.Errorf("%s: the file a refused rename named is gone: %v", dir, err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(m.Path(dir), &st); err != nil || st.Namelen != 255 {
			t.Errorf("%s: statfs namelen %d (%v), want 255", dir, st.Namelen, err)
		}
	}
	// The longest name is a name; in this store (key length 36) it stands
	// for its truncated key, as the original truncates ids.
	name := strings.Repeat("k", 255)
	doc := pbDoc(name, "a document with the longest name")
	if err := os.WriteFile(m.Path("store/"+name), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, m.Path("store/"+name)); !bytes.Equal(got, doc) {
		t.Errorf("255-byte document: %q", got)
	}
	if !slices.Contains(readdirNames(t, m.Path("store")), name[:36]) {
		t.Errorf("255-byte document not listed under its key")
	}
}

// TestDocumentCtime: a document's and a marker's ctime is the last
// change of anything of them (chmod, chown, utimes, a rename, a write),
// and survives a remount, as the atime utimes set does (a read or a
// write leaves it); utimes sets the mtime and not the ctime, so a
// document restored with its old mtime still looks changed to backup
// tools that trust ctime (pjdfstest chmod/00, chown/00).
func TestDocumentCtime(t *testing.T) {
	root := posixDataset(t)
	m := mount(t, root)
	doc := kindFiles(t, m)["document"][0]
	ctime := func(p string) (c, mt int64) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ctim.Nano(), st.Mtim.Nano()
	}
	later := func(p, step string, prev int64) int64 {
		t.Helper()
		c, _ := ctime(p)
		if c <= prev {
			t.Errorf("%s: ctime after %s %d, not after %d", p, step, c, prev)
		}
		time.Sleep(5 * time.Millisecond)
		return c
	}
	for _, p := range []string{doc, m.Path("store/.docarray")} {
		c0, mt0 := ctime(p)
		time.Sleep(5 * time.Millisecond)
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		c := later(p, "chmod", c0)
		if _, mt := ctime(p); mt != mt0 {
			t.Errorf("%s: chmod moved the mtime", p)
		}
		if err := os.Chown(p, 123, 456); err != nil {
			t.Fatal(err)
		}
		c = later(p, "chown", c)
		old, oldA := time.Unix(1_000_000_000, 5), time.Unix(900_000_000, 7)
		if err := os.Chtimes(p, oldA, old); err != nil {
			t.Fatal(err)
		}
		later(p, "utimes", c)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || st.Mtim.Nano() != old.UnixNano() || st.Atim.Nano() != oldA.UnixNano() {
			t.Errorf("%s: after utimes mtime %d atime %d (%v), want %d and %d (pjdfstest utimensat/00)", p, st.Mtim.Nano(), st.Atim.Nano(), err, old.UnixNano(), oldA.UnixNano())
		}
	}
	c, _ := ctime(doc)
	renamed := filepath.Join(filepath.Dir(doc), "renamed-doc")
	if err := os.Rename(doc, renamed); err != nil {
		t.Fatal(err)
	}
	// At once: the marker lists the new name, and its stat says so.
	if st, err := os.Stat(m.Path("store/.docarray")); err != nil || st.Size() != int64(len(mustRead(t, m.Path("store/.docarray")))) {
		t.Errorf("marker size after a rename: %v, %v; its content is %d bytes", st.Size(), err, len(mustRead(t, m.Path("store/.docarray"))))
	}
	c = later(renamed, "rename", c)
	f, err := os.OpenFile(renamed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c = later(renamed, "a rewrite", c)
	cm, _ := ctime(m.Path("store/.docarray"))
	m.Unmount()
	m = mount(t, root)
	if got, _ := ctime(m.Path("store/renamed-doc")); got != c {
		t.Errorf("document ctime after a remount %d, was %d", got, c)
	}
	if got, _ := ctime(m.Path("store/.docarray")); got != cm {
		t.Errorf("marker ctime after a remount %d, was %d", got, cm)
	}
	var st unix.Stat_t
	if err := unix.Lstat(m.Path("store/renamed-doc"), &st); err != nil || st.Atim.Nano() != 900_000_000_000_000_007 {
		t.Errorf("document atime after a rewrite and a remount %d (%v), want the one utimes set", st.Atim.Nano(), err)
	}
}

// TestStoreDirTimesFollowItsListing: a store directory's mtime and ctime
// move when a document comes, goes or is renamed, as a directory's do,
// and not when one is read or rewritten (pjdfstest open/00 in a store).
func TestStoreDirTimesFollowItsListing(t *testing.T) {
	m := mount(t, posixDataset(t))
	dir := m.Path("store")
	times := func() (int64, int64) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mtim.Nano(), st.Ctim.Nano()
	}
	doc := kindFiles(t, m)["document"][0]
	data := mustRead(t, doc)
	steps := []struct {
		what  string
		moves bool
		do    func() error
	}{
		{"create", true, func() error { return os.WriteFile(filepath.Join(dir, "new-doc"), data, 0o644) }},
		{"read", false, func() error { _, err := os.ReadFile(doc); return err }},
		{"rewrite", false, func() error { return os.WriteFile(doc, data, 0o644) }},
		{"open O_CREAT of an existing one", false, func() error {
			f, err := os.OpenFile(doc, os.O_CREATE|os.O_RDONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"rename", true, func() error { return os.Rename(filepath.Join(dir, "new-doc"), filepath.Join(dir, "renamed-doc")) }},
		{"unlink", true, func() error { return os.Remove(filepath.Join(dir, "renamed-doc")) }},
	}
	for _, s := range steps {
		m0, c0 := times()
		time.Sleep(10 * time.Millisecond)
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		m1, c1 := times()
		if s.moves && (m1 <= m0 || c1 <= c0) {
			t.Errorf("%s: store directory mtime %d -> %d, ctime %d -> %d: not moved", s.what, m0, m1, c0, c1)
		}
		if !s.moves && (m1 != m0 || c1 != c0) {
			t.Errorf("%s: store directory mtime %d -> %d, ctime %d -> %d: moved", s.what, m0, m1, c0, c1)
		}
	}
}

// TestDocumentXattrsNotSupported: a document holds no extended
// attributes but its derived ones, and says so: getxattr of any other
// name is ENOTSUP, as setxattr is. So ls -l asks one document of a
// listing for its security label and ACL, not every one (coreutils
// remembers an unsupported device): two round trips per document fewer.
func TestDocumentXattrsNotSupported(t *testing.T) {
	m := mount(t, posixDataset(t), "debug")
	doc := kindFiles(t, m)["document"][0]
	for _, name := range []string{"security.selinux", "system.posix_acl_access", "user.note"} {
		if _, err := unix.Getxattr(doc, name, make([]byte, 64)); !errors.Is(err, unix.ENOTSUP) {
			t.Errorf("getxattr %s of a document: %v, want ENOTSUP", name, err)
		}
		if err := unix.Setxattr(doc, name, []byte("x"), 0); name != "system.posix_acl_access" && !errors.Is(err, unix.ENOTSUP) {
			t.Errorf("setxattr %s of a document: %v, want ENOTSUP", name, err)
		}
	}
	if _, err := unix.Getxattr(m.Path("store/.docarray"), "security.selinux", make([]byte, 64)); !errors.Is(err, unix.ENOTSUP) {
		t.Errorf("getxattr of the marker: %v, want ENOTSUP", err)
	}
	n := len(readdirNames(t, m.Path("store")))
	before := strings.Count(readFile(m.Log), "GETXATTR")
	// Its lines: "total", and every name but the marker's.
	if out := run(t, "ls", "-l", m.Path("store")); strings.Count(out, "\n") != n {
		t.Fatalf("ls -l: %d lines for %d names:\n%s", strings.Count(out, "\n"), n, out)
	}
	time.Sleep(100 * time.Millisecond) // the debug log is written as the requests come
	if asked := strings.Count(readFile(m.Log), "GETXATTR") - before; asked > 8 {
		t.Errorf("ls -l of %d documents sent %d GETXATTR requests", n, asked)
	}
}

// TestDirdbStatWhileOpen: stat(2) of a dirdb entry that a reader holds
// open answers what the file is now (go-fuse hands such a GETATTR to the
// open handle, whose snapshot was taken at the open: 3 runs in 20 of
// TestDocumentsAndEntriesAsFiles saw the mtime utimensat had just set
// undone, while a RELEASE was late), also right after a write replaced
// it (the kernel is told before close(2) returns: 2 runs in 5 of this
// test saw the old size before); the reader's own fstat keeps its
// version.
func TestDirdbStatWhileOpen(t *testing.T) {
	m := mount(t, posixDataset(t))
	p := kindFiles(t, m)["dirdb entry"][0]
	before := mustRead(t, p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts := []unix.Timespec{{Sec: 1234567890, Nsec: 123456789}, {Sec: 1234567890, Nsec: 987654321}}
	if err := unix.UtimesNano(p, ts); err != nil {
		t.Fatalf("utimensat: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Mtim != ts[1] || st.Atim != ts[0] {
		t.Fatalf("stat while open: mtime %v atime %v, want %v %v (%v)", st.Mtim, st.Atim, ts[1], ts[0], err)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mtim != ts[1] {
		t.Fatalf("fstat of the reader: mtime %v, want %v (%v)", st.Mtim, ts[1], err)
	}
	next := append([]byte{0x80, 0x04}, []byte("N.")...)
	if err := os.WriteFile(p, next, 0o644); err != nil {
		t.Fatalf("rewriting the entry: %v", err)
	}
	if err := unix.Stat(p, &st); err != nil || st.Size != int64(len(next)) {
		t.Fatalf("stat after the rewrite: size %d, want %d (%v)", st.Size, len(next), err)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size != int64(len(before)) {
		t.Fatalf("fstat of the reader after the rewrite: size %d, want its version's %d (%v)", st.Size, len(before), err)
	}
}
