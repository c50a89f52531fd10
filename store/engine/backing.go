package engine

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Backing is the dataset directory, through which every access arrayfs
// makes to a backing file goes. Paths are dataset-relative ("a/b"; "" or
// "." for the directory itself), and each is resolved under the
// directory's own descriptor:
//
//   - no component is a symbolic link that gets followed: directories
//     are opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and
//     the last component is never followed either (O_NOFOLLOW,
//     AT_SYMLINK_NOFOLLOW, or an operation on the descriptor opened).
//     A user who swaps a file or directory of theirs for a symlink after
//     the kernel looked it up makes arrayfs's access fail (ELOOP); it
//     never reaches the link's target, which the daemon (often root)
//     could read or write and the user could not;
//   - nothing resolves ".." above the dataset (RESOLVE_BENEATH);
//   - the absolute path of the dataset is never prepended, so a path
//     near PATH_MAX in the mount stays within it here.
//
// Symbolic links inside the dataset are still served: as links, which
// the kernel follows on the caller's side of the mount.
type Backing struct {
	fd   int    // the dataset directory, O_RDONLY|O_DIRECTORY
	path string // its absolute path, for messages only

	// btime: the file system records birth times (see Generation).
	// Without them, gens counts how often arrayfs itself freed each
	// inode number, the one way it knows that a number came back.
	btime bool
	mu    sync.Mutex
	gens  map[uint64]uint64

	// unsynced holds directories with renames not yet durable, guarded
	// by mu; syncMu orders SyncDirs calls (dirsync.go).
	unsynced map[uint64]*os.File
	syncMu   sync.Mutex
}

// resolveFlags are the openat2 rules of every lookup under the dataset.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenBacking opens the dataset directory at path.
func OpenBacking(path string) (*Backing, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real // what mountinfo and messages show
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOTDIR {
			return nil, fmt.Errorf("dataset %s: not a directory", path)
		}
		return nil, fmt.Errorf("dataset %s: %w", path, err)
	}
	b := &Backing{fd: fd, path: abs, gens: map[uint64]uint64{}, unsynced: map[uint64]*os.File{}}
	if st, err := Fstat(fd); err == nil {
		b.btime = st.HasBtime
	}
	return b, nil
}

// Generation tells one file from another that has the same inode number
// (a number the backing file system reused after the first was deleted,
// as it does right after arrayfs's own rename-replacements): the file's
// birth time where the file system keeps one, else the count of times
// arrayfs freed that number. The file system shows it as the FUSE
// generation, so that two files never share one node.
func (b *Backing) Generation(st *Stat) uint64 {
	if st.HasBtime {
		return uint64(st.Btime)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gens[st.Ino]
}

// noteFreed records that name in dirfd is about to go: its inode number
// may come back as another file. Only needed without birth times.
func (b *Backing) noteFreed(dirfd int, name string) {
	if b.btime {
		return
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return
	}
	if st.Nlink <= 1 || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		b.mu.Lock()
		b.gens[st.Ino]++
		b.mu.Unlock()
	}
}

// Path is the dataset directory's absolute path (for messages: never
// access a backing file by it).
func (b *Backing) Path() string { return b.path }

// Fd is the dataset directory's descriptor.
func (b *Backing) Fd() int { return b.fd }

// Close closes the dataset directory.
func (b *Backing) Close() error { return unix.Close(b.fd) }

// clean turns rel into the form openat2 takes: "." for the root, no
// leading slash, no "." or ".." components (the kernel never sends them
// in names; an absolute or escaping rel is a bug, refused as EINVAL).
func clean(rel string) (string, error) {
	if rel == "" || rel == "." {
		return ".", nil
	}
	c := filepath.Clean(rel)
	if filepath.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return "", unix.EINVAL
	}
	return c, nil
}

// pathChunk is the longest path one openat2 is given. The kernel refuses
// a path of PATH_MAX (4096) bytes or more, and one under the dataset can
// be longer than that while every name in it is short (pjdfstest's
// */03.t make such paths from a subdirectory): a longer one is descended
// in pieces, each resolved beneath the last by the same rules.
const pathChunk = 2048

// Openat2 opens rel under the dataset with the resolution rules.
func (b *Backing) Openat2(rel string, flags int, mode uint32) (int, error) {
	c, err := clean(rel)
	if err != nil {
		return -1, err
	}
	dirfd := b.fd
	for len(c) > pathChunk {
		i := strings.LastIndexByte(c[:pathChunk], '/')
		if i <= 0 {
			return -1, unix.ENAMETOOLONG // a name longer than any file system allows
		}
		fd, err := openat2(dirfd, c[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
		if dirfd != b.fd {
			unix.Close(dirfd)
		}
		if err != nil {
			return -1, err
		}
		dirfd, c = fd, c[i+1:]
	}
	fd, err := openat2(dirfd, c, flags, mode)
	if dirfd != b.fd {
		unix.Close(dirfd)
	}
	return fd, err
}

// openat2 opens path beneath dirfd with the resolution rules.
func openat2(dirfd int, path string, flags int, mode uint32) (int, error) {
	for {
		how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}
		if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
			// openat2 refuses a mode with more than permission bits
			// (FUSE's CREATE carries S_IFREG) or one without O_CREAT.
			how.Mode = uint64(mode & 07777)
		}
		fd, err := unix.Openat2(dirfd, path, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a rename raced with the lookup: try again
		}
		return fd, err
	}
}

// parent opens the directory holding rel and returns it with rel's last
// component. done closes what parent opened. rel must not be the root.
func (b *Backing) parent(rel string) (dirfd int, base string, done func(), err error) {
	c, err := clean(rel)
	if err != nil {
		return -1, "", nil, err
	}
	if c == "." {
		return -1, "", nil, unix.EINVAL
	}
	dir, base := filepath.Split(c)
	if dir == "" {
		return b.fd, base, func() {}, nil
	}
	fd, err := b.Openat2(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, base, func() { unix.Close(fd) }, nil
}

// isRoot reports whether rel names the dataset directory itself.
func IsRoot(rel string) bool {
	c, err := clean(rel)
	return err == nil && c == "."
}

// Open opens rel with flags (O_NOFOLLOW added: a symbolic link is never
// opened through). The caller closes the descriptor.
func (b *Backing) Open(rel string, flags int, mode uint32) (int, error) {
	return b.Openat2(rel, flags|unix.O_NOFOLLOW, mode)
}

// OpenFile is Open as an *os.File named by its dataset-relative path.
func (b *Backing) OpenFile(rel string, flags int, mode uint32) (*os.File, error) {
	fd, err := b.Open(rel, flags, mode)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// OpenDir opens directory rel for reading (listing, fsync, *at calls).
func (b *Backing) OpenDir(rel string) (*os.File, error) {
	return b.OpenFile(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

// Stat is what arrayfs knows of a backing file: its attributes and,
// where the file system keeps one, its birth time, which tells a file
// from a later one that reuses its inode number.
type Stat struct {
	syscall.Stat_t
	// Btime is the birth time in nanoseconds; HasBtime is false where
	// the file system does not record one.
	Btime    int64
	HasBtime bool
}

// statxMask is what arrayfs asks statx for.
const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// Lstat returns the attributes of rel itself (not of a link's target).
func (b *Backing) Lstat(rel string) (Stat, error) {
	var stx unix.Statx_t
	if IsRoot(rel) {
		if err := unix.Statx(b.fd, "", unix.AT_EMPTY_PATH, statxMask, &stx); err != nil {
			return Stat{}, err
		}
		return statOf(&stx), nil
	}
	dirfd, base, done, err := b.parent(rel)
	if err != nil {
		return Stat{}, err
	}
	defer done()
	if err := unix.Statx(dirfd, base, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, statxMask, &stx); err != nil {
		return Stat{}, err
	}
	return statOf(&stx), nil
}

// Fstat returns the attributes of an open descriptor.
func Fstat(fd int) (Stat, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &stx); err != nil {
		return Stat{}, err
	}
	return statOf(&stx), nil
}

// FstatFile returns the attributes of an open file, safely against a
// concurrent Close (the descriptor stays valid for the call).
func FstatFile(f *os.File) (Stat, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Stat{}, err
	}
	var st Stat
	var serr error
	if err := rc.Control(func(fd uintptr) { st, serr = Fstat(int(fd)) }); err != nil {
		return Stat{}, err
	}
	return st, serr
}

func statOf(x *unix.Statx_t) Stat {
	ts := func(t unix.StatxTimestamp) syscall.Timespec {
		return syscall.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)}
	}
	s := Stat{Stat_t: syscall.Stat_t{
		Dev:     unix.Mkdev(x.Dev_major, x.Dev_minor),
		Ino:     x.Ino,
		Nlink:   uint64(x.Nlink),
		Mode:    uint32(x.Mode),
		Uid:     x.Uid,
		Gid:     x.Gid,
		Rdev:    unix.Mkdev(x.Rdev_major, x.Rdev_minor),
		Size:    int64(x.Size),
		Blksize: int64(x.Blksize),
		Blocks:  int64(x.Blocks),
		Atim:    ts(x.Atime),
		Mtim:    ts(x.Mtime),
		Ctim:    ts(x.Ctime),
	}}
	if x.Mask&unix.STATX_BTIME != 0 {
		s.HasBtime = true
		s.Btime = x.Btime.Sec*1e9 + int64(x.Btime.Nsec)
	}
	return s
}

// IsRegular reports whether rel is a regular file (not a link to one).
func (b *Backing) IsRegular(rel string) bool {
	st, err := b.Lstat(rel)
	return err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG
}

// Exists reports whether rel exists (a dangling link exists).
func (b *Backing) Exists(rel string) bool {
	_, err := b.Lstat(rel)
	return err == nil
}

// Mkdir makes directory rel.
func (b *Backing) Mkdir(rel string, mode uint32) error {
	return b.atCall(rel, func(dirfd int, base string) error { return unix.Mkdirat(dirfd, base, mode) })
}

// Mknod makes a special file rel.
func (b *Backing) Mknod(rel string, mode uint32, dev int) error {
	return b.atCall(rel, func(dirfd int, base string) error { return unix.Mknodat(dirfd, base, mode, dev) })
}

// Symlink makes rel a symbolic link to target (stored as given: the
// daemon never follows it).
func (b *Backing) Symlink(target, rel string) error {
	return b.atCall(rel, func(dirfd int, base string) error { return unix.Symlinkat(target, dirfd, base) })
}

// Unlink removes the non-directory rel.
func (b *Backing) Unlink(rel string) error {
	return b.atCall(rel, func(dirfd int, base string) error {
		b.noteFreed(dirfd, base)
		return unix.Unlinkat(dirfd, base, 0)
	})
}

// Rmdir removes the empty directory rel.
func (b *Backing) Rmdir(rel string) error {
	return b.atCall(rel, func(dirfd int, base string) error {
		b.noteFreed(dirfd, base)
		return unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR)
	})
}

// Readlink returns the target of the symbolic link rel.
func (b *Backing) Readlink(rel string) ([]byte, error) {
	var out []byte
	err := b.atCall(rel, func(dirfd int, base string) error {
		buf := make([]byte, 256)
		for {
			n, err := unix.Readlinkat(dirfd, base, buf)
			if err != nil {
				return err
			}
			if n < len(buf) {
				out = buf[:n]
				return nil
			}
			buf = make([]byte, 2*len(buf))
		}
	})
	return out, err
}

// Link makes newRel a hard link to oldRel (to a link itself, if oldRel is
// one: never to its target).
func (b *Backing) Link(oldRel, newRel string) error {
	return b.atCall(oldRel, func(odir int, obase string) error {
		return b.atCall(newRel, func(ndir int, nbase string) error {
			return unix.Linkat(odir, obase, ndir, nbase, 0)
		})
	})
}

// LinkFd gives the open file fd (one with no name: O_TMPFILE) the name
// newRel, through its /proc link, which is how linkat reaches a file
// by descriptor without CAP_DAC_READ_SEARCH.
func (b *Backing) LinkFd(fd int, newRel string) error {
	return b.atCall(newRel, func(ndir int, nbase string) error {
		return unix.Linkat(unix.AT_FDCWD, procFd(fd), ndir, nbase, unix.AT_SYMLINK_FOLLOW)
	})
}

// Rename renames from to to (flags are renameat2's).
func (b *Backing) Rename(from, to string, flags uint) error {
	return b.atCall(from, func(fdir int, fbase string) error {
		return b.atCall(to, func(tdir int, tbase string) error {
			if flags&unix.RENAME_EXCHANGE == 0 {
				b.noteFreed(tdir, tbase)
			}
			return unix.Renameat2(fdir, fbase, tdir, tbase, flags)
		})
	})
}

// Lchown changes the owner of rel itself (-1 keeps an id).
func (b *Backing) Lchown(rel string, uid, gid int) error {
	if IsRoot(rel) {
		return unix.Fchownat(b.fd, "", uid, gid, unix.AT_EMPTY_PATH)
	}
	return b.atCall(rel, func(dirfd int, base string) error {
		return unix.Fchownat(dirfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// UtimesNano sets the access and modification times of rel itself
// (UTIME_OMIT keeps one).
func (b *Backing) UtimesNano(rel string, ts []unix.Timespec) error {
	if IsRoot(rel) {
		return unix.UtimesNanoAt(b.fd, "", ts, unix.AT_EMPTY_PATH)
	}
	return b.atCall(rel, func(dirfd int, base string) error {
		return unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Chmod changes the mode of rel, which is never a link's target: a
// symbolic link has no mode of its own on Linux (EOPNOTSUPP).
func (b *Backing) Chmod(rel string, mode uint32) error {
	fd, err := b.Openat2(rel, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	// The descriptor's /proc link names exactly the inode opened.
	return unix.Chmod(procFd(fd), mode&07777)
}

// Truncate sets the size of the regular file rel.
func (b *Backing) Truncate(rel string, size int64) error {
	fd, err := b.Open(rel, unix.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, size)
}

// Statfs describes the file system holding the dataset.
func (b *Backing) Statfs(st *unix.Statfs_t) error { return unix.Fstatfs(b.fd, st) }

// ReadDirNames lists directory rel.
func (b *Backing) ReadDirNames(rel string) ([]string, error) {
	f, err := b.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// ReadFile reads the whole regular file rel.
func (b *Backing) ReadFile(rel string) ([]byte, error) {
	f, err := b.OpenFile(rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "read", Path: rel, Err: unix.EINVAL}
	}
	return io.ReadAll(f)
}

// WriteFile creates (or truncates) rel with data, mode perm.
func (b *Backing) WriteFile(rel string, data []byte, perm uint32) error {
	f, err := b.OpenFile(rel, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir makes the entries of directory rel durable.
func (b *Backing) SyncDir(rel string) error {
	f, err := b.OpenDir(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: fsync of directory: %w", rel, err)
	}
	return nil
}

// Extended attributes of rel itself. Linux has no *at calls for them
// before 6.13, so they go through the /proc link of rel's directory,
// which that descriptor pins, and the l* calls, which do not follow rel.

// Getxattr reads attribute attr of rel.
func (b *Backing) Getxattr(rel, attr string, dest []byte) (int, error) {
	var n int
	err := b.xattrCall(rel, func(p string) (err error) { n, err = unix.Lgetxattr(p, attr, dest); return })
	return n, err
}

// Listxattr lists the attributes of rel.
func (b *Backing) Listxattr(rel string, dest []byte) (int, error) {
	var n int
	err := b.xattrCall(rel, func(p string) (err error) { n, err = unix.Llistxattr(p, dest); return })
	return n, err
}

// ListxattrAll is the whole NUL-separated list of rel's attribute names.
func (b *Backing) ListxattrAll(rel string) ([]byte, error) {
	for {
		n, err := b.Listxattr(rel, nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = b.Listxattr(rel, buf)
		if err != unix.ERANGE {
			return buf[:n], err
		}
	}
}

// Setxattr sets attribute attr of rel.
func (b *Backing) Setxattr(rel, attr string, data []byte, flags int) error {
	return b.xattrCall(rel, func(p string) error { return unix.Lsetxattr(p, attr, data, flags) })
}

// Removexattr removes attribute attr of rel.
func (b *Backing) Removexattr(rel, attr string) error {
	return b.xattrCall(rel, func(p string) error { return unix.Lremovexattr(p, attr) })
}

func (b *Backing) xattrCall(rel string, call func(p string) error) error {
	if IsRoot(rel) {
		return call(procFd(b.fd))
	}
	return b.atCall(rel, func(dirfd int, base string) error {
		if dirfd == b.fd {
			return call(procFd(b.fd) + "/" + base)
		}
		return call(procFd(dirfd) + "/" + base)
	})
}

func procFd(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// atCall runs call with the directory of rel and rel's last component.
func (b *Backing) atCall(rel string, call func(dirfd int, base string) error) error {
	dirfd, base, done, err := b.parent(rel)
	if err != nil {
		return err
	}
	defer done()
	return call(dirfd, base)
}

// At runs call with a descriptor of the directory holding rel and rel's
// last component, for the *at calls this type has no method for.
func (b *Backing) At(rel string, call func(dirfd int, base string) error) error {
	return b.atCall(rel, call)
}

// ReadDirSorted lists directory rel of back, sorted.
func ReadDirSorted(back *Backing, rel string) ([]string, error) {
	names, err := back.ReadDirNames(rel)
	sort.Strings(names)
	return names, err
}
