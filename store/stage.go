package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// StagePrefix starts the name of every file arrayfs stages beside a
// backing file. Such files are never shown in the mount; one left behind
// by a crash is removed the next time its directory is listed.
const StagePrefix = ".arrayfs-stage."

// IsStageName reports whether name is one of arrayfs's staged files.
func IsStageName(name string) bool { return strings.HasPrefix(name, StagePrefix) }

// A Stage is the next version of a backing file, written beside it under
// a hidden name and swapped in by rename(2), so that readers and crashes
// see the old content or the new, never a mix.
type Stage struct {
	target string
	file   *os.File
}

// NewStage starts a new version of target. With keep, the stage starts
// as a copy of target's current content (for writes at offsets);
// otherwise empty (O_TRUNC). The stage takes target's mode and owner,
// or perm when target does not exist yet.
func NewStage(target string, keep bool, perm os.FileMode) (*Stage, error) {
	dir, base := filepath.Split(target)
	f, err := os.CreateTemp(dir, StagePrefix+base+".")
	if err != nil {
		return nil, fmt.Errorf("%s: staging: %w", target, err)
	}
	s := &Stage{target: target, file: f}
	liveStages.add(f.Name())
	old, err := os.Open(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		err = f.Chmod(perm)
	case err != nil:
	default:
		err = s.adopt(old, keep)
		old.Close()
	}
	if err != nil {
		s.Abort()
		return nil, fmt.Errorf("%s: staging: %w", target, err)
	}
	return s, nil
}

// adopt takes old's mode and owner, and with keep its content.
func (s *Stage) adopt(old *os.File, keep bool) error {
	st, err := old.Stat()
	if err != nil {
		return err
	}
	if err := s.file.Chmod(st.Mode().Perm()); err != nil {
		return err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := s.file.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
			return err
		}
	}
	// The new version replaces the inode: it takes the file's extended
	// attributes (ACLs included) as it takes its mode and owner.
	copyXattrs(old.Name(), s.file)
	if !keep {
		return nil
	}
	// FICLONE shares the blocks where the file system can; otherwise
	// copy_file_range (io.Copy uses it between regular files).
	if unix.IoctlFileClone(int(s.file.Fd()), int(old.Fd())) == nil {
		return nil
	}
	_, err = io.Copy(s.file, old)
	return err
}

// File is the stage's open file, for reads and writes at offsets.
func (s *Stage) File() *os.File { return s.file }

// Target is the path the stage replaces on Commit.
func (s *Stage) Target() string { return s.target }

// Size is the stage's current size.
func (s *Stage) Size() (int64, error) {
	st, err := s.file.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// stageSet is the set of staged files this process is writing.
type stageSet struct {
	mu    sync.Mutex
	paths map[string]bool
}

var liveStages = &stageSet{paths: map[string]bool{}}

func (s *stageSet) add(p string) {
	s.mu.Lock()
	s.paths[p] = true
	s.mu.Unlock()
}

func (s *stageSet) remove(p string) {
	s.mu.Lock()
	delete(s.paths, p)
	s.mu.Unlock()
}

func (s *stageSet) has(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[p]
}

// Commit makes the stage the target: fsync of the data, rename over the
// target, fsync of the directory. After a crash the target is the old
// content or the new. The stage is closed whatever the outcome.
func (s *Stage) Commit() error {
	defer s.file.Close()
	defer liveStages.remove(s.file.Name())
	if err := s.file.Sync(); err != nil {
		os.Remove(s.file.Name())
		return fmt.Errorf("%s: fsync of staged version: %w", s.target, err)
	}
	if err := os.Rename(s.file.Name(), s.target); err != nil {
		os.Remove(s.file.Name())
		return fmt.Errorf("%s: replacing with staged version: %w", s.target, err)
	}
	return SyncDir(filepath.Dir(s.target))
}

// Abort throws the stage away.
func (s *Stage) Abort() {
	liveStages.remove(s.file.Name())
	s.file.Close()
	os.Remove(s.file.Name())
}

// SyncDir makes a directory's entries durable (after a create or rename).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%s: fsync of directory: %w", dir, err)
	}
	return nil
}

// copyXattrs copies the extended attributes of src to dst, as far as
// this process may set them.
func copyXattrs(src string, dst *os.File) {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		return
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, n)
		if n, err = unix.Lgetxattr(src, name, val); err == nil {
			unix.Fsetxattr(int(dst.Fd()), name, val[:n], 0)
		}
	}
}
