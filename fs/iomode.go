package fs

import (
	"context"
	"os"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// The kernel refuses to open an inode through its page cache while it is
// open in passthrough mode, and the other way round: the open fails with
// EIO (fs/fuse/iomode.c). A file's node can have both kinds of handle,
// since what a file is may change while it is open (an array whose data
// file is truncated behind the mount is a plain file for the next open;
// a plain file becomes an array when its yaml arrives). So each node
// counts its handles by mode, and a new open takes a mode compatible
// with the others: DIRECT_IO handles go with either.

// ioModes counts a node's open handles by how the kernel does their I/O.
type ioModes struct {
	mu                  sync.Mutex
	cached, passthrough int
	// writers are the array writers of a read-write mount with
	// array_passthrough (DIRECT_IO): no reader passes through while one
	// is open, and none opens while a reader is passed through.
	writers int
	// released is closed, and dropped, when a passthrough handle is
	// released: what a writer waiting for readers waits for.
	released chan struct{}
}

// writerWait is how long a writer of an array waits for the readers
// passed through to close before its open is refused: a reader's
// RELEASE reaches the daemon only after its close(2) has returned, so
// an open that follows a close at once finds the reader still counted.
var writerWait = time.Second

// openWriter counts a writer of an array on a read-write mount with
// array_passthrough. The kernel refuses (EIO) any open of an inode that
// is open in passthrough unless it passes through too, and a writer
// must not (its writes are the pool's, held to the yaml's size): so it
// waits for the readers, up to writerWait or its cancellation, and false
// means they are still open.
func (m *ioModes) openWriter(ctx context.Context) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	var timeout *time.Timer // only when it waits
	for m.passthrough > 0 {
		if timeout == nil {
			timeout = time.NewTimer(writerWait)
			defer timeout.Stop()
		}
		if m.released == nil {
			m.released = make(chan struct{})
		}
		released := m.released
		m.mu.Unlock()
		select {
		case <-released:
		case <-timeout.C:
			m.mu.Lock()
			return false
		case <-ctx.Done():
			m.mu.Lock()
			return false
		}
		m.mu.Lock()
	}
	m.writers++
	return true
}

func (m *ioModes) closedWriter() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writers--
}

// passthroughWorks: the kernel passes a backing file through only for a
// server with CAP_SYS_ADMIN; elsewhere a "passthrough" handle is cached.
var passthroughWorks = os.Geteuid() == 0

// openPlain takes the mode of a new handle that may pass through (a
// plain file's, an array reader's on a read-only mount or with
// array_passthrough): passthrough unless a cached handle or an array
// writer is open.
func (m *ioModes) openPlain() (passthrough bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cached > 0 || m.writers > 0 || !passthroughWorks {
		m.cached++
		return false
	}
	m.passthrough++
	return true
}

// openCached reports whether a handle may go through the page cache
// (KEEP_CACHE) now, counting it if so; false means it must be DIRECT_IO.
func (m *ioModes) openCached() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.passthrough > 0 {
		return false
	}
	m.cached++
	return true
}

func (m *ioModes) closed(passthrough bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if passthrough {
		m.passthrough--
		if m.released != nil {
			close(m.released)
			m.released = nil
		}
	} else {
		m.cached--
	}
}

// plainFile is a plain file's open handle: go-fuse's loopback file, in
// the mode its node gave it.
type plainFile struct {
	*gofs.LoopbackFile
	modes       *ioModes
	passthrough bool
}

func newPlainFile(fd int, modes *ioModes) *plainFile {
	return &plainFile{
		LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile),
		modes:        modes,
		passthrough:  modes.openPlain(),
	}
}

// newReplacedFile is a handle of the file a node's name leads to now,
// not the node's own (fileNode.Open): DIRECT_IO, which goes with any
// mode, so it is not counted among the node's handles.
func newReplacedFile(fd int) *plainFile {
	return &plainFile{LoopbackFile: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), modes: &ioModes{cached: 1}}
}

// PassthroughFd hands the kernel the backing file only in passthrough
// mode.
func (f *plainFile) PassthroughFd() (int, bool) {
	if !f.passthrough {
		return -1, false
	}
	return f.LoopbackFile.PassthroughFd()
}

func (f *plainFile) Release(ctx context.Context) syscall.Errno {
	f.modes.closed(f.passthrough)
	return f.LoopbackFile.Release(ctx)
}
