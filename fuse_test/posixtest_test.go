package fuse_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// posixtestNotApplicable are the posixtest tests that ext4 fails too,
// with the reason; a test of ours checks what ext4 does instead.
var posixtestNotApplicable = map[string]string{
	"FcntlFlockLocksFile": "it expects a process's second fcntl lock, through another descriptor, to conflict with its first (open file description semantics); POSIX locks belong to the process and never conflict with its own, on ext4 as on the mount (TestFileLocksExclude checks that other processes are excluded)",
}

// TestGoFusePosixtest runs go-fuse's posixtest suite in the mount's
// pass-through area, each test in a directory of its own. (XAttrLarge
// skips itself: ext4 without ea_inode stores no 64 KiB value, through
// the mount or not.)
func TestGoFusePosixtest(t *testing.T) {
	m := mount(t, t.TempDir())
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if _, na := posixtestNotApplicable[name]; na {
			continue
		}
		t.Run(name, func(t *testing.T) {
			dir := m.Path(filepath.Join("posix", name))
			if err := os.MkdirAll(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}

// TestFileLocksExclude: flock(2) and fcntl locks taken through the mount
// exclude other processes, as on ext4 (the kernel keeps them).
func TestFileLocksExclude(t *testing.T) {
	m := mount(t, t.TempDir())
	p := m.Path("locked")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	try := `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for name, lock in (("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                   ("fcntl", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))):
    try:
        lock()
        print(name, "taken")
    except OSError as e:
        print(name, "refused", e.errno)
`
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("flock refused %d\nfcntl refused %d\n", syscall.EWOULDBLOCK, syscall.EAGAIN)
	if got := pyRun(t, try, p); got != want {
		t.Errorf("another process while this one holds both locks:\n%s\nwant:\n%s", got, want)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	lk.Type = syscall.F_UNLCK
	syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
	if got := pyRun(t, try, p); got != "flock taken\nfcntl taken\n" {
		t.Errorf("another process once they are released:\n%s", got)
	}
}

// TestTmpfileLinkedIntoPlace: open(O_TMPFILE) makes a file with no name
// (nlink 0, in no listing) that its opener can link into place, where it
// then is with its bytes and mode; O_EXCL forbids that; a store refuses
// O_TMPFILE (it holds documents only).
func TestTmpfileLinkedIntoPlace(t *testing.T) {
	root, _ := fixtureStore(t)
	if err := os.Mkdir(filepath.Join(root, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := mount(t, root)
	fd, err := unix.Open(m.Path("plain"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("made unnamed")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 {
		t.Fatalf("fstat of the unnamed file: nlink %d, %v; want 0", st.Nlink, err)
	}
	if ents, _ := os.ReadDir(m.Path("plain")); len(ents) != 0 {
		t.Fatalf("the directory lists %d entries before the link, want none", len(ents))
	}
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, m.Path("plain/named"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("linking the unnamed file into place: %v", err)
	}
	for _, p := range []string{m.Path("plain/named"), m.Backing("plain/named")} {
		if got := readFile(p); got != "made unnamed" {
			t.Errorf("%s holds %q after the link", p, got)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Mode&0o7777 != 0o640 || st.Nlink != 1 {
			t.Errorf("%s: mode %#o nlink %d, %v; want 0640 and 1", p, st.Mode&0o7777, st.Nlink, err)
		}
	}

	excl, err := unix.Open(m.Path("plain"), unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(excl)
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", excl), unix.AT_FDCWD, m.Path("plain/excl"), unix.AT_SYMLINK_FOLLOW); err == nil {
		t.Error("an O_TMPFILE|O_EXCL file was linked into place")
	}
	if fd, err := unix.Open(m.Path("store"), unix.O_TMPFILE|unix.O_RDWR, 0o600); err != unix.EOPNOTSUPP {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("O_TMPFILE in a store: %v, want EOPNOTSUPP", err)
	}
}
