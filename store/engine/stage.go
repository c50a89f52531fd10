package engine

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

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
//
// Ownership: the process writing a stage holds an exclusive flock on it
// for as long as it lives, so that nobody else (another mount, a check,
// a listing) takes it for a crash's leftover; see RemoveStaleStage.
type Stage struct {
	back *Backing
	rel  string   // the target's dataset-relative path
	dir  *os.File // the target's directory
	base string   // the target's name in dir
	name string   // the stage's name in dir
	file *os.File
}

// NewStage starts a new version of rel. With keep, the stage starts as a
// copy of rel's current content (for writes at offsets); otherwise empty
// (O_TRUNC). The stage takes rel's mode, owner and extended attributes,
// or perm when rel does not exist yet.
func (b *Backing) NewStage(rel string, keep bool, perm os.FileMode) (*Stage, error) {
	dirRel, base := filepath.Split(rel)
	dir, err := b.OpenDir(dirRel)
	if err != nil {
		return nil, fmt.Errorf("%s: staging: %w", rel, UnwrapPath(err))
	}
	s := &Stage{back: b, rel: rel, dir: dir, base: base}
	if err := s.create(); err != nil {
		dir.Close()
		return nil, fmt.Errorf("%s: staging: %w", rel, err)
	}
	old, err := unix.Openat(s.dirFd(), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		err = s.file.Chmod(perm)
	case err != nil:
	default:
		of := os.NewFile(uintptr(old), rel)
		err = s.adopt(of, keep)
		of.Close()
	}
	if err != nil {
		s.Abort()
		return nil, fmt.Errorf("%s: staging: %w", rel, err)
	}
	return s, nil
}

// create makes the stage file.
func (s *Stage) create() error {
	fd, name, err := CreateStageFile(s.dirFd(), s.base, 0o600)
	if err != nil {
		return err
	}
	s.name, s.file = name, os.NewFile(uintptr(fd), filepath.Join(filepath.Dir(s.rel), name))
	return nil
}

// CreateStageFile makes a new staged file for base in directory dirfd:
// a fresh name, never a link followed, and the flock that says it is
// ours for as long as the descriptor is open.
func CreateStageFile(dirfd int, base string, perm uint32) (fd int, name string, err error) {
	for range 100 {
		name = fmt.Sprintf("%s%s.%08x", StagePrefix, base, rand.Uint32())
		fd, err = unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return -1, "", err
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			unix.Unlinkat(dirfd, name, 0)
			return -1, "", fmt.Errorf("flock of the staged file: %w", err)
		}
		return fd, name, nil
	}
	return -1, "", unix.EEXIST
}

func (s *Stage) dirFd() int { return int(s.dir.Fd()) }

// adopt takes old's mode and owner, and with keep its content.
func (s *Stage) adopt(old *os.File, keep bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(old.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("not a regular file")
	}
	if err := s.file.Chmod(os.FileMode(st.Mode & 0o777)); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := s.file.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	// The new version replaces the inode: it takes the file's extended
	// attributes (ACLs included) as it takes its mode and owner.
	copyXattrs(int(old.Fd()), s.file)
	if !keep {
		return nil
	}
	// FICLONE shares the blocks where the file system can; otherwise
	// copy_file_range (io.Copy uses it between regular files).
	if unix.IoctlFileClone(int(s.file.Fd()), int(old.Fd())) == nil {
		return nil
	}
	_, err := io.Copy(s.file, old)
	return err
}

// File is the stage's open file, for reads and writes at offsets.
func (s *Stage) File() *os.File { return s.file }

// Rel is the dataset-relative path the stage replaces on Commit.
func (s *Stage) Rel() string { return s.rel }

// Size is the stage's current size.
func (s *Stage) Size() (int64, error) {
	st, err := s.file.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Commit makes the stage the target, durably: fsync of the data, rename
// over the target, fsync of the directory. After a crash the target is
// the old content or the new. The stage is closed whatever the outcome.
func (s *Stage) Commit() error {
	if err := s.Sync(); err != nil {
		s.Abort()
		return err
	}
	return s.publish(true)
}

// Sync makes the staged data durable, the first half of Commit, so that
// a caller can do it before taking a lock that others wait for.
func (s *Stage) Sync() error {
	if err := s.file.Sync(); err != nil {
		return fmt.Errorf("%s: fsync of staged version: %w", s.rel, err)
	}
	return nil
}

// Publish renames a stage that Sync made durable over the target; the
// rename itself becomes durable at the Backing's next SyncDirs
// (dirsync.go). A crash shows the old content or the new. The stage is
// closed whatever the outcome.
func (s *Stage) Publish() error { return s.publish(false) }

func (s *Stage) publish(durable bool) error {
	defer s.file.Close()
	s.back.noteFreed(s.dirFd(), s.base)
	if err := unix.Renameat(s.dirFd(), s.name, s.dirFd(), s.base); err != nil {
		unix.Unlinkat(s.dirFd(), s.name, 0)
		s.dir.Close()
		return fmt.Errorf("%s: replacing with staged version: %w", s.rel, err)
	}
	if !durable {
		s.back.deferDirSync(s.dir)
		return nil
	}
	defer s.dir.Close()
	if err := s.dir.Sync(); err != nil {
		return fmt.Errorf("%s: fsync of directory: %w", s.rel, err)
	}
	return nil
}

// Abort throws the stage away.
func (s *Stage) Abort() {
	unix.Unlinkat(s.dirFd(), s.name, 0)
	s.file.Close()
	s.dir.Close()
}

// RemoveStaleStage removes the staged file name of directory dirRel if
// no process owns it (a crash interrupted the write that made it): its
// owner, in this mount or any other, holds a flock on it. It reports
// whether it removed the file.
func (b *Backing) RemoveStaleStage(dirRel, name string) (bool, error) {
	if !IsStageName(name) {
		return false, nil
	}
	dir, err := b.OpenDir(dirRel)
	if err != nil {
		return false, err
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false, nil // owned: a write under way
	}
	// The name must still be the file we locked.
	var a, st unix.Stat_t
	if unix.Fstat(fd, &a) != nil || unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		a.Ino != st.Ino || a.Dev != st.Dev {
		return false, nil
	}
	if a.Mode&unix.S_IFMT == unix.S_IFDIR {
		// A prune's half-built store: a directory of plain files.
		return RemoveStaleDir(int(dir.Fd()), name)
	}
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil {
		return false, err
	}
	return true, nil
}

// StageOwned reports whether the staged file name of directory dirRel
// belongs to a write under way (its owner holds its flock).
func (b *Backing) StageOwned(dirRel, name string) bool {
	fd, err := b.Open(filepath.Join(dirRel, name), unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil
}

// RemoveStaleDir removes a stale staged directory (its files, then it).
func RemoveStaleDir(dirfd int, name string) (bool, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	for _, n := range names {
		unix.Unlinkat(fd, n, 0)
	}
	f.Close()
	if err != nil {
		return false, err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
		return false, err
	}
	return true, nil
}

// copyXattrs copies the extended attributes of src to dst, as far as
// this process may set them.
func copyXattrs(src int, dst *os.File) {
	size, err := unix.Flistxattr(src, nil)
	if err != nil || size == 0 {
		return
	}
	buf := make([]byte, size)
	size, err = unix.Flistxattr(src, buf)
	if err != nil {
		return
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		n, err := unix.Fgetxattr(src, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, n)
		if n, err = unix.Fgetxattr(src, name, val); err == nil {
			unix.Fsetxattr(int(dst.Fd()), name, val[:n], 0)
		}
	}
}

// TidyStage removes the staged file name of directory dirRel when it is
// a leftover no process owns (a crash interrupted the write that made
// it), and logs that it did.
func TidyStage(back *Backing, rep *Reporter, dirRel, name string) {
	if removed, _ := back.RemoveStaleStage(dirRel, name); removed {
		rep.Logf("%s: removed a staged file left by an interrupted write", filepath.Join(dirRel, name))
	}
}

// Orphan removes the stage's name and hands over its open file, which no
// name leads to any more (an unlinked file kept for the descriptors that
// have it open). The stage is done with; on failure it is left as it was.
func (s *Stage) Orphan() (*os.File, error) {
	if err := unix.Unlinkat(s.dirFd(), s.name, 0); err != nil {
		return nil, fmt.Errorf("%s: removing the staged file's name: %w", s.rel, err)
	}
	s.dir.Close()
	return s.file, nil
}
