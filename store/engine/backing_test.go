package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A path under the dataset longer than PATH_MAX, of short names, is
// reached in pieces with the same rules: no symbolic link is followed on
// the way.
func TestBackingLongPaths(t *testing.T) {
	root := t.TempDir()
	b, err := OpenBacking(root)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 200)
	var parts []string
	for range 30 { // 6,030 bytes
		parts = append(parts, name)
		if err := b.Mkdir(filepath.Join(parts...), 0o755); err != nil {
			t.Fatalf("mkdir at depth %d: %v", len(parts), err)
		}
	}
	rel := filepath.Join(append(parts, "file")...)
	fd, err := b.Open(rel, unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("create %d bytes deep: %v", len(rel), err)
	}
	unix.Write(fd, []byte("deep"))
	unix.Close(fd)
	st, err := b.Lstat(rel)
	if err != nil || st.Size != 4 {
		t.Fatalf("lstat %d bytes deep: size %d, %v", len(rel), st.Size, err)
	}
	// A link in the middle, past the first piece, is not followed.
	mid := filepath.Join(parts[:15]...)
	if err := os.Rename(filepath.Join(root, mid), filepath.Join(root, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "moved"), filepath.Join(root, mid)); err != nil {
		t.Fatal(err)
	}
	if fd, err := b.Open(rel, unix.O_RDONLY, 0); err == nil {
		unix.Close(fd)
		t.Fatal("a symbolic link in a long path was followed")
	}
}
