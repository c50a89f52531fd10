package dirdb

import (
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// File extensions of a dirdb entry.
const (
	ExtPickle = ".pickle"
	ExtJSON   = ".json"
	ExtLock   = ".lock"
)

// member is one of the files of an entry that the mount shows.
type member int

const (
	memberData member = iota
	memberMeta
	numMembers
)

var memberExt = [numMembers]string{ExtPickle, ExtJSON}

func (m member) String() string { return memberExt[m] }

// splitDirdbName splits NAME.ext into NAME and ext when ext is one of
// dirdb's and NAME is a valid entry name (not empty, not ".").
func splitDirdbName(name string) (base, ext string, ok bool) {
	for _, e := range []string{ExtPickle, ExtJSON, ExtLock} {
		if b, found := strings.CutSuffix(name, e); found && b != "" && b != "." && !strings.Contains(b, "/") {
			return b, e, true
		}
	}
	return "", "", false
}

// MetaName is the metadata file of the entry whose data file is
// name (NAME.pickle → NAME.json).
func MetaName(name string) (string, bool) {
	base, ext, ok := splitDirdbName(name)
	if !ok || ext != ExtPickle {
		return "", false
	}
	return base + ExtJSON, true
}

// Databases are the dirdb databases of a dataset, and the entries of
// them something holds.
type Databases struct {
	back        *engine.Backing
	pool        *engine.Pool
	rep         *engine.Reporter
	readOnly    bool
	lockTimeout time.Duration

	mu sync.Mutex
	// dirs caches whether a directory holds a NAME.pickle, keyed by its
	// dataset-relative path, valid while the directory's signature is.
	dirs map[string]dirInfo
	// entries are the entries something holds: an open handle, a
	// reference from Classify, or a stage. Keyed by the entry's path
	// without extension ("db/set-001").
	entries map[string]*Entry
	snaps   snapCache
	stats   dirdbCounters
}

// dirInfo is what a directory listing said, and the directory's
// signature when it was listed.
type dirInfo struct {
	sig       engine.FileSig
	hasPickle bool
}

// Stats are counters for /.arrayfs/stats.json and tests.
type Stats struct {
	SnapshotsMemory int64 `json:"snapshots_memory"` // entry versions copied to memory
	SnapshotsFile   int64 `json:"snapshots_file"`   // entry versions copied (or cloned) to a private file
	SnapshotsCloned int64 `json:"snapshots_cloned"` // of those, by FICLONE (no data copied)
	SnapshotsReused int64 `json:"snapshots_reused"` // opens served by an unchanged snapshot, no copy
	BytesCopied     int64 `json:"bytes_copied"`     // by snapshots, FICLONE excluded
	Commits         int64 `json:"commits"`          // staged versions published by rename
	Refused         int64 `json:"refused"`          // writes refused (a .json that is not JSON)
	LockWaits       int64 `json:"lock_waits"`       // lock acquisitions that had to wait for another process
	LockTimeouts    int64 `json:"lock_timeouts"`    // and gave up
	LockTaken       int64 `json:"lock_taken"`       // acquisitions of dirdb's lock
	LockHeldMaxUS   int64 `json:"lock_held_max_us"` // longest time arrayfs held one, µs
	LockHeldTotalUS int64 `json:"lock_held_total_us"`
	DirListings     int64 `json:"dir_listings"` // directories listed to tell whether they are databases
}

type dirdbCounters struct {
	snapMem, snapFile, snapCloned, snapReused, bytesCopied atomic.Int64
	commits, refused, lockWaits, lockTimeouts, listings    atomic.Int64
	lockTaken, lockHeldMax, lockHeldTotal                  atomic.Int64
}

// Stats returns a snapshot of the dirdb counters.
func (d *Databases) Stats() Stats {
	c := &d.stats
	return Stats{
		SnapshotsMemory: c.snapMem.Load(), SnapshotsFile: c.snapFile.Load(),
		SnapshotsCloned: c.snapCloned.Load(), SnapshotsReused: c.snapReused.Load(),
		BytesCopied: c.bytesCopied.Load(), Commits: c.commits.Load(), Refused: c.refused.Load(),
		LockWaits: c.lockWaits.Load(), LockTimeouts: c.lockTimeouts.Load(), DirListings: c.listings.Load(),
		LockTaken: c.lockTaken.Load(), LockHeldMaxUS: c.lockHeldMax.Load(), LockHeldTotalUS: c.lockHeldTotal.Load(),
	}
}

func cleanRel(rel string) string {
	if rel == "" {
		return "."
	}
	return filepath.Clean(rel)
}

// isDirdbDir reports whether directory dirRel is a database: it holds a
// NAME.pickle, or one of its ancestors in the dataset does.
func (d *Databases) isDirdbDir(dirRel string) bool {
	rel := cleanRel(dirRel)
	for {
		if d.dirHasPickle(rel) {
			return true
		}
		if rel == "." || rel == "/" {
			return false
		}
		rel = filepath.Dir(rel)
	}
}

// dirHasPickle reports whether directory rel holds a NAME.pickle. The
// answer is cached under the directory's signature (inode, mtime,
// ctime), which every create, unlink and rename in it changes, so that
// lookups do not list the directory each time. A listing made while the
// directory's timestamps are recent is not cached: a change in the same
// clock tick would leave them as they are.
func (d *Databases) dirHasPickle(rel string) bool {
	st, err := d.back.Lstat(rel)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return false
	}
	sig := engine.SigOf(&st.Stat_t)
	dd := d
	dd.mu.Lock()
	if c, ok := dd.dirs[rel]; ok && c.sig == sig {
		dd.mu.Unlock()
		return c.hasPickle
	}
	dd.mu.Unlock()
	now := time.Now()
	has := d.scanForPickle(rel)
	if !racy(sig, now) {
		dd.mu.Lock()
		if dd.dirs == nil {
			dd.dirs = map[string]dirInfo{}
		}
		dd.dirs[rel] = dirInfo{sig: sig, hasPickle: has}
		dd.mu.Unlock()
	}
	return has
}

// scanForPickle lists a directory until it finds a regular NAME.pickle.
func (d *Databases) scanForPickle(rel string) bool {
	d.stats.listings.Add(1)
	f, err := d.back.OpenDir(rel)
	if err != nil {
		return false
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if _, ext, ok := splitDirdbName(n); ok && ext == ExtPickle {
				var st unix.Stat_t
				if unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
					return true
				}
			}
		}
		if err != nil || len(names) == 0 {
			return false
		}
	}
}

// dirdbMemberOf tells whether rel is a member of a dirdb entry: any
// NAME.pickle (creating one makes its directory a database), or a
// NAME.json in a database. It returns the entry's path and the member.
func (d *Databases) dirdbMemberOf(rel string) (entryRel string, m member, ok bool) {
	dirRel, name := filepath.Split(rel)
	base, ext, ok := splitDirdbName(name)
	if !ok {
		return "", 0, false
	}
	switch ext {
	case ExtPickle:
		m = memberData
	case ExtJSON:
		if !d.isDirdbDir(dirRel) {
			return "", 0, false
		}
		m = memberMeta
	default:
		return "", 0, false
	}
	return filepath.Join(dirRel, base), m, true
}

var _ engine.Format = (*Databases)(nil)

// NewDatabases serves the dirdb databases of the dataset env gives.
func NewDatabases(env engine.Env) *Databases {
	return &Databases{back: env.Back, pool: env.Pool, rep: env.Rep, readOnly: env.ReadOnly, lockTimeout: env.LockTimeout}
}

// Visibility leaves dirdb's lock files out of listings of a database.
func (d *Databases) Visibility(dirRel, name string) engine.Visibility {
	if _, ext, ok := splitDirdbName(name); ok && ext == ExtLock && d.isDirdbDir(dirRel) {
		return engine.Unlisted
	}
	return engine.Listed
}

// Classify returns the File for rel, referenced, when rel is a
// member of a dirdb entry.
func (d *Databases) Classify(rel string) (engine.Item, error) {
	if f, ok := d.dirdbFile(rel); ok {
		return f, nil
	}
	return nil, nil
}

// Moved: entries follow renames as they happen (Rename).
func (d *Databases) Moved(from, to string, exchange bool) {}

// Sync: pending versions are published when their last writer closes,
// or at Close, not by a sync; the renames of those publications are
// made durable by the Formats' Sync (engine/dirsync.go).
func (d *Databases) Sync() error { return nil }

// SyncPublished makes every publication so far durable: what an fsync(2)
// of any handle of the member rel promises.
func (d *Databases) SyncPublished(rel string) error {
	if err := d.back.SyncDirs(); err != nil {
		return &engine.Error{Path: rel, Op: "fsync", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return nil
}

// A File is one member (NAME.pickle or NAME.json) of an entry, as
// Classify hands it out: it holds a reference to the entry. Release it.
type File struct {
	e *Entry
	m member
}

// dirdbFile returns the File for rel, referenced, when rel is a
// member of a dirdb entry.
func (d *Databases) dirdbFile(rel string) (*File, bool) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return nil, false
	}
	return &File{e: d.getEntry(entryRel), m: m}, true
}

// Release drops the reference to the entry.
func (f *File) Release() { f.e.release() }

// Rel is the dataset-relative path of the file (it follows renames of
// its entry).
func (f *File) Rel() string {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	return f.e.relOf(f.m)
}

// IsMeta reports whether the file is an entry's NAME.json.
func (f *File) IsMeta() bool { return f.m == memberMeta }

// getEntry returns the entry at entryRel, referenced.
func (d *Databases) getEntry(entryRel string) *Entry {
	dd := d
	dd.mu.Lock()
	defer dd.mu.Unlock()
	if dd.entries == nil {
		dd.entries = map[string]*Entry{}
	}
	e := dd.entries[entryRel]
	if e == nil {
		e = &Entry{ds: d}
		e.setRel(entryRel)
		dd.entries[entryRel] = e
	}
	e.refs++
	return e
}

// peekEntry returns the entry at entryRel if something holds it, without
// taking a reference.
func (d *Databases) peekEntry(entryRel string) *Entry {
	dd := d
	dd.mu.Lock()
	defer dd.mu.Unlock()
	return dd.entries[entryRel]
}

func (e *Entry) ref() {
	dd := e.ds
	dd.mu.Lock()
	e.refs++
	dd.mu.Unlock()
}

func (e *Entry) release() {
	dd := e.ds
	dd.mu.Lock()
	defer dd.mu.Unlock()
	e.refs--
	e.maybeDropLocked()
}

// maybeDropLocked forgets an entry nothing holds any more. dd.mu held.
func (e *Entry) maybeDropLocked() {
	dd := e.ds
	if e.refs == 0 && e.stages == 0 && dd.entries[e.rel] == e {
		delete(dd.entries, e.rel)
	}
}

// Stat returns the attributes of rel when it is a dirdb member:
// those of its staged version while one is pending (pending is then
// true: a file being created does not exist on disk until it is
// committed), else the backing file's.
func (d *Databases) Stat(rel string) (st engine.Stat, pending, ok bool, err error) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return st, false, false, nil
	}
	if e := d.peekEntry(entryRel); e != nil {
		if st, ok := e.pendingStat(m, false); ok {
			return st, true, true, nil
		}
	}
	st, err = d.back.Lstat(rel)
	return st, false, true, err
}

// Versions returns the attributes of what rel, a dirdb member, is
// now: its published file (hasFile) and its pending version (pending).
// ok is false when rel is not a member.
func (d *Databases) Versions(rel string) (file engine.Stat, hasFile bool, stage engine.Stat, pending bool, ok bool) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return
	}
	if e := d.peekEntry(entryRel); e != nil {
		stage, pending = e.pendingStat(m, true)
	}
	file, err := d.back.Lstat(rel)
	return file, err == nil, stage, pending, true
}

// Pending lists the members of entries in directory dirRel that are
// being created: staged, not yet on disk. A listing shows them.
func (d *Databases) Pending(dirRel string) map[string]engine.Stat {
	dirRel = cleanRel(dirRel)
	dd := d
	dd.mu.Lock()
	es := map[string]*Entry{}
	for rel, e := range dd.entries {
		if filepath.Dir(rel) == dirRel {
			es[rel] = e
		}
	}
	dd.mu.Unlock()
	var out map[string]engine.Stat
	for rel, e := range es {
		for m := member(0); m < numMembers; m++ {
			st, ok := e.pendingStat(m, false)
			if !ok || d.back.Exists(rel+memberExt[m]) {
				continue
			}
			if out == nil {
				out = map[string]engine.Stat{}
			}
			out[filepath.Base(rel+memberExt[m])] = st
		}
	}
	return out
}
