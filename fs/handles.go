package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/engine"
)

// viewResult answers a READ with a pinned slice of a mapping. go-fuse
// writes the slice to /dev/fuse as it is (Slices) and calls Done after,
// which unpins it: no copy in arrayfs.
type viewResult struct{ v engine.View }

func (r viewResult) Bytes(buf []byte) ([]byte, fuse.Status) { return r.v.Bytes, fuse.OK }
func (r viewResult) Slices() ([][]byte, fuse.Status)        { return [][]byte{r.v.Bytes}, fuse.OK }
func (r viewResult) Size() int                              { return len(r.v.Bytes) }
func (r viewResult) Done()                                  { r.v.Release() }

// viewSource is content that serves pinned views of itself and is
// released once: a dirdb snapshot, one version of a document.
type viewSource interface {
	View(off int64, n int) engine.View
	Release()
}

// viewHandle is a read-only open file served from a viewSource, zero-copy.
type viewHandle[S viewSource] struct{ src S }

func (h *viewHandle[S]) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return viewResult{h.src.View(off, len(dest))}, 0
}

func (h *viewHandle[S]) Release(ctx context.Context) syscall.Errno {
	h.src.Release()
	return 0
}

// Fsync of a descriptor open for reading: what it reads is durable
// already (a dirdb snapshot is of a published file), so there is
// nothing to do; answering ENOTSUP would fail sync(1) on the file.
func (h *viewHandle[S]) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

// arrayHandle is an open data file of a valid array: reads come from the
// mapping, writes go in place through the pool. A write handle truncated
// to empty (open with O_TRUNC: cp, `>`, np.memmap(mode='w+')) writes a
// whole-file replacement instead, staged beside the file and swapped in
// at close, and only if it then has the size the yaml demands: a write
// past that size fails at once with EFBIG, a short file fails the close
// with EINVAL, and either way the old content stays.
//
// Until the commit everybody else sees the old content: writes go to the
// stage through a DIRECT_IO handle (they never enter the page cache that
// readers share, and they drop the pages they overlap, which readers
// fetch again from the old file), and the file's size stays the yaml's
// (opentrunc.go). The commit is a new inode: the kernel is told to look
// the name up again, and handles opened before keep reading the old one
// to the end.
type arrayHandle struct {
	fsys *FS
	node *fileNode

	cached bool // counted among its node's cached handles (iomode.go)
	writer bool // counted among its node's writers (array_passthrough)

	mu      sync.Mutex
	a       *daf.ArrayFile // after a commit, the new file's
	stage   *engine.Stage  // the replacement being written, if any
	writers writerSet      // processes that wrote (closer.go)
}

var (
	_ gofs.FileReader   = (*arrayHandle)(nil)
	_ gofs.FileWriter   = (*arrayHandle)(nil)
	_ gofs.FileFlusher  = (*arrayHandle)(nil)
	_ gofs.FileFsyncer  = (*arrayHandle)(nil)
	_ gofs.FileReleaser = (*arrayHandle)(nil)
)

// file is the ArrayFile the handle serves now, and its stage if any.
func (h *arrayHandle) file() (*daf.ArrayFile, *engine.Stage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.a, h.stage
}

func (h *arrayHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.fsys.reads.array.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stage == nil {
		return viewResult{h.a.View(off, len(dest))}, 0
	}
	n, err := h.stage.File().ReadAt(dest, off)
	if n > 0 || err == nil {
		return fuse.ReadResultData(dest[:n]), 0
	}
	return fuse.ReadResultData(nil), 0
}

func (h *arrayHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.fresh.drop(h)
	h.writers.wrote(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stage == nil {
		n, err := h.a.WriteAt(data, off)
		return uint32(n), h.fsys.errno(err)
	}
	if end := off + int64(len(data)); end > h.a.Size() {
		return 0, h.fsys.errno(&engine.Error{Path: h.node.rel(), Op: "write", Errno: syscall.EFBIG,
			Reason: refusedSize(end, h.a.Size())})
	}
	n, err := h.stage.File().WriteAt(data, off)
	return uint32(n), gofs.ToErrno(err)
}

// truncate is ftruncate(2), or the truncation of an open(O_TRUNC): to
// empty it starts a whole-file replacement; within one being written it
// sizes it (never past the yaml's size); otherwise only the yaml's size
// is allowed (it changes nothing).
func (h *arrayHandle) truncate(size int64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stage != nil && size > h.a.Size():
		return h.fsys.errno(&engine.Error{Path: h.node.rel(), Op: "truncate", Errno: syscall.EFBIG,
			Reason: refusedSize(size, h.a.Size())})
	case h.stage != nil:
		return gofs.ToErrno(h.stage.File().Truncate(size))
	case size == 0 && h.a.Size() != 0:
		st, err := h.a.NewStage()
		if err != nil {
			return h.fsys.errno(err)
		}
		h.stage = st
		return 0
	default:
		return h.fsys.errno(h.a.CheckTruncate(size))
	}
}

func (h *arrayHandle) truncateOpen(ctx context.Context, size int64) syscall.Errno {
	h.writers.wrote(ctx)
	return h.truncate(size)
}

// getattr is the attributes of the file this handle serves: until a
// replacement's commit, the old one's.
func (h *arrayHandle) getattr(out *fuse.AttrOut) syscall.Errno {
	a, _ := h.file()
	return h.node.arrayAttr(a, out)
}

// arrayAttr answers GETATTR for node n with an open ArrayFile a: a's
// file when it is the node's own, else the node's by its name (ESTALE
// when that leads to another file: the kernel then looks it up again).
// go-fuse hands Getattr any open handle of the node, also for a stat by
// path from another process.
func (n *fileNode) arrayAttr(a *daf.ArrayFile, out *fuse.AttrOut) syscall.Errno {
	st, err := a.Stat()
	if err != nil || !n.isOwn(&st) {
		var errno syscall.Errno
		if st, errno = n.lstatOwn(); errno != 0 {
			return errno
		}
	}
	out.FromStat(&st.Stat_t)
	return 0
}

// Flush is close(2): the writer's commits the replacement if it is
// complete (another process's, a fork's, changes nothing: closer.go).
func (h *arrayHandle) Flush(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if !h.writers.isWriter(ctx) {
		return 0
	}
	return h.commit()
}

func (h *arrayHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.node.fresh.drop(h)
	if errno := h.commit(); errno != 0 {
		return errno
	}
	a, _ := h.file()
	return h.fsys.errno(a.Sync())
}

func (h *arrayHandle) commit() syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stage == nil {
		return 0
	}
	size, err := h.stage.Size()
	if err != nil {
		return gofs.ToErrno(err)
	}
	if size != h.a.Size() {
		// Keep the stage: another descriptor of this open file may
		// still complete it. Release drops it if nobody does.
		return h.fsys.errno(&engine.Error{Path: h.node.rel(), Op: "close", Errno: syscall.EINVAL,
			Reason: fmt.Sprintf("refused: the new content is %d bytes, its yaml says %d; the old content is kept", size, h.a.Size())})
	}
	// The stage is consumed whether or not the replacement succeeds;
	// after a failure the old content stays and later writes on this
	// handle go to it in place.
	na, err := h.a.Replace(h.stage)
	h.stage = nil
	if err != nil {
		return h.fsys.errno(err)
	}
	h.a.Release()
	h.a = na
	h.node.replacedNow()
	return 0
}

// Release writes back what this file left in the pool: the close of the
// last handle is a write-back point. The kernel does not wait for it.
func (h *arrayHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if h.cached {
		h.node.modes.closed(false)
	}
	if h.writer {
		h.node.modes.closedWriter()
	}
	h.mu.Lock()
	if h.stage != nil {
		h.a.DropStage(h.stage)
		h.stage = nil
		h.fsys.logf("%s: whole-file replacement dropped: closed before it had the size its yaml says (%d bytes); the old content is kept", h.node.rel(), h.a.Size())
	}
	a := h.a
	h.mu.Unlock()
	if err := a.Sync(); err != nil {
		h.fsys.errno(err)
	}
	a.Release()
	return 0
}

// arrayPassthrough is an array data file open for reading that the
// kernel reads from the backing file itself (FUSE passthrough): the file
// is byte-identical to it, and every write arrayfs makes to it is a
// pwrite of that same file, which the reader sees as it lands. Writers
// never pass through (their writes are counted in the pool and held to
// the yaml's size), so this is a type of its own: go-fuse passes through
// every handle of a node whose type can, once one did.
type arrayPassthrough struct{ *arrayHandle }

var _ gofs.FilePassthroughFder = (*arrayPassthrough)(nil)

func (h *arrayPassthrough) PassthroughFd() (int, bool) {
	a, _ := h.file()
	return int(a.Fd()), true
}

func (h *arrayPassthrough) Release(ctx context.Context) syscall.Errno {
	h.node.modes.closed(true)
	return h.arrayHandle.Release(ctx)
}

func refusedSize(size, want int64) string {
	return fmt.Sprintf("refused: the file would be %d bytes, its yaml says %d", size, want)
}
