package dirdb

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Snapshot policy. Variables so that tests can shrink them.
var (
	// snapMemMax: an entry file up to this size is copied to memory;
	// a larger one to a private file, so memory stays bounded whatever
	// the size of the pickles.
	snapMemMax int64 = 1 << 20
	// snapMemBudget bounds the memory of all snapshots, in use or idle;
	// past it small files also go to private files.
	snapMemBudget int64 = 64 << 20
	// snapIdleDisk bounds the disk held by idle private files (the most
	// recently used one is kept even when it alone is larger).
	snapIdleDisk int64 = 1 << 30
	// snapIdleFor is how long an unused snapshot is kept for the next open.
	snapIdleFor = time.Minute
	// racyWindow: a file whose mtime or ctime is this recent may change
	// again without its timestamps changing (coarse clock ticks, or
	// seconds on some file systems), so a snapshot of it is not reused.
	racyWindow = 2 * time.Second
)

// racy reports whether the version's timestamps are too close to now to
// tell it from a later change made in the same clock tick.
func racy(s engine.FileSig, now time.Time) bool {
	t := max(s.Mtime, s.Ctime)
	return now.UnixNano()-t < int64(racyWindow)
}

// A Snapshot is one consistent version of an entry's file, copied while
// holding dirdb's lock (or from arrayfs's own staged version). Nobody
// writes it afterwards, so reads of it can never be torn, however the
// entry changes meanwhile. Small ones live in memory, larger ones in a
// private unlinked file (a reflink clone where the file system can).
//
// Reusable snapshots are kept, keyed by the file's path and signature,
// so that opening an unchanged entry again copies nothing.
type Snapshot struct {
	c    *snapCache
	key  string // the file's dataset-relative path; "" if not reusable
	st   syscall.Stat_t
	sig  engine.FileSig
	size int64
	data []byte
	file *os.File
	m    *engine.Mapping

	// guarded by c.mu
	refs  int
	idle  *list.Element
	timer *time.Timer
	stale bool // no longer the newest version of key
	freed bool
}

// Size is the snapshot's size.
func (s *Snapshot) Size() int64 { return s.size }

// Stat is the file's attributes when the snapshot was taken (its size
// is the snapshot's).
func (s *Snapshot) Stat() syscall.Stat_t { return s.st }

// View returns the bytes [off, off+n), pinned; release the View.
func (s *Snapshot) View(off int64, n int) engine.View {
	if s.m != nil {
		return s.m.View(off, n)
	}
	if off < 0 || off >= s.size || n <= 0 {
		return engine.View{}
	}
	end := min(off+int64(n), s.size)
	return engine.View{Bytes: s.data[off:end:end]}
}

// ReadAt copies bytes of the snapshot.
func (s *Snapshot) ReadAt(p []byte, off int64) (int, error) {
	v := s.View(off, len(p))
	defer v.Release()
	n := copy(p, v.Bytes)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Release drops the reference an open took.
func (s *Snapshot) Release() { s.c.release(s) }

// snapCache keeps the newest reusable snapshot of each file, and idle
// ones for a while within budgets. The zero value is ready.
type snapCache struct {
	mu       sync.Mutex
	latest   map[string]*Snapshot
	idle     list.List // of *Snapshot, most recently released at the front
	memBytes int64     // memory of all snapshots alive
	idleDisk int64     // disk of idle file snapshots
	closed   bool
}

// lookup returns the newest snapshot of key, referenced, if it is of the
// version sig.
func (c *snapCache) lookup(key string, sig engine.FileSig) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.latest[key]
	if s == nil || s.sig != sig {
		return nil
	}
	c.refLocked(s)
	return s
}

func (c *snapCache) refLocked(s *Snapshot) {
	s.refs++
	if s.idle != nil {
		c.idle.Remove(s.idle)
		s.idle = nil
		if s.file != nil {
			c.idleDisk -= s.size
		}
		s.timer.Stop()
	}
}

// add makes s (referenced once) the newest snapshot of its key.
func (c *snapCache) add(s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs = 1
	if s.key == "" || c.closed {
		return
	}
	c.forgetLocked(s.key)
	if c.latest == nil {
		c.latest = map[string]*Snapshot{}
	}
	c.latest[s.key] = s
}

// forget stops reusing the snapshot of key: the file changed through the
// mount, or went away.
func (c *snapCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(key)
}

func (c *snapCache) forgetLocked(key string) {
	if old := c.latest[key]; old != nil {
		c.dropLocked(old)
	}
}

// dropLocked stops reusing s; it is freed now or at its last release.
func (c *snapCache) dropLocked(s *Snapshot) {
	if c.latest[s.key] == s {
		delete(c.latest, s.key)
	}
	s.stale = true
	if s.refs == 0 {
		c.freeLocked(s)
	}
}

func (c *snapCache) release(s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	if s.stale || s.key == "" || c.closed {
		c.freeLocked(s)
		return
	}
	s.idle = c.idle.PushFront(s)
	if s.file != nil {
		c.idleDisk += s.size
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(snapIdleFor, func() { c.expire(s) })
	} else {
		s.timer.Reset(snapIdleFor)
	}
	// Over budget: drop the least recently used idle file snapshots,
	// keeping the one just released.
	for el := c.idle.Back(); el != nil && c.idleDisk > snapIdleDisk; {
		prev := el.Prev()
		if old := el.Value.(*Snapshot); old != s && old.file != nil {
			c.dropLocked(old)
		}
		el = prev
	}
}

func (c *snapCache) expire(s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.refs == 0 && s.idle != nil {
		c.dropLocked(s)
	}
}

// freeLocked frees an unreferenced snapshot.
func (c *snapCache) freeLocked(s *Snapshot) {
	if s.freed {
		return
	}
	s.freed = true
	if c.latest[s.key] == s {
		delete(c.latest, s.key)
	}
	if s.idle != nil {
		c.idle.Remove(s.idle)
		s.idle = nil
		if s.file != nil {
			c.idleDisk -= s.size
		}
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.data != nil {
		c.memBytes -= s.size
		s.data = nil
	}
	if s.m != nil {
		s.m.Close() // views still held keep their region mapped
		s.file.Close()
	}
}

// reserveMem accounts size bytes of memory for a new snapshot, freeing
// idle memory snapshots if that makes room; false if it does not fit.
func (c *snapCache) reserveMem(size int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.memBytes+size > snapMemBudget {
		var victim *Snapshot
		for el := c.idle.Back(); el != nil; el = el.Prev() {
			if s := el.Value.(*Snapshot); s.data != nil {
				victim = s
				break
			}
		}
		if victim == nil {
			return false
		}
		c.dropLocked(victim)
	}
	c.memBytes += size
	return true
}

func (c *snapCache) unreserveMem(size int64) {
	c.mu.Lock()
	c.memBytes -= size
	c.mu.Unlock()
}

// close frees every idle snapshot and stops keeping new ones; snapshots
// still open are freed when released.
func (c *snapCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for key := range c.latest {
		c.forgetLocked(key)
	}
}

// takeSnapshot copies the first st.Size bytes of src, which nobody may
// change meanwhile (the caller holds the lock, or the stage's mutex),
// into a new Snapshot. key is the file's path when the snapshot may be
// reused, "" otherwise. dirRel is where a private file goes: the entry's
// directory, so that FICLONE can share the blocks.
func (d *Databases) takeSnapshot(src *os.File, st syscall.Stat_t, key, dirRel string) (*Snapshot, error) {
	dd := d
	s := &Snapshot{c: &dd.snaps, key: key, st: st, sig: engine.SigOf(&st), size: st.Size}
	if st.Size <= snapMemMax && dd.snaps.reserveMem(st.Size) {
		buf := make([]byte, st.Size)
		n, err := src.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			dd.snaps.unreserveMem(st.Size)
			return nil, err
		}
		// A file shorter than its size under the lock was changed by
		// a writer that does not take the lock; serve what was read.
		if int64(n) < st.Size {
			dd.snaps.unreserveMem(st.Size - int64(n))
		}
		s.data, s.size = buf[:n], int64(n)
		s.st.Size = s.size
		dd.stats.snapMem.Add(1)
		dd.stats.bytesCopied.Add(int64(n))
		dd.snaps.add(s)
		return s, nil
	}
	f, err := privateFile(d.back, dirRel)
	if err != nil {
		return nil, err
	}
	cloned := st.Size > 0 && unix.IoctlFileClone(int(f.Fd()), int(src.Fd())) == nil
	if cloned {
		// A clone is the whole file; the lock holds it at st.Size.
		if err := f.Truncate(st.Size); err != nil {
			f.Close()
			return nil, err
		}
	} else {
		// copy_file_range from src's offset: rewind it (a stage's
		// offset is not used otherwise: its reads and writes are at
		// explicit offsets).
		var n int64
		_, err := src.Seek(0, io.SeekStart)
		if err == nil {
			n, err = io.Copy(f, io.LimitReader(src, st.Size))
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		s.size = n
		s.st.Size = n
		dd.stats.bytesCopied.Add(n)
	}
	m, err := engine.OpenMapping(f, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.file, s.m = f, m
	dd.stats.snapFile.Add(1)
	if cloned {
		dd.stats.snapCloned.Add(1)
	}
	dd.snaps.add(s)
	return s, nil
}

// privateFile makes an unnamed file in directory dirRel (O_TMPFILE), so
// that nothing is left behind by a crash; where the file system cannot,
// a named one removed at once, and as a last resort one in the system's
// temp dir.
func privateFile(back *engine.Backing, dirRel string) (*os.File, error) {
	fd, err := back.Openat2(dirRel, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dirRel, "(snapshot)")), nil
	}
	err = back.At(filepath.Join(dirRel, "x"), func(dirfd int, _ string) error {
		sfd, name, err := engine.CreateStageFile(dirfd, "snapshot", 0o600)
		if err == nil {
			unix.Unlinkat(dirfd, name, 0)
			fd = sfd
		}
		return err
	})
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dirRel, "(snapshot)")), nil
	}
	if f, terr := os.CreateTemp("", "arrayfs-snapshot."); terr == nil {
		os.Remove(f.Name())
		return f, nil
	}
	return nil, fmt.Errorf("%s: no room for a private snapshot: %w", dirRel, err)
}

// Snapshot returns a consistent version of the file for an open that
// reads it: arrayfs's own pending version when it is complete (closed by
// its writers, not yet published), else the backing file copied under
// dirdb's lock. A version still being written is nobody's to read: its
// readers get the file as it was (a file being created is empty until
// its first publication). The lock is held only for the copy; an
// unchanged file already snapshotted is not copied again.
func (f *File) Snapshot(ctx context.Context) (*Snapshot, error) {
	e, d := f.e, f.e.ds
	// The common case without the entry's mutex, which is held while
	// something waits for dirdb's lock: an unchanged entry.
	if _, pending := e.pendingStat(f.m, false); !pending {
		rel := e.String() + memberExt[f.m]
		if st, err := d.back.Lstat(rel); err == nil {
			if s := d.snaps.lookup(rel, engine.SigOf(&st.Stat_t)); s != nil {
				d.stats.snapReused.Add(1)
				return s, nil
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rel := e.relOf(f.m)
	ms := &e.m[f.m]
	if s := ms.stage; s != nil && s.dirty.Load() {
		if ms.writers == 0 {
			// Our own newer version, complete: the entry's mutex keeps
			// our writers out during the copy, and no other process
			// knows the stage.
			var st syscall.Stat_t
			if err := syscall.Fstat(int(s.s.File().Fd()), &st); err != nil {
				return nil, &engine.Error{Path: rel, Op: "open", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
			}
			snap, err := d.takeSnapshot(s.s.File(), st, "", e.dirRel())
			if err != nil {
				return nil, &engine.Error{Path: rel, Op: "open", Reason: "snapshot of the staged version: " + err.Error(), Errno: engine.ErrnoOf(err)}
			}
			return snap, nil
		}
		if !d.back.Exists(rel) {
			// Being created: nothing is published yet.
			st, _ := e.pendingStat(f.m, false)
			st.Size, st.Blocks = 0, 0
			return &Snapshot{c: &d.snaps, st: st.Stat_t, refs: 1}, nil
		}
	}
	bst, err := d.back.Lstat(rel)
	if err != nil {
		return nil, &engine.Error{Path: rel, Op: "open", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	// Without the lock: a version whose signature matches a reusable
	// snapshot is that snapshot's (see racyWindow); a writer in the
	// middle of a rewrite has changed the signature already.
	if s := d.snaps.lookup(rel, engine.SigOf(&bst.Stat_t)); s != nil {
		d.stats.snapReused.Add(1)
		return s, nil
	}
	lock, err := d.lockEntry(ctx, e.rel, "open")
	if err != nil {
		return nil, err
	}
	defer lock.release()
	src, err := d.back.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &engine.Error{Path: rel, Op: "open", Reason: engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
	}
	defer src.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(src.Fd()), &st); err != nil {
		return nil, &engine.Error{Path: rel, Op: "open", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, engine.Refuse(rel, "open", syscall.EINVAL, "not a regular file")
	}
	sig := engine.SigOf(&st)
	if s := d.snaps.lookup(rel, sig); s != nil {
		d.stats.snapReused.Add(1)
		return s, nil
	}
	key := rel
	if racy(sig, time.Now()) {
		key = ""
	}
	snap, err := d.takeSnapshot(src, st, key, e.dirRel())
	if err != nil {
		return nil, &engine.Error{Path: rel, Op: "open", Reason: "snapshot: " + err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return snap, nil
}
