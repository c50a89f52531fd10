package fs

import (
	"context"
	"fmt"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store"
)

// viewResult answers a READ with a pinned slice of a mapping. go-fuse
// writes the slice to /dev/fuse as it is (Slices) and calls Done after,
// which unpins it: no copy in arrayfs.
type viewResult struct{ v store.View }

func (r viewResult) Bytes(buf []byte) ([]byte, fuse.Status) { return r.v.Bytes, fuse.OK }
func (r viewResult) Slices() ([][]byte, fuse.Status)        { return [][]byte{r.v.Bytes}, fuse.OK }
func (r viewResult) Size() int                              { return len(r.v.Bytes) }
func (r viewResult) Done()                                  { r.v.Release() }

// viewSource is content that serves pinned views of itself and is
// released once: a dirdb snapshot, one version of a document.
type viewSource interface {
	View(off int64, n int) store.View
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

// arrayHandle is an open data file of a valid array: reads come from the
// mapping, writes go in place through the pool.
type arrayHandle struct {
	fsys *FS
	a    *store.ArrayFile
}

var (
	_ gofs.FileReader   = (*arrayHandle)(nil)
	_ gofs.FileWriter   = (*arrayHandle)(nil)
	_ gofs.FileFsyncer  = (*arrayHandle)(nil)
	_ gofs.FileReleaser = (*arrayHandle)(nil)
)

func (h *arrayHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return viewResult{h.a.View(off, len(dest))}, 0
}

func (h *arrayHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.a.WriteAt(data, off)
	return uint32(n), h.fsys.errno(err)
}

func (h *arrayHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.fsys.errno(h.a.Sync())
}

// Release writes back what this file left in the pool: the close of the
// last handle is a write-back point. The kernel does not wait for it.
func (h *arrayHandle) Release(ctx context.Context) syscall.Errno {
	if err := h.a.Sync(); err != nil {
		h.fsys.errno(err)
	}
	h.a.Release()
	return 0
}

// stagedArrayHandle is an array data file opened with O_TRUNC: the new
// content is written beside the file and replaces it at close, and only
// if it has the size the yaml demands. A write past that size fails at
// once with EFBIG; a short file fails the close with EINVAL. Either way
// the old content stays.
type stagedArrayHandle struct {
	fsys  *FS
	node  *fileNode
	a     *store.ArrayFile
	stage *store.Stage
	// done is set once the stage is committed; the handle then writes
	// in place like an arrayHandle.
	done bool
}

var (
	_ gofs.FileReader   = (*stagedArrayHandle)(nil)
	_ gofs.FileWriter   = (*stagedArrayHandle)(nil)
	_ gofs.FileFlusher  = (*stagedArrayHandle)(nil)
	_ gofs.FileFsyncer  = (*stagedArrayHandle)(nil)
	_ gofs.FileReleaser = (*stagedArrayHandle)(nil)
)

func (n *fileNode) stageArray(a *store.ArrayFile) (*stagedArrayHandle, error) {
	st, err := store.NewStage(n.path(), false, 0o644)
	if err != nil {
		a.Release()
		return nil, err
	}
	h := &stagedArrayHandle{fsys: n.fsys, node: n, a: a, stage: st}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.staging != nil {
		// Two replacements at once: the later open wins, as with
		// O_TRUNC on any file; the earlier one is dropped at its close.
		n.fsys.logf("%s: a second whole-file replacement started; the first one is dropped", n.rel())
	}
	n.staging = h
	return h, nil
}

func (h *stagedArrayHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.node.mu.Lock()
	defer h.node.mu.Unlock()
	if h.done {
		return viewResult{h.a.View(off, len(dest))}, 0
	}
	n, err := h.stage.File().ReadAt(dest, off)
	if n > 0 || err == nil {
		return fuse.ReadResultData(dest[:n]), 0
	}
	return fuse.ReadResultData(nil), 0
}

func (h *stagedArrayHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.mu.Lock()
	done := h.done
	h.node.mu.Unlock()
	if done {
		n, err := h.a.WriteAt(data, off)
		return uint32(n), h.fsys.errno(err)
	}
	if end := off + int64(len(data)); end > h.a.Size() {
		return 0, h.fsys.errno(&store.Error{Path: h.node.rel(), Op: "write", Errno: syscall.EFBIG,
			Reason: refusedSize(end, h.a.Size())})
	}
	n, err := h.stage.File().WriteAt(data, off)
	return uint32(n), gofs.ToErrno(err)
}

func (h *stagedArrayHandle) truncate(size int64) syscall.Errno {
	h.node.mu.Lock()
	done := h.done
	h.node.mu.Unlock()
	if done {
		return h.fsys.errno(h.a.CheckTruncate(size))
	}
	if size > h.a.Size() {
		return h.fsys.errno(&store.Error{Path: h.node.rel(), Op: "truncate", Errno: syscall.EFBIG,
			Reason: refusedSize(size, h.a.Size())})
	}
	return gofs.ToErrno(h.stage.File().Truncate(size))
}

// Flush is close(2): commit the replacement if it is complete.
func (h *stagedArrayHandle) Flush(ctx context.Context) syscall.Errno {
	return h.commit()
}

func (h *stagedArrayHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := h.commit(); errno != 0 {
		return errno
	}
	return h.fsys.errno(h.a.Sync())
}

func (h *stagedArrayHandle) commit() syscall.Errno {
	h.node.mu.Lock()
	defer h.node.mu.Unlock()
	if h.done {
		return 0
	}
	size, err := h.stage.Size()
	if err != nil {
		return gofs.ToErrno(err)
	}
	if size != h.a.Size() {
		// Keep the stage: another descriptor of this open file may
		// still complete it. Release drops it if nobody does.
		return h.fsys.errno(&store.Error{Path: h.node.rel(), Op: "close", Errno: syscall.EINVAL,
			Reason: fmt.Sprintf("refused: the new content is %d bytes, its yaml says %d; the old content is kept", size, h.a.Size())})
	}
	// The stage is consumed whether or not the replacement succeeds;
	// after a failure the old content stays and later writes on this
	// handle go to it in place.
	err = h.a.Replace(h.stage)
	h.done = true
	if h.node.staging == h {
		h.node.staging = nil
	}
	if err == nil {
		h.node.replaced()
	}
	return h.fsys.errno(err)
}

func (h *stagedArrayHandle) Release(ctx context.Context) syscall.Errno {
	h.node.mu.Lock()
	if !h.done {
		h.stage.Abort()
		h.fsys.logf("%s: whole-file replacement dropped: closed before it had the size its yaml says (%d bytes); the old content is kept", h.node.rel(), h.a.Size())
		if h.node.staging == h {
			h.node.staging = nil
		}
		// The kernel cached what the refused writer wrote.
		go h.node.NotifyContent(0, 0)
	}
	h.node.mu.Unlock()
	if err := h.a.Sync(); err != nil {
		h.fsys.errno(err)
	}
	h.a.Release()
	return 0
}

func refusedSize(size, want int64) string {
	return fmt.Sprintf("refused: the file would be %d bytes, its yaml says %d", size, want)
}
