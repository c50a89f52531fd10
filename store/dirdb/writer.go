package dirdb

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// A Writer is a handle open for writing on an entry member.
type Writer struct {
	f       *File
	gen     uint64
	counted bool // among the member's writers
	append  bool
}

// NewWriter opens the member for writing; with trunc its new content
// starts empty (O_TRUNC). The writer holds a reference of its own.
func (f *File) NewWriter(ctx context.Context, trunc, appendMode bool) (*Writer, error) {
	if f.e.ds.readOnly {
		return nil, engine.Refuse(f.Rel(), "open", syscall.EROFS, "read-only mount")
	}
	e := f.e
	e.ref()
	e.mu.Lock()
	w := &Writer{f: &File{e: e, m: f.m}, gen: e.m[f.m].gen, append: appendMode}
	e.m[f.m].handles++
	w.countLocked()
	if !trunc {
		e.mu.Unlock()
		return w, nil
	}
	s, err := w.truncateLocked(ctx, 0)
	e.mu.Unlock()
	if err != nil {
		w.Release(ctx)
		return nil, err
	}
	// An eviction error here is another owner's; it stays with it.
	e.markDirty(f.m, s, 0)
	return w, nil
}

// Create creates rel when it is a dirdb member (NAME.pickle, or
// NAME.json in a database): the new file is staged and appears on disk
// at its first publication, so that a Python reader never sees it empty
// or partly written. An existing file is opened (O_EXCL: EEXIST).
// uid/gid (>= 0) become the owner. ok is false when rel is not a member.
func (d *Databases) Create(ctx context.Context, rel string, flags int, mode uint32, uid, gid int) (w *Writer, st engine.Stat, ok bool, err error) {
	f, ok := d.dirdbFile(rel)
	if !ok {
		return nil, st, false, nil
	}
	if d.readOnly {
		f.Release()
		return nil, st, true, engine.Refuse(rel, "create", syscall.EROFS, "read-only mount")
	}
	e := f.e
	e.mu.Lock()
	ms := &e.m[f.m]
	// A version being created by another handle exists already.
	st, lerr := d.back.Lstat(rel)
	exists := lerr == nil || (ms.stage != nil && ms.stage.dirty.Load())
	if exists && flags&syscall.O_EXCL != 0 {
		e.mu.Unlock()
		f.Release()
		return nil, st, true, syscall.EEXIST
	}
	w = &Writer{f: f, gen: ms.gen, append: flags&syscall.O_APPEND != 0}
	ms.handles++
	w.countLocked()
	var s *dirdbStage
	if !exists || flags&syscall.O_TRUNC != 0 {
		if ms.stage == nil {
			s, err = e.ensureStageLocked(ctx, f.m, false, mode)
			if err == nil && !exists && uid >= 0 {
				err = s.s.File().Chown(uid, gid)
			}
		}
		if err == nil {
			s, err = w.truncateLocked(ctx, 0)
		}
	}
	if err == nil && ms.stage != nil {
		st, _ = e.pendingStat(f.m, true)
	}
	e.mu.Unlock()
	if err == nil && s != nil {
		e.markDirty(f.m, s, 0) // an eviction error is another owner's
	}
	if err != nil {
		w.Release(ctx)
		var se *engine.Error
		if !errors.As(err, &se) {
			err = &engine.Error{Path: rel, Op: "create", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
		}
		return nil, st, true, err
	}
	return w, st, true, nil
}

// File is the member the writer writes.
func (w *Writer) File() *File { return w.f }

func (w *Writer) countLocked() {
	if !w.counted {
		w.counted = true
		w.f.e.m[w.f.m].writers++
	}
}

// uncountLocked takes the writer out of the member's writers; it
// reports whether it was the last one.
func (w *Writer) uncountLocked() bool {
	ms := &w.f.e.m[w.f.m]
	if w.counted {
		w.counted = false
		ms.writers--
	}
	return ms.writers == 0
}

// checkLocked refuses an operation on a handle whose file was deleted or
// replaced since it was opened.
func (w *Writer) checkLocked(op string) error {
	if w.gen != w.f.e.m[w.f.m].gen {
		return engine.Refuse(w.f.e.relOf(w.f.m), op, syscall.ESTALE,
			"the file was deleted or replaced since this handle opened it; nothing was changed")
	}
	return nil
}

// WriteAt writes to the member's pending version.
func (w *Writer) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	e, m := w.f.e, w.f.m
	e.mu.Lock()
	f, s, err := w.targetLocked(ctx, "write")
	if err != nil {
		e.mu.Unlock()
		return 0, err
	}
	rel := w.targetRel(s)
	if w.append {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			e.mu.Unlock()
			return 0, &engine.Error{Path: rel, Op: "write", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
		}
		off = st.Size
	}
	n, err := f.WriteAt(p, off)
	var size int64
	if s != nil && n > 0 {
		s.dirty.Store(true)
		s.unsynced += int64(n)
		size = s.unsynced
	}
	e.mu.Unlock()
	if err != nil {
		return n, &engine.Error{Path: rel, Op: "write", Reason: engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
	}
	if s != nil && n > 0 {
		return n, e.markDirty(m, s, size)
	}
	return n, nil
}

// ReadAt reads the member as this handle sees it: its pending version
// (starting one, a copy taken under the lock, if there is none).
func (w *Writer) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	e := w.f.e
	e.mu.Lock()
	defer e.mu.Unlock()
	f, s, err := w.targetLocked(ctx, "read")
	if err != nil {
		return 0, err
	}
	n, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		return n, &engine.Error{Path: w.targetRel(s), Op: "read", Reason: engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
	}
	return n, nil
}

// targetLocked is the file the writer reads and writes: its orphan
// (s nil) when its member was deleted or replaced since it opened it
// (orphan.go), else the member's pending version, started if there is
// none (a copy taken under dirdb's lock).
func (w *Writer) targetLocked(ctx context.Context, op string) (f *os.File, s *dirdbStage, err error) {
	if f := w.orphanOf(); f != nil {
		return f, nil, nil
	}
	if err := w.checkLocked(op); err != nil {
		return nil, nil, err
	}
	if op == "write" {
		w.countLocked() // a writer again, if a close had ended it
	}
	if s, err = w.f.e.ensureStageLocked(ctx, w.f.m, true, 0o644); err != nil {
		return nil, nil, err
	}
	return s.s.File(), s, nil
}

// targetRel names the target in messages.
func (w *Writer) targetRel(s *dirdbStage) string {
	rel := w.f.e.relOf(w.f.m)
	if s == nil {
		rel += " (deleted)"
	}
	return rel
}

// Truncate sets the size of the member's pending version.
func (w *Writer) Truncate(ctx context.Context, size int64) error {
	e := w.f.e
	e.mu.Lock()
	if f := w.orphanOf(); f != nil {
		defer e.mu.Unlock()
		if err := f.Truncate(size); err != nil {
			return &engine.Error{Path: w.targetRel(nil), Op: "truncate", Reason: engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
		}
		return nil
	}
	if err := w.checkLocked("truncate"); err != nil {
		e.mu.Unlock()
		return err
	}
	w.countLocked()
	s, err := w.truncateLocked(ctx, size)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.markDirty(w.f.m, s, 0)
}

func (w *Writer) truncateLocked(ctx context.Context, size int64) (*dirdbStage, error) {
	e, m := w.f.e, w.f.m
	s, err := e.ensureStageLocked(ctx, m, size > 0, 0o644)
	if err != nil {
		return nil, err
	}
	if err := s.s.File().Truncate(size); err != nil {
		return nil, &engine.Error{Path: e.relOf(m), Op: "truncate", Reason: engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
	}
	s.dirty.Store(true)
	return s, nil
}

// Stat returns the attributes of the member as this handle sees it.
func (w *Writer) Stat() (syscall.Stat_t, error) {
	e, m := w.f.e, w.f.m
	e.mu.Lock()
	f := w.orphanOf() // not closed while w is not released
	e.mu.Unlock()
	if f != nil {
		st, err := engine.FstatFile(f)
		return st.Stat_t, err
	}
	if st, ok := e.pendingStat(m, true); ok {
		return st.Stat_t, nil
	}
	st, err := e.ds.back.Lstat(e.String() + memberExt[m])
	return st.Stat_t, err
}

// Flush is close(2) of a descriptor: the close of the last writer
// publishes the pending version. It returns the publication's error
// (EINVAL for a .json that is not JSON, EBUSY when dirdb's lock stays
// held by another process) and any write-back error of the entry not
// reported before.
func (w *Writer) Flush(ctx context.Context) (published bool, err error) {
	e := w.f.e
	e.mu.Lock()
	last := w.uncountLocked()
	if last && w.checkLocked("close") == nil {
		published = e.m[w.f.m].stage != nil && e.m[w.f.m].stage.dirty.Load()
		err = e.commitLocked(ctx, w.f.m)
	}
	return w.afterPublish(published, err)
}

// afterPublish, with e.mu held (and released here), hands a version
// whose publication failed back to the pool, or reports the entry's
// write-back errors not reported before.
func (w *Writer) afterPublish(published bool, err error) (bool, error) {
	e := w.f.e
	var retry *dirdbStage
	var size int64
	if err != nil {
		retry, size = e.stillPendingLocked(w.f.m)
	}
	e.mu.Unlock()
	if err != nil {
		if retry != nil {
			e.markDirty(w.f.m, retry, size)
		}
		return false, err
	}
	return published, e.ds.pool.Flush(e)
}

// Sync is fsync: it publishes the pending version even while the handle
// stays open (the caller asked for it to be durable).
func (w *Writer) Sync(ctx context.Context) (published bool, err error) {
	e := w.f.e
	e.mu.Lock()
	if w.orphanOf() != nil {
		e.mu.Unlock()
		return false, nil // nothing of a deleted file is to be kept
	}
	rel := e.relOf(w.f.m)
	if err = w.checkLocked("fsync"); err == nil {
		published = e.m[w.f.m].stage != nil && e.m[w.f.m].stage.dirty.Load()
		err = e.commitLocked(ctx, w.f.m)
	}
	if published, err = w.afterPublish(published, err); err != nil {
		return published, err
	}
	// This version's rename, and those published at earlier closes.
	return published, e.ds.SyncPublished(rel)
}

// Release is the last close of the handle. What a close did not publish
// (writes through a shared mapping after it) is published here.
func (w *Writer) Release(ctx context.Context) error {
	e := w.f.e
	e.mu.Lock()
	var err error
	if w.uncountLocked() && w.checkLocked("close") == nil {
		err = e.commitLocked(ctx, w.f.m)
	}
	w.releaseHandleLocked()
	_, err = w.afterPublish(false, err)
	w.f.Release()
	return err
}

// SetattrStaged applies fn (chmod, chown, utimes) to the member's pending
// version when there is one, which becomes the file when published; ok
// is false when there is none and the backing file is to be changed.
func (f *File) SetattrStaged(fn func(*os.File) error) (ok bool, err error) {
	e := f.e
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[f.m].stage
	if s == nil || !s.dirty.Load() {
		return false, nil
	}
	return true, fn(s.s.File())
}
