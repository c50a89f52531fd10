package daf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// ArrayFile is one data file of a valid daf array (NAME.array, or one of
// NAME.data/.indices/.indptr), served from its mapping. Its size is fixed
// by the yaml: writes stay inside it, and a whole-file replacement must
// have exactly that size.
//
// It is the pool Owner of its dirty chunks: writes pwrite the file (the
// page cache the mapping shares) and mark the chunks they touch dirty;
// writing a chunk back makes it durable.
type ArrayFile struct {
	ds   *Arrays
	rel  string // dataset-relative path
	size int64

	backing atomic.Pointer[arrayBacking]
	// refs and retired are guarded by ds.mu.
	refs    int
	retired bool
	// replaceMu keeps writes off a backing file being replaced.
	replaceMu sync.RWMutex
	// stages counts the whole-file replacements being written.
	stages atomic.Int32
}

// arrayBacking is the open file and mapping of one version (inode) of an
// array's data file. A replacement swaps in a new one; readers holding
// views of the old mapping keep it alive until they release them.
type arrayBacking struct {
	file *os.File
	m    *engine.Mapping
	dev  uint64
	ino  uint64
}

// chunkSize is the granularity of dirty tracking: a pool unit is one
// chunk of an array that has been written.
const chunkSize = 64 << 10

func (a *ArrayFile) String() string { return a.rel }

// Size is the size the yaml gives the file.
func (a *ArrayFile) Size() int64 { return a.size }

// View returns the bytes [off, off+n) of the file, pinned; release it.
func (a *ArrayFile) View(off int64, n int) engine.View { return a.backing.Load().m.View(off, n) }

// Fd is the open data file, valid while the ArrayFile is referenced
// (the file system passes it through to the kernel for readers).
func (a *ArrayFile) Fd() uintptr { return a.backing.Load().file.Fd() }

// ReadAt copies bytes of the file (for callers that cannot hold a view).
func (a *ArrayFile) ReadAt(p []byte, off int64) (int, error) {
	return a.backing.Load().m.ReadAt(p, off)
}

// WriteAt writes in place. A write that would take the file past the
// size its yaml gives it is refused with EFBIG and changes nothing.
func (a *ArrayFile) WriteAt(p []byte, off int64) (int, error) {
	if a.ds.readOnly {
		return 0, engine.Refuse(a.rel, "write", syscall.EROFS, "read-only mount")
	}
	if off < 0 || off+int64(len(p)) > a.size {
		return 0, engine.Refuse(a.rel, "write", syscall.EFBIG,
			"refused: writing %d bytes at offset %d would make the file %d bytes, its yaml says %d",
			len(p), off, off+int64(len(p)), a.size)
	}
	a.replaceMu.RLock()
	defer a.replaceMu.RUnlock()
	b := a.backing.Load()
	n, err := b.file.WriteAt(p, off)
	if err != nil {
		return n, &engine.Error{Path: a.rel, Op: "write", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	for c := off / chunkSize; c*chunkSize < off+int64(n); c++ {
		start := c * chunkSize
		u := &engine.Unit{Owner: a, Key: fmt.Sprint(c), Size: min(chunkSize, a.size-start)}
		if err := a.ds.pool.MarkDirty(u); err != nil {
			// The bytes are written; the pool failed to evict something
			// else. Report it now rather than at some later fsync.
			return n, &engine.Error{Path: a.rel, Op: "write", Reason: err.Error(), Errno: syscall.EIO}
		}
	}
	return n, nil
}

// Stat returns the attributes of the file served (the inode opened).
func (a *ArrayFile) Stat() (engine.Stat, error) {
	b := a.backing.Load()
	if b == nil {
		return engine.Stat{}, syscall.ESTALE
	}
	// A concurrent last Release may close it: FstatFile then fails.
	return engine.FstatFile(b.file)
}

// NewStage starts a whole-file replacement of the file (O_TRUNC): empty,
// written beside it, swapped in by Replace or dropped by DropStage.
func (a *ArrayFile) NewStage() (*engine.Stage, error) {
	if a.ds.readOnly {
		return nil, engine.Refuse(a.rel, "open", syscall.EROFS, "read-only mount")
	}
	st, err := a.ds.back.NewStage(a.rel, false, 0o644)
	if err != nil {
		return nil, &engine.Error{Path: a.rel, Op: "open", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	a.stages.Add(1)
	return st, nil
}

// DropStage throws away a replacement that will not be committed.
func (a *ArrayFile) DropStage(s *engine.Stage) {
	s.Abort()
	a.stages.Add(-1)
}

// Staging reports whether a replacement of the file is being written.
func (a *ArrayFile) Staging() bool { return a.stages.Load() > 0 }

// CheckTruncate refuses a truncate to any size but the yaml's.
func (a *ArrayFile) CheckTruncate(size int64) error {
	if size != a.size {
		return engine.Refuse(a.rel, "truncate", syscall.EINVAL,
			"refused: truncating to %d bytes, its yaml says %d", size, a.size)
	}
	return nil
}

// Sync writes back the file's dirty chunks (fsync).
func (a *ArrayFile) Sync() error { return a.ds.pool.Flush(a) }

// WriteBack makes the given chunks durable. One fdatasync covers them
// all; it is also what makes blocks newly allocated in a sparse file
// durable, which msync alone would not.
func (a *ArrayFile) WriteBack(units []*engine.Unit) error {
	b := a.backing.Load()
	if err := unix.Fdatasync(int(b.file.Fd())); err != nil {
		return &engine.Error{Path: a.rel, Op: "write-back", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return nil
}

// Replace makes stage the new content of the file, atomically, if its
// size is the yaml's; otherwise it refuses with EINVAL and the old
// content stays. The stage is consumed either way.
//
// The new content is a new inode, as with any rename-based save: a's
// handles keep reading (and writing) the version they opened, and a is
// retired; the ArrayFile returned (referenced) serves the new one.
func (a *ArrayFile) Replace(stage *engine.Stage) (*ArrayFile, error) {
	defer a.stages.Add(-1)
	size, err := stage.Size()
	if err != nil {
		stage.Abort()
		return nil, &engine.Error{Path: a.rel, Op: "replace", Reason: err.Error(), Errno: syscall.EIO}
	}
	if size != a.size {
		stage.Abort()
		return nil, engine.Refuse(a.rel, "replace", syscall.EINVAL,
			"refused: new content is %d bytes, its yaml says %d; the old content is kept", size, a.size)
	}
	a.replaceMu.Lock()
	defer a.replaceMu.Unlock()
	// Chunks dirty in the old version belong to the file being replaced.
	if err := a.ds.pool.Flush(a); err != nil {
		stage.Abort()
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, &engine.Error{Path: a.rel, Op: "replace", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	a.ds.forget(a.rel)
	na, err := a.ds.arrayFile(a.rel)
	if err != nil {
		return nil, &engine.Error{Path: a.rel, Op: "replace", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	if na == nil {
		return nil, engine.Refuse(a.rel, "replace", syscall.EIO, "replaced, but the file no longer makes a valid array")
	}
	return na, nil
}

func openArrayBacking(back *engine.Backing, rel string, readOnly bool) (*arrayBacking, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := back.OpenFile(rel, flag|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: rel, Err: syscall.EINVAL}
	}
	m, err := engine.OpenMapping(f, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &arrayBacking{file: f, m: m, dev: uint64(st.Dev), ino: st.Ino}, nil
}

func (b *arrayBacking) close() {
	b.m.Close()
	b.file.Close()
}

// close releases the backing file; dirty chunks must be written back first.
func (a *ArrayFile) close() {
	if b := a.backing.Swap(nil); b != nil {
		b.close()
	}
}

// arrayItem is what the daf rules say about a data file's name in its
// directory: the array it belongs to and the size it must have, or the
// problem that makes the array invalid.
type arrayItem struct {
	meta *Meta
	size int64 // of the data file asked about
}

// validateArray checks the item a data file belongs to. It returns
// (nil, nil) when the file is not part of any array (no yaml beside it,
// or the extension is not one of the array's), and a Problem when the
// item is an array that is corrupt or inconsistent.
func validateArray(back *engine.Backing, dirRel, name string) (*arrayItem, *engine.Problem, error) {
	base, ext, ok := SplitName(name)
	if !ok {
		return nil, nil, nil
	}
	yamlName := base + ExtYAML
	data, err := back.ReadFile(filepath.Join(dirRel, yamlName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, &engine.Problem{Path: yamlName, Reason: engine.UnwrapPath(err).Error()}, nil
	}
	meta, err := ParseMeta(data)
	if err != nil {
		return nil, &engine.Problem{Path: yamlName, Reason: err.Error()}, nil
	}
	return checkArrayFiles(back, dirRel, base, meta, ext)
}

// checkArrayFiles checks that the array's data files are exactly those the
// yaml describes, with the sizes it gives them.
func checkArrayFiles(back *engine.Backing, dirRel, base string, meta *Meta, ext string) (*arrayItem, *engine.Problem, error) {
	want := meta.DataFiles()
	hasArray := back.Exists(filepath.Join(dirRel, base+ExtArray))
	hasData := back.Exists(filepath.Join(dirRel, base+ExtData))
	if hasArray && hasData {
		return nil, &engine.Problem{Path: base + ExtYAML, Reason: fmt.Sprintf(
			"conflict: both %s and %s exist; remove the stale one", base+ExtArray, base+ExtData)}, nil
	}
	if _, ok := want[ext]; !ok {
		kind := "dense"
		if meta.Sparse {
			kind = "sparse"
		}
		return nil, &engine.Problem{Path: base + ext, Reason: fmt.Sprintf("%s is a %s array: %s is not one of its files", base+ExtYAML, kind, ext)}, nil
	}
	for e, size := range want {
		st, err := back.Lstat(filepath.Join(dirRel, base+e))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, &engine.Problem{Path: base + ExtYAML, Reason: "missing data file " + base + e}, nil
		case err != nil:
			return nil, nil, err
		case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
			return nil, &engine.Problem{Path: base + e, Reason: "not a regular file"}, nil
		case st.Size != size:
			return nil, &engine.Problem{Path: base + e, Reason: fmt.Sprintf(
				"size mismatch: %d bytes, %s says %d", st.Size, base+ExtYAML, size)}, nil
		}
	}
	return &arrayItem{meta: meta, size: want[ext]}, nil, nil
}
