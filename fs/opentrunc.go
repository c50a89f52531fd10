package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// open(O_TRUNC) reaches arrayfs as two requests: an OPEN without O_TRUNC,
// then a SETATTR(size=0) that carries no file handle (the kernel drops
// the file for an ATTR_OPEN truncation, fs/fuse/dir.c fuse_do_setattr).
//
// arrayfs does not ask for FUSE_ATOMIC_O_TRUNC, which would deliver
// O_TRUNC with the OPEN: with it the kernel itself sets the inode's size
// to 0 and drops its page cache at every such open, and everybody still
// reading the old content (an array while its replacement is staged)
// reads nothing, or a prefix, or takes a SIGBUS in a mapping. Without
// it the kernel takes the size the SETATTR answers: an array's stays the
// yaml's, since its new content is staged beside it.
//
// The SETATTR has to reach the handle just opened, which alone knows
// what truncating means for it (a staged replacement of an array, a
// document's new version, a dirdb entry's pending version, a marker's
// new text). So each node keeps the handles opened for writing that have
// not done anything yet, with the thread that opened them: the same
// thread sends the SETATTR, in the same system call.

// truncater is a handle that a SETATTR without a handle may truncate.
type truncater interface {
	truncateOpen(ctx context.Context, size int64) syscall.Errno
}

// freshWriters are a node's handles opened for writing that have not
// been used yet. The zero value is ready.
type freshWriters struct {
	mu   sync.Mutex
	list []freshWriter
}

type freshWriter struct {
	pid uint32
	h   truncater
	at  time.Time
}

// freshFor bounds how long after its OPEN a handle can be the target of
// its open's truncation (the two requests come from one system call).
const freshFor = 10 * time.Second

// add records h, just opened for writing by the caller of ctx.
func (w *freshWriters) add(ctx context.Context, h truncater) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := w.list[:0]
	for _, f := range w.list {
		if now.Sub(f.at) < freshFor {
			keep = append(keep, f)
		}
	}
	w.list = append(keep, freshWriter{pid: c.Pid, h: h, at: now})
}

// take returns (and forgets) the fresh handle the caller of ctx opened
// most recently, or nil.
func (w *freshWriters) take(ctx context.Context) truncater {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.list) - 1; i >= 0; i-- {
		f := w.list[i]
		if f.pid == c.Pid && time.Since(f.at) < freshFor {
			w.list = append(w.list[:i], w.list[i+1:]...)
			return f.h
		}
	}
	return nil
}

// drop forgets h: it has been used (or closed), so a SETATTR without a
// handle from now on is a truncate(2) of the file, not its open's.
func (w *freshWriters) drop(h truncater) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, f := range w.list {
		if f.h == h {
			w.list = append(w.list[:i], w.list[i+1:]...)
			return
		}
	}
}

// openTruncation is the handle a SETATTR of a size without a handle
// truncates, if it is the truncation of an open(O_TRUNC) on n.
func (n *node) openTruncation(ctx context.Context, f any, in *fuse.SetAttrIn) truncater {
	if f != nil {
		return nil
	}
	if _, ok := in.GetSize(); !ok {
		return nil
	}
	return n.fresh.take(ctx)
}
