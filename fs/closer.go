package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// close(2) reaches the file system as a FLUSH, and so does the close of
// every copy of the descriptor: a fork copies a writer's descriptors,
// and the child's exec closes them (O_CLOEXEC), or its exit does. A
// write handle that published at every FLUSH would publish a half
// written file each time its writer forks (Python's subprocess, a shell
// pipeline, Go's os/exec). So a write handle publishes at the FLUSH of a
// process that wrote through it, its writer's own close; the others'
// FLUSHes change nothing. (RELEASE, when the last copy goes, publishes
// whatever is left.)

// writerSet is the processes that wrote through a handle. The zero
// value is ready.
type writerSet struct {
	mu    sync.Mutex
	procs map[int]struct{}
}

// wrote records that the caller of ctx wrote.
func (w *writerSet) wrote(ctx context.Context) {
	p := callerProcess(ctx)
	if p == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.procs == nil {
		w.procs = map[int]struct{}{}
	}
	w.procs[p] = struct{}{}
}

// isWriter reports whether the caller of ctx (closing a descriptor) is
// a process that wrote. One that cannot be told is not.
func (w *writerSet) isWriter(ctx context.Context) bool {
	p := callerProcess(ctx)
	if p == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.procs[p]
	return ok
}

// callerProcess is the process (thread group) of the thread that made
// the request: FUSE requests carry the thread's id. 0 if unknown.
func callerProcess(ctx context.Context) int {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return 0
	}
	return tgidOf(int(c.Pid))
}

// tgidOf is a thread's thread group.
func tgidOf(tid int) int {
	// A thread-group leader (the only thread of most writers) is its
	// own group, and pidfd_open accepts only leaders: two cheap system
	// calls at each write and close, rather than the kernel formatting
	// /proc/TID/status.
	if fd, err := unix.PidfdOpen(tid, 0); err == nil {
		unix.Close(fd)
		return tid
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0
	}
	i := bytes.Index(data, []byte("\nTgid:"))
	if i < 0 {
		return 0
	}
	rest := data[i+len("\nTgid:"):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(rest)))
	if err != nil {
		return 0
	}
	return n
}
