package fuse_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Everything that is not an item is passed through: the mount is a
// complete view of the dataset directory.
func TestPassthroughPlainFiles(t *testing.T) {
	ds := t.TempDir()
	m := mount(t, ds)
	p := m.Path
	b := func(rel string) string { return filepath.Join(ds, rel) }

	run(t, "mkdir", "-p", p("sub/deeper"))
	run(t, "sh", "-c", "echo hello > "+p("sub/a.txt")+" && echo world >> "+p("sub/a.txt"))
	if got := readFile(b("sub/a.txt")); got != "hello\nworld\n" {
		t.Fatalf("write+append: backing has %q", got)
	}
	run(t, "mv", p("sub/a.txt"), p("sub/deeper/b.txt"))
	if _, err := os.Stat(b("sub/deeper/b.txt")); err != nil {
		t.Fatal("rename not passed through")
	}
	run(t, "ln", "-s", "deeper/b.txt", p("sub/link"))
	if got := readFile(p("sub/link")); got != "hello\nworld\n" {
		t.Fatalf("read through a symlink: %q", got)
	}
	if target, _ := os.Readlink(b("sub/link")); target != "deeper/b.txt" {
		t.Fatalf("symlink target %q", target)
	}
	run(t, "ln", p("sub/deeper/b.txt"), p("sub/hard"))
	var st1, st2 syscall.Stat_t
	syscall.Stat(p("sub/hard"), &st1)
	syscall.Stat(p("sub/deeper/b.txt"), &st2)
	if st1.Ino != st2.Ino || st1.Nlink != 2 {
		t.Fatalf("hard link: ino %d vs %d, nlink %d", st1.Ino, st2.Ino, st1.Nlink)
	}
	run(t, "chmod", "0640", p("sub/hard"))
	if st, _ := os.Stat(b("sub/hard")); st.Mode().Perm() != 0o640 {
		t.Fatalf("chmod: backing mode %v", st.Mode())
	}
	run(t, "touch", "-m", "-d", "2001-02-03 04:05:06.123456789", p("sub/hard"))
	st, _ := os.Stat(b("sub/hard"))
	if want := time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.Local); !st.ModTime().Equal(want) {
		t.Fatalf("utimes: backing mtime %v, want %v (nanoseconds kept)", st.ModTime(), want)
	}
	run(t, "setfattr", "-n", "user.color", "-v", "blue", p("sub/hard"))
	if out := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.color", b("sub/hard")); out != "blue" {
		t.Fatalf("xattr on the backing file: %q", out)
	}
	if out := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.color", p("sub/hard")); out != "blue" {
		t.Fatalf("xattr through the mount: %q", out)
	}
	run(t, "setfattr", "-x", "user.color", p("sub/hard"))
	run(t, "truncate", "-s", "3", p("sub/hard"))
	if got := readFile(b("sub/hard")); got != "hel" {
		t.Fatalf("truncate of a plain file: %q", got)
	}
	run(t, "mkfifo", p("sub/fifo"))
	if st, err := os.Lstat(b("sub/fifo")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("mkfifo: %v %v", st, err)
	}
	run(t, "rm", p("sub/hard"), p("sub/link"), p("sub/fifo"))
	run(t, "rm", "-r", p("sub/deeper"))
	run(t, "rmdir", p("sub"))
	if names := readDir(t, ds); len(names) != 0 {
		t.Fatalf("backing dir not empty after removing everything: %v", names)
	}
	// Names daf uses, untouched.
	odd := "cell,gene#odd name ünï.csv"
	os.WriteFile(p(odd), []byte("x"), 0o644)
	if _, err := os.Stat(b(odd)); err != nil {
		t.Fatal(err)
	}
	m.Unmount()
}

// Sizes, modes, owners, mtimes, inode numbers come from the backing files
// and stay the same across remounts; du and df work.
func TestStableAttributesAcrossRemounts(t *testing.T) {
	ds := fixture(t, "daf/example")
	os.Chmod(filepath.Join(ds, "gene#.csv"), 0o600)
	os.Chown(filepath.Join(ds, "sex#.csv"), 1234, 5678)
	os.Mkdir(filepath.Join(ds, "sub"), 0o750)
	type attrs struct {
		ino, size, blocks, mtimeNs int64
		mode, uid, gid, nlink      uint64
	}
	snapshot := func(dir string) map[string]attrs {
		out := map[string]attrs{}
		for _, name := range readDir(t, dir) {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(dir, name), &st); err != nil {
				t.Fatal(err)
			}
			out[name] = attrs{int64(st.Ino), st.Size, st.Blocks, st.Mtim.Nano(), uint64(st.Mode), uint64(st.Uid), uint64(st.Gid), st.Nlink}
		}
		return out
	}
	backing := snapshot(ds)
	m := mount(t, ds)
	first := snapshot(m.Dir)
	for name, b := range backing {
		if first[name] != b {
			t.Errorf("%s: through the mount %+v, backing %+v", name, first[name], b)
		}
	}
	if out := run(t, "du", "-s", "--block-size=1", m.Dir); strings.HasPrefix(out, "0\t") {
		t.Errorf("du through the mount: %s", out)
	}
	var sm, sb syscall.Statfs_t
	syscall.Statfs(m.Dir, &sm)
	syscall.Statfs(ds, &sb)
	if sm.Blocks != sb.Blocks || sm.Bsize != sb.Bsize || sm.Files != sb.Files {
		t.Errorf("statfs through the mount %+v, backing %+v", sm, sb)
	}
	if out := run(t, "df", "--output=size", m.Dir); !strings.Contains(out, "1K-blocks") || strings.Contains(out, "\n0\n") {
		t.Errorf("df: %s", out)
	}
	m.Unmount()
	m2 := mount(t, ds)
	second := snapshot(m2.Dir)
	for name, a := range first {
		if second[name] != a {
			t.Errorf("%s changed across remounts: %+v then %+v", name, a, second[name])
		}
	}
	m2.Unmount()
}

// rsync -a copies the mount exactly; a second run transfers nothing.
func TestRsyncOutOfMount(t *testing.T) {
	ds := fixture(t, "daf/example")
	arr := fixture(t, "daf/arrays")
	run(t, "cp", "-a", arr, filepath.Join(ds, "arrays"))
	m := mount(t, ds)
	backup := filepath.Join(t.TempDir(), "backup")
	run(t, "rsync", "-a", m.Dir+"/", backup+"/")
	if out, err := runTimeout(time.Minute, "diff", "-r", ds, backup); err != nil {
		t.Fatalf("backup differs from the dataset: %s", out)
	}
	if _, err := os.Stat(filepath.Join(backup, ".arrayfs")); err == nil {
		t.Fatal("the backup copied /.arrayfs (derived data)")
	}
	out := run(t, "rsync", "-a", "--itemize-changes", m.Dir+"/", backup+"/")
	if strings.TrimSpace(out) != "" {
		t.Fatalf("second rsync run transferred something:\n%s", out)
	}
	m.Unmount()
}

// /.arrayfs is hidden from listings by default and listed with
// views=visible; it can always be entered by name.
func TestReservedDirectoryVisibility(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds)
	for _, n := range readDir(t, m.Dir) {
		if n == ".arrayfs" {
			t.Fatal(".arrayfs listed with views=hidden")
		}
	}
	if names := readDir(t, m.Path(".arrayfs")); len(names) == 0 {
		t.Fatal(".arrayfs cannot be listed by name")
	}
	m.Unmount()
	m2 := mount(t, ds, "views=visible")
	found := false
	for _, n := range readDir(t, m2.Dir) {
		found = found || n == ".arrayfs"
	}
	if !found {
		t.Fatal(".arrayfs not listed with views=visible")
	}
	m2.Unmount()
}

// A read-only mount serves everything and refuses every change.
func TestReadOnlyMount(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds, "ro")
	sameFile(t, filepath.Join(ds, "cell,gene#X.array"), m.Path("cell,gene#X.array"))
	for _, args := range [][]string{
		{"touch", m.Path("new")},
		{"dd", "if=/dev/zero", "of=" + m.Path("cell#i64.array"), "bs=8", "count=1", "conv=notrunc"},
		{"rm", m.Path("cell#i64.yaml")},
		{"mkdir", m.Path("d")},
	} {
		out, err := runTimeout(time.Minute, args[0], args[1:]...)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("%v on a read-only mount: %v %s", args, err, out)
		}
	}
	m.Unmount()
}

// TestPathsNearPathMax: a path that fits in PATH_MAX in the mount works
// however long the dataset's own path is (the daemon resolves it under
// the dataset's descriptor, never by prepending the dataset's path).
func TestPathsNearPathMax(t *testing.T) {
	requireFUSE(t)
	// A dataset whose own path is ~2000 bytes long.
	ds := t.TempDir()
	for i := 0; i < 8; i++ {
		ds = filepath.Join(ds, strings.Repeat(string(rune('a'+i)), 240))
	}
	if err := os.MkdirAll(ds, 0o755); err != nil {
		t.Fatal(err)
	}
	m := mount(t, ds)
	// ~3600 bytes below the mount point: well within PATH_MAX there,
	// ~5600 bytes from the root of the backing file system.
	rel := ""
	for i := 0; i < 15; i++ {
		rel = filepath.Join(rel, fmt.Sprintf("%02d", i)+strings.Repeat("x", 238))
	}
	dir := m.Path(rel)
	if len(dir) >= 4096 || len(ds)+len(rel) < 4096 {
		t.Fatalf("bad test: %d bytes in the mount, %d in the backing tree", len(dir), len(ds)+len(rel))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("mkdir -p of a deep path: %v", err)
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, []byte("deep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(f); err != nil || string(got) != "deep\n" {
		t.Errorf("read back: %q %v", got, err)
	}
	if err := os.Rename(f, f+".2"); err != nil {
		t.Errorf("rename: %v", err)
	}
	if err := os.Symlink("file.2", f+".link"); err != nil {
		t.Errorf("symlink: %v", err)
	}
	if got, err := os.ReadFile(f + ".link"); err != nil || string(got) != "deep\n" {
		t.Errorf("through the link: %q %v", got, err)
	}
	if err := os.Chmod(f+".2", 0o600); err != nil {
		t.Errorf("chmod: %v", err)
	}
	if names := readDir(t, dir); strings.Join(names, ",") != "file.2,file.link" {
		t.Errorf("listing: %v", names)
	}
}
