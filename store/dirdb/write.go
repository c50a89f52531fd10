package dirdb

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// A Entry is one entry (NAME.pickle + NAME.json) of a database, as
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
type Entry struct {
	ds *Databases

	// refs and stages (the number of members with a stage) are guarded
	// by ds.mu; rel by both mu and ds.mu.
	refs   int
	stages int
	rel    string // dataset-relative path without extension: "db/set-001"
	name   atomic.Pointer[string]

	mu sync.Mutex
	m  [numMembers]memberState
}

// memberState is one member's pending version and its writers.
type memberState struct {
	// stage is the pending version; pub mirrors it for readers of
	// attributes, which must not wait for mu (held while waiting for
	// dirdb's lock).
	stage *dirdbStage
	pub   atomic.Pointer[dirdbStage]
	// writers counts handles that have written or opened for writing
	// and not been closed since.
	writers int
	// gen changes when the member's file is deleted or replaced
	// through the namespace: handles opened before write nowhere, or
	// to their orphan (orphan.go).
	gen uint64
	// handles counts the writers of this gen not yet released; orphans
	// are the versions kept for those of earlier gens, by gen.
	handles int
	orphans map[uint64]*orphan
}

// dirdbStage is a pending version of a member: a pool unit's Value.
type dirdbStage struct {
	s *engine.Stage
	// dirty: changed since it was started; a clean stage (started for
	// the reads of a read-write handle) is never published.
	dirty atomic.Bool
	// unsynced is what the stage holds that the pool has not seen
	// written back: the pool unit's size.
	unsynced int64
}

// String is the entry's path without extension; it takes no lock.
func (e *Entry) String() string { return *e.name.Load() }

// relOf is the path of a member; e.mu or ds.mu held.
func (e *Entry) relOf(m member) string { return e.rel + memberExt[m] }

// dirRel is the directory of the entry; e.mu held.
func (e *Entry) dirRel() string { return filepath.Dir(e.rel) }

// setRel renames the entry; e.mu and ds.mu held.
func (e *Entry) setRel(rel string) {
	e.rel = rel
	e.name.Store(&rel)
}

func (e *Entry) holdStage(delta int) {
	dd := e.ds
	dd.mu.Lock()
	e.stages += delta
	e.maybeDropLocked()
	dd.mu.Unlock()
}

// ensureStageLocked returns the member's stage, starting one if there is
// none: a copy of the current content taken under dirdb's lock with
// keep, else empty. perm is the mode of a file that does not exist yet.
func (e *Entry) ensureStageLocked(ctx context.Context, m member, keep bool, perm uint32) (*dirdbStage, error) {
	ms := &e.m[m]
	if ms.stage != nil {
		return ms.stage, nil
	}
	rel := e.relOf(m)
	var st *engine.Stage
	var err error
	if keep {
		var lock *entryLock
		lock, err = e.ds.lockEntry(ctx, e.rel, "write")
		if err != nil {
			return nil, err
		}
		st, err = e.ds.back.NewStage(rel, true, fsPerm(perm))
		lock.release()
	} else {
		st, err = e.ds.back.NewStage(rel, false, fsPerm(perm))
	}
	if err != nil {
		return nil, &engine.Error{Path: rel, Op: "write", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	e.setStageLocked(m, &dirdbStage{s: st})
	e.holdStage(1)
	return ms.stage, nil
}

// dropStageLocked throws the member's stage away.
func (e *Entry) dropStageLocked(m member) {
	if s := e.m[m].stage; s != nil {
		e.setStageLocked(m, nil)
		s.s.Abort()
		e.holdStage(-1)
	}
}

func (e *Entry) setStageLocked(m member, s *dirdbStage) {
	e.m[m].stage = s
	e.m[m].pub.Store(s)
}

// pendingStat returns the attributes of the member's pending version, if
// it has one (with clean, also one without changes). It does not take
// mu: a stage closed meanwhile (published or dropped) reports false, and
// the backing file is then what to look at.
func (e *Entry) pendingStat(m member, clean bool) (engine.Stat, bool) {
	s := e.m[m].pub.Load()
	if s == nil || !(clean || s.dirty.Load()) {
		return engine.Stat{}, false
	}
	// Without mu: the stage may be committed and closed meanwhile.
	st, err := engine.FstatFile(s.s.File())
	if err != nil {
		return engine.Stat{}, false
	}
	return st, true
}

// commitLocked publishes the member's stage if it holds a change: a
// NAME.json must be valid JSON (else EINVAL, the stage is dropped and
// the old file stays). The data is made durable before the lock is
// taken, so that Python processes wait only for the rename; the rename
// is made durable by the next SyncDirs (engine/dirsync.go: fsync(2) of
// a handle does it at once). A stage without changes is dropped once nobody
// writes it. When the lock cannot be taken the stage stays, for a retry.
func (e *Entry) commitLocked(ctx context.Context, m member) error {
	ms := &e.m[m]
	s := ms.stage
	if s == nil {
		return nil
	}
	if !s.dirty.Load() {
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
			d.stats.refused.Add(1)
			return engine.Refuse(rel, "write", syscall.EINVAL,
				"refused: not valid JSON (%v); the old content is kept", err)
		}
	}
	if err := s.s.Sync(); err != nil {
		e.dropStageLocked(m)
		return &engine.Error{Path: rel, Op: "write-back", Reason: err.Error() + "; the old content is kept", Errno: engine.ErrnoOf(err)}
	}
	lock, err := d.lockEntry(ctx, e.rel, "write-back")
	if err != nil {
		return err
	}
	err = s.s.Publish()
	lock.release()
	e.setStageLocked(m, nil)
	e.holdStage(-1)
	d.snaps.forget(rel)
	if err != nil {
		return &engine.Error{Path: rel, Op: "write-back", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	d.stats.commits.Add(1)
	return nil
}

// commitAllLocked publishes both members' pending versions (before a
// rename moves the files).
func (e *Entry) commitAllLocked(ctx context.Context) error {
	for m := member(0); m < numMembers; m++ {
		if err := e.commitLocked(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// detachLocked detaches the member's open handles and drops its pending
// version: its file was deleted or replaced (keep: the handles keep
// their version as an orphan), or moved out of the format.
func (e *Entry) detachLocked(m member, keep bool) {
	if keep {
		e.orphanLocked(m)
	}
	e.dropStageLocked(m)
	e.m[m].handles = 0
	e.m[m].gen++
	e.ds.snaps.forget(e.relOf(m))
}

func memberOfKey(key string) member {
	if key == ExtJSON {
		return memberMeta
	}
	return memberData
}

// WriteBack publishes the given staged versions, except those still open
// for writing (see Entry). Units of versions published or dropped
// since they were marked are done already.
func (e *Entry) WriteBack(units []*engine.Unit) error {
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

// stillPendingLocked returns the member's stage when a publication that
// failed kept it (the lock could not be taken), with its size: it goes
// back to the pool, whose write-back retries it, even if the pool had
// let go of its unit while the stage was open for writing.
func (e *Entry) stillPendingLocked(m member) (*dirdbStage, int64) {
	s := e.m[m].stage
	if s == nil || !s.dirty.Load() {
		return nil, 0
	}
	fi, err := s.s.File().Stat()
	if err != nil {
		return nil, 0
	}
	s.unsynced = fi.Size()
	return s, fi.Size()
}

// PendingFile runs fn on the pending version of rel, a member
// being created or rewritten, which is what becomes the file; handled
// is false when rel has none (the backing file is the one to use).
func (d *Databases) PendingFile(rel string, fn func(*os.File) error) (handled bool, err error) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return false, nil
	}
	e := d.peekEntry(entryRel)
	if e == nil {
		return false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[m].stage
	if s == nil || !s.dirty.Load() {
		return false, nil
	}
	return true, fn(s.s.File())
}

// markDirty hands the stage's change to the pool.
func (e *Entry) markDirty(m member, s *dirdbStage, size int64) error {
	u := &engine.Unit{Owner: e, Key: memberExt[m], Size: size, Value: s}
	if err := e.ds.pool.MarkDirty(u); err != nil {
		// The change is staged; the pool failed to write back
		// something else. Report it now rather than at some fsync.
		return &engine.Error{Path: e.String(), Op: "write", Reason: err.Error(), Errno: syscall.EIO}
	}
	return nil
}

// Close publishes every pending version (unmount: the kernel has
// closed every handle) and frees the snapshots.
func (d *Databases) Close() error {
	dd := d
	dd.mu.Lock()
	es := make([]*Entry, 0, len(dd.entries))
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
				d.rep.Logf("%v", err)
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
