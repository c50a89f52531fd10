package store

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// A DirdbEntry is one entry (NAME.pickle + NAME.json) of a database, as
// long as something holds it. It is the pool Owner of the entry's staged
// versions.
//
// Writing never touches the backing files in place: the first write
// after open (or an O_TRUNC open, or a create) starts a Stage beside the
// file (empty, or a copy taken under dirdb's lock for writes at
// offsets), all writes of all handles go to it, and it is published by
// rename(2) over the file while holding the lock. So a Python reader (who
// takes the lock) and a crash both see the old version or the new one.
//
// When a staged version is published:
//   - at the close of the last handle writing it (FLUSH, which close(2)
//     waits for, so the next reader sees it), and at fsync;
//   - by the pool (timer, eviction, unmount) only once no handle has it
//     open for writing: publishing a version still being written would
//     show a prefix of it, a torn entry. The pool still holds such a
//     version's units, so its dirty bytes are counted, and unmount
//     writes it back after the kernel has closed every handle.
//
// After a publication a later write on a still-open handle starts a new
// stage from the published content.
type DirdbEntry struct {
	ds *Dataset

	// refs and stages (the number of members with a stage) are guarded
	// by ds.dirdb.mu; rel by both mu and ds.dirdb.mu.
	refs   int
	stages int
	rel    string // dataset-relative path without extension: "db/set-001"
	name   atomic.Pointer[string]

	mu sync.Mutex
	m  [numMembers]memberState
}

// memberState is one member's pending version and its writers.
type memberState struct {
	stage *dirdbStage
	// writers counts handles that have written or opened for writing
	// and not been closed since.
	writers int
	// gen changes when the member's file is deleted or replaced
	// through the namespace: handles opened before write nowhere.
	gen uint64
}

// dirdbStage is a pending version of a member: a pool unit's Value.
type dirdbStage struct {
	s *Stage
	// dirty: changed since it was started; a clean stage (started for
	// the reads of a read-write handle) is never published.
	dirty bool
	// unsynced is what the stage holds that the pool has not seen
	// written back: the pool unit's size.
	unsynced int64
}

func (e *DirdbEntry) String() string {
	if n := e.name.Load(); n != nil {
		return *n
	}
	return e.rel
}

// relOf is the path of a member; e.mu or ds.dirdb.mu held.
func (e *DirdbEntry) relOf(m member) string { return e.rel + memberExt[m] }

// dir is the backing directory of the entry; e.mu held.
func (e *DirdbEntry) dir() string { return e.ds.Path(filepath.Dir(e.rel)) }

// setRel renames the entry; e.mu and ds.dirdb.mu held.
func (e *DirdbEntry) setRel(rel string) {
	e.rel = rel
	e.name.Store(&rel)
}

func (e *DirdbEntry) holdStage(delta int) {
	dd := &e.ds.dirdb
	dd.mu.Lock()
	e.stages += delta
	e.maybeDropLocked()
	dd.mu.Unlock()
}

// ensureStageLocked returns the member's stage, starting one if there is
// none: a copy of the current content taken under dirdb's lock with
// keep, else empty. perm is the mode of a file that does not exist yet.
func (e *DirdbEntry) ensureStageLocked(ctx context.Context, m member, keep bool, perm uint32) (*dirdbStage, error) {
	ms := &e.m[m]
	if ms.stage != nil {
		return ms.stage, nil
	}
	rel := e.relOf(m)
	target := e.ds.Path(rel)
	var st *Stage
	var err error
	if keep {
		var lock *entryLock
		lock, err = e.ds.lockEntry(ctx, e.rel, "write")
		if err != nil {
			return nil, err
		}
		st, err = NewStage(target, true, fsPerm(perm))
		lock.release()
	} else {
		st, err = NewStage(target, false, fsPerm(perm))
	}
	if err != nil {
		return nil, &Error{Path: rel, Op: "write", Reason: err.Error(), Errno: ErrnoOf(err)}
	}
	ms.stage = &dirdbStage{s: st}
	e.holdStage(1)
	return ms.stage, nil
}

// dropStageLocked throws the member's stage away.
func (e *DirdbEntry) dropStageLocked(m member) {
	if s := e.m[m].stage; s != nil {
		s.s.Abort()
		e.m[m].stage = nil
		e.holdStage(-1)
	}
}

// commitLocked publishes the member's stage if it holds a change: a
// NAME.json must be valid JSON (else EINVAL, the stage is dropped and
// the old file stays). The data is made durable before the lock is
// taken, so that Python processes wait only for the rename and the fsync
// of the directory. A stage without changes is dropped once nobody
// writes it. When the lock cannot be taken the stage stays, for a retry.
func (e *DirdbEntry) commitLocked(ctx context.Context, m member) error {
	ms := &e.m[m]
	s := ms.stage
	if s == nil {
		return nil
	}
	if !s.dirty {
		if ms.writers == 0 {
			e.dropStageLocked(m)
		}
		return nil
	}
	d := e.ds
	rel := e.relOf(m)
	if m == memberMeta {
		if err := validateJSON(io.NewSectionReader(s.s.File(), 0, 1<<62)); err != nil {
			e.dropStageLocked(m)
			d.dirdb.stats.refused.Add(1)
			return refuse(rel, "write", syscall.EINVAL,
				"refused: not valid JSON (%v); the old content is kept", err)
		}
	}
	if err := s.s.File().Sync(); err != nil {
		e.dropStageLocked(m)
		return &Error{Path: rel, Op: "write-back", Reason: "fsync of the staged version: " + err.Error() + "; the old content is kept", Errno: ErrnoOf(err)}
	}
	lock, err := d.lockEntry(ctx, e.rel, "write-back")
	if err != nil {
		return err
	}
	err = s.s.Commit()
	lock.release()
	ms.stage = nil
	e.holdStage(-1)
	d.dirdb.snaps.forget(rel)
	if err != nil {
		return &Error{Path: rel, Op: "write-back", Reason: err.Error(), Errno: ErrnoOf(err)}
	}
	d.dirdb.stats.commits.Add(1)
	return nil
}

// commitAllLocked publishes both members' pending versions (before a
// rename moves the files).
func (e *DirdbEntry) commitAllLocked(ctx context.Context) error {
	for m := member(0); m < numMembers; m++ {
		if err := e.commitLocked(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// detachLocked makes the member's open handles write nowhere and drops
// its pending version: its file was deleted or replaced.
func (e *DirdbEntry) detachLocked(m member) {
	e.dropStageLocked(m)
	e.m[m].gen++
	e.ds.dirdb.snaps.forget(e.relOf(m))
}

func memberOfKey(key string) member {
	if key == DirdbMeta {
		return memberMeta
	}
	return memberData
}

// WriteBack publishes the given staged versions, except those still open
// for writing (see DirdbEntry). Units of versions published or dropped
// since they were marked are done already.
func (e *DirdbEntry) WriteBack(units []*Unit) error {
	var first error
	for _, u := range units {
		s, _ := u.Value.(*dirdbStage)
		m := memberOfKey(u.Key)
		e.mu.Lock()
		var err error
		ms := &e.m[m]
		switch {
		case s == nil || ms.stage != s:
		case ms.writers > 0:
			// Its bytes are in the stage file already; the close of
			// its last writer publishes it.
			s.unsynced = 0
		default:
			err = e.commitLocked(context.Background(), m)
		}
		e.mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// markDirty hands the stage's change to the pool.
func (e *DirdbEntry) markDirty(m member, s *dirdbStage, size int64) error {
	u := &Unit{Owner: e, Key: memberExt[m], Size: size, Value: s}
	if err := e.ds.pool.MarkDirty(u); err != nil {
		// The change is staged; the pool failed to write back
		// something else. Report it now rather than at some fsync.
		return &Error{Path: e.String(), Op: "write", Reason: err.Error(), Errno: syscall.EIO}
	}
	return nil
}

// A DirdbWriter is a handle open for writing on an entry member.
type DirdbWriter struct {
	f       *DirdbFile
	gen     uint64
	counted bool // among the member's writers
	append  bool
}

// NewWriter opens the member for writing; with trunc its new content
// starts empty (O_TRUNC). The writer holds a reference of its own.
func (f *DirdbFile) NewWriter(ctx context.Context, trunc, appendMode bool) (*DirdbWriter, error) {
	if f.e.ds.cfg.ReadOnly {
		return nil, refuse(f.Rel(), "open", syscall.EROFS, "read-only mount")
	}
	e := f.e
	e.ref()
	e.mu.Lock()
	w := &DirdbWriter{f: &DirdbFile{e: e, m: f.m}, gen: e.m[f.m].gen, append: appendMode}
	w.countLocked()
	if !trunc {
		e.mu.Unlock()
		return w, nil
	}
	s, err := w.truncateLocked(ctx, 0)
	e.mu.Unlock()
	if err == nil {
		err = e.markDirty(f.m, s, 0)
	}
	if err != nil {
		w.Release(ctx)
		return nil, err
	}
	return w, nil
}

// DirdbCreate creates rel when it is a dirdb member (NAME.pickle, or
// NAME.json in a database): the new file is staged and appears on disk
// at its first publication, so that a Python reader never sees it empty
// or partly written. An existing file is opened (O_EXCL: EEXIST).
// uid/gid (>= 0) become the owner. ok is false when rel is not a member.
func (d *Dataset) DirdbCreate(ctx context.Context, rel string, flags int, mode uint32, uid, gid int) (w *DirdbWriter, st syscall.Stat_t, ok bool, err error) {
	f, ok := d.dirdbFile(rel)
	if !ok {
		return nil, st, false, nil
	}
	if d.cfg.ReadOnly {
		f.Release()
		return nil, st, true, refuse(rel, "create", syscall.EROFS, "read-only mount")
	}
	e := f.e
	e.mu.Lock()
	ms := &e.m[f.m]
	exists := syscall.Lstat(d.Path(rel), &st) == nil
	pending := ms.stage != nil && ms.stage.dirty
	if (exists || pending) && flags&syscall.O_EXCL != 0 {
		e.mu.Unlock()
		f.Release()
		return nil, st, true, syscall.EEXIST
	}
	w = &DirdbWriter{f: f, gen: ms.gen, append: flags&syscall.O_APPEND != 0}
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
		err = syscall.Fstat(int(ms.stage.s.File().Fd()), &st)
	}
	e.mu.Unlock()
	if err == nil && s != nil {
		err = e.markDirty(f.m, s, 0)
	}
	if err != nil {
		w.Release(ctx)
		var se *Error
		if !errors.As(err, &se) {
			err = &Error{Path: rel, Op: "create", Reason: err.Error(), Errno: ErrnoOf(err)}
		}
		return nil, st, true, err
	}
	return w, st, true, nil
}

// File is the member the writer writes.
func (w *DirdbWriter) File() *DirdbFile { return w.f }

func (w *DirdbWriter) countLocked() {
	if !w.counted {
		w.counted = true
		w.f.e.m[w.f.m].writers++
	}
}

// uncountLocked takes the writer out of the member's writers; it
// reports whether it was the last one.
func (w *DirdbWriter) uncountLocked() bool {
	ms := &w.f.e.m[w.f.m]
	if w.counted {
		w.counted = false
		ms.writers--
	}
	return ms.writers == 0
}

// checkLocked refuses an operation on a handle whose file was deleted or
// replaced since it was opened.
func (w *DirdbWriter) checkLocked(op string) error {
	if w.gen != w.f.e.m[w.f.m].gen {
		return refuse(w.f.e.relOf(w.f.m), op, syscall.ESTALE,
			"the file was deleted or replaced since this handle opened it; nothing was changed")
	}
	return nil
}

// WriteAt writes to the member's pending version.
func (w *DirdbWriter) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	e, m := w.f.e, w.f.m
	e.mu.Lock()
	if err := w.checkLocked("write"); err != nil {
		e.mu.Unlock()
		return 0, err
	}
	w.countLocked()
	s, err := e.ensureStageLocked(ctx, m, true, 0o644)
	if err != nil {
		e.mu.Unlock()
		return 0, err
	}
	f := s.s.File()
	if w.append {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			e.mu.Unlock()
			return 0, &Error{Path: e.relOf(m), Op: "write", Reason: err.Error(), Errno: ErrnoOf(err)}
		}
		off = st.Size
	}
	n, err := f.WriteAt(p, off)
	if n > 0 {
		s.dirty = true
		s.unsynced += int64(n)
	}
	size := s.unsynced
	rel := e.relOf(m)
	e.mu.Unlock()
	if err != nil {
		return n, &Error{Path: rel, Op: "write", Reason: unwrapPath(err).Error(), Errno: ErrnoOf(err)}
	}
	if n > 0 {
		return n, e.markDirty(m, s, size)
	}
	return n, nil
}

// ReadAt reads the member as this handle sees it: its pending version
// (starting one, a copy taken under the lock, if there is none).
func (w *DirdbWriter) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	e, m := w.f.e, w.f.m
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := w.checkLocked("read"); err != nil {
		return 0, err
	}
	s, err := e.ensureStageLocked(ctx, m, true, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := s.s.File().ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		return n, &Error{Path: e.relOf(m), Op: "read", Reason: unwrapPath(err).Error(), Errno: ErrnoOf(err)}
	}
	return n, nil
}

// Truncate sets the size of the member's pending version.
func (w *DirdbWriter) Truncate(ctx context.Context, size int64) error {
	e := w.f.e
	e.mu.Lock()
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

func (w *DirdbWriter) truncateLocked(ctx context.Context, size int64) (*dirdbStage, error) {
	e, m := w.f.e, w.f.m
	s, err := e.ensureStageLocked(ctx, m, size > 0, 0o644)
	if err != nil {
		return nil, err
	}
	if err := s.s.File().Truncate(size); err != nil {
		return nil, &Error{Path: e.relOf(m), Op: "truncate", Reason: unwrapPath(err).Error(), Errno: ErrnoOf(err)}
	}
	s.dirty = true
	return s, nil
}

// Stat returns the attributes of the member as this handle sees it.
func (w *DirdbWriter) Stat() (syscall.Stat_t, error) {
	e, m := w.f.e, w.f.m
	e.mu.Lock()
	defer e.mu.Unlock()
	var st syscall.Stat_t
	if s := e.m[m].stage; s != nil {
		return st, syscall.Fstat(int(s.s.File().Fd()), &st)
	}
	return st, syscall.Stat(e.ds.Path(e.relOf(m)), &st)
}

// Flush is close(2) of a descriptor: the close of the last writer
// publishes the pending version. It returns the publication's error
// (EINVAL for a .json that is not JSON, EBUSY when dirdb's lock stays
// held by another process) and any write-back error of the entry not
// reported before.
func (w *DirdbWriter) Flush(ctx context.Context) (published bool, err error) {
	e := w.f.e
	e.mu.Lock()
	last := w.uncountLocked()
	if last && w.checkLocked("close") == nil {
		published = e.m[w.f.m].stage != nil && e.m[w.f.m].stage.dirty
		err = e.commitLocked(ctx, w.f.m)
	}
	e.mu.Unlock()
	if err != nil {
		return false, err
	}
	return published, e.ds.pool.Flush(e)
}

// Sync is fsync: it publishes the pending version even while the handle
// stays open (the caller asked for it to be durable).
func (w *DirdbWriter) Sync(ctx context.Context) (published bool, err error) {
	e := w.f.e
	e.mu.Lock()
	if err = w.checkLocked("fsync"); err == nil {
		published = e.m[w.f.m].stage != nil && e.m[w.f.m].stage.dirty
		err = e.commitLocked(ctx, w.f.m)
	}
	e.mu.Unlock()
	if err != nil {
		return false, err
	}
	return published, e.ds.pool.Flush(e)
}

// Release is the last close of the handle. What a close did not publish
// (writes through a shared mapping after it) is published here.
func (w *DirdbWriter) Release(ctx context.Context) error {
	e := w.f.e
	e.mu.Lock()
	var err error
	if w.uncountLocked() && w.checkLocked("close") == nil {
		err = e.commitLocked(ctx, w.f.m)
	}
	e.mu.Unlock()
	w.f.Release()
	return err
}

// SetattrStaged applies fn (chmod, chown, utimes) to the member's pending
// version when there is one, which becomes the file when published; ok
// is false when there is none and the backing file is to be changed.
func (f *DirdbFile) SetattrStaged(fn func(*os.File) error) (ok bool, err error) {
	e := f.e
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[f.m].stage
	if s == nil || !s.dirty {
		return false, nil
	}
	return true, fn(s.s.File())
}

// dirdbClose publishes every pending version (unmount: the kernel has
// closed every handle) and frees the snapshots.
func (d *Dataset) dirdbClose() error {
	dd := &d.dirdb
	dd.mu.Lock()
	es := make([]*DirdbEntry, 0, len(dd.entries))
	for _, e := range dd.entries {
		es = append(es, e)
	}
	dd.mu.Unlock()
	var first error
	for _, e := range es {
		e.mu.Lock()
		for m := member(0); m < numMembers; m++ {
			e.m[m].writers = 0
			if err := e.commitLocked(context.Background(), m); err != nil {
				d.rep.logf("%v", err)
				if first == nil {
					first = err
				}
			}
		}
		e.mu.Unlock()
	}
	dd.snaps.close()
	return first
}

// fsPerm turns a create mode into a file mode.
func fsPerm(mode uint32) os.FileMode {
	p := os.FileMode(mode & 0o777)
	if mode&syscall.S_ISUID != 0 {
		p |= os.ModeSetuid
	}
	if mode&syscall.S_ISGID != 0 {
		p |= os.ModeSetgid
	}
	if mode&syscall.S_ISVTX != 0 {
		p |= os.ModeSticky
	}
	return p
}
