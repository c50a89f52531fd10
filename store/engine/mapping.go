package engine

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A Mapping is a read-only MAP_SHARED view of one backing file.
//
// Readers get Views: slices of the mapping, pinned until released, so a
// slice handed to the kernel (fuse.ReadResultData) stays valid while the
// kernel copies it even if the mapping grows meanwhile.
//
// Writes never go through the mapping: callers pwrite the file (a write
// into a mapped hole on a full disk would be a SIGBUS, pwrite reports
// ENOSPC) and then tell the mapping about the new size with Resize. Page
// cache and mapping are the same pages on Linux, so readers see the
// written bytes at once.
//
// Invariants:
//   - cur.data covers at least [0, size); bytes past size are never handed out.
//   - a region is unmapped only when its last reference (the Mapping's own,
//     then one per live View) is dropped.
//   - Resize is the only place that remaps.
type Mapping struct {
	file *os.File
	path string // for error messages

	// headroom maps more address space than the file holds, so that a
	// growing file (a store's body.bin) is remapped rarely: pages past
	// EOF are never touched, and become valid as the file grows.
	headroom bool

	mu   sync.RWMutex
	cur  *region
	size int64
}

// region is one mmap(2) call's worth of address space.
type region struct {
	data []byte
	refs atomic.Int64
}

func (r *region) ref() { r.refs.Add(1) }

func (r *region) unref() {
	if r.refs.Add(-1) == 0 && r.data != nil {
		// Nothing useful can be done with a munmap error on a
		// region nobody references any more.
		_ = unix.Munmap(r.data)
		r.data = nil
	}
}

// minHeadroom is the smallest address range mapped for a growing file.
const minHeadroom = 1 << 20

// OpenMapping maps f, which the Mapping does not own: the caller closes it
// after Close. With headroom the mapping reserves address space for growth.
func OpenMapping(f *os.File, headroom bool) (*Mapping, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m := &Mapping{file: f, path: f.Name(), headroom: headroom}
	if err := m.Resize(st.Size()); err != nil {
		return nil, err
	}
	return m, nil
}

// Size is the file size the mapping serves.
func (m *Mapping) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.size
}

// Resize makes [0, size) readable, remapping when the current region is
// too small. Shrinking keeps the region (only the served size drops).
func (m *Mapping) Resize(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil && int64(len(m.cur.data)) >= size {
		m.size = size
		return nil
	}
	length := size
	if m.headroom {
		length = max(minHeadroom, size*2)
	}
	r := &region{}
	r.refs.Store(1)
	if length > 0 {
		data, err := unix.Mmap(int(m.file.Fd()), 0, int(roundUpPage(length)), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("%s: mmap %d bytes: %w", m.path, length, err)
		}
		r.data = data
	}
	if m.cur != nil {
		m.cur.unref()
	}
	m.cur = r
	m.size = size
	return nil
}

// A View is a pinned slice of a mapping. Release it exactly once.
type View struct {
	Bytes []byte
	r     *region
}

// Release unpins the view; Bytes must not be used afterwards.
func (v View) Release() {
	if v.r != nil {
		v.r.unref()
	}
}

// View returns the bytes [off, off+n) clipped to the file size.
func (m *Mapping) View(off int64, n int) View {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off >= m.size || n <= 0 {
		return View{}
	}
	end := min(off+int64(n), m.size)
	m.cur.ref()
	return View{Bytes: m.cur.data[off:end:end], r: m.cur}
}

// ReadAt copies from the mapping. A page that vanished under the mapping
// (the file truncated behind our back) is reported as an error instead of
// crashing the process with SIGBUS.
func (m *Mapping) ReadAt(p []byte, off int64) (n int, err error) {
	v := m.View(off, len(p))
	defer v.Release()
	if err := noFault(func() { copy(p, v.Bytes) }); err != nil {
		return 0, fmt.Errorf("%s: %w", m.path, err)
	}
	return len(v.Bytes), nil
}

// Scan calls fn on the mapped bytes [off, off+n) themselves, clipped to
// the file size: no copy, for a parse of a whole big file. fn must not
// keep the slice. A page that vanished under the mapping is reported as
// an error, as ReadAt does, instead of crashing the process.
func (m *Mapping) Scan(off int64, n int, fn func(b []byte)) error {
	v := m.View(off, n)
	defer v.Release()
	if err := noFault(func() { fn(v.Bytes) }); err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	return nil
}

// Sync makes the byte range durable: msync of the pages covering it,
// which on Linux writes back the file's dirty pages in that range however
// they were dirtied.
func (m *Mapping) Sync(off, n int64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if n <= 0 || off >= m.size {
		return nil
	}
	end := min(off+n, m.size)
	start := off &^ (pageSize - 1)
	if err := unix.Msync(m.cur.data[start:roundUpPage(end)], unix.MS_SYNC); err != nil {
		return fmt.Errorf("%s: msync: %w", m.path, err)
	}
	return nil
}

// Close drops the mapping's own reference; views still held keep their
// region mapped until they are released.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		m.cur.unref()
		m.cur = nil
	}
	m.size = 0
	return nil
}

var pageSize = int64(os.Getpagesize())

func roundUpPage(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// errFault is returned when a mapped page cannot be read.
var errFault = fmt.Errorf("mapped page not readable (file truncated or I/O error)")

// noFault runs fn, turning a fault on a mapped page into errFault; a
// panic of fn's own stays a panic.
func noFault(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = errFault
		}
	}()
	fn()
	return nil
}
