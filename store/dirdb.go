package store

// dirdb databases (formats/dirdb.md): a directory holding NAME.pickle
// files is a database, every subdirectory of a database a sub-database.
// Entry NAME is NAME.pickle (the data), NAME.json (optional metadata) and
// NAME.lock (dirdb's lock file, never shown).
//
// Python dirdb processes rewrite entries in place (truncate, write) under
// an exclusive flock on NAME.lock, so the mount may never read a backing
// entry file without that lock, and never write one in place:
//   - reading serves a Snapshot: a private copy taken under the lock
//     (dirdbsnap.go);
//   - writing goes to a Stage beside the entry, published by rename(2)
//     under the lock (dirdbwrite.go);
//   - unlink and rename move the entry's files together, under the lock
//     (dirdbns.go).
//
// Lock order: DirdbEntry.mu (in path order when there are several), then
// flocks (in path order), then dirdbState.mu. Python holds one flock at a
// time, so it cannot close a cycle.

import (
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File extensions of a dirdb entry.
const (
	DirdbData = ".pickle"
	DirdbMeta = ".json"
	DirdbLock = ".lock"
)

// member is one of the files of an entry that the mount shows.
type member int

const (
	memberData member = iota
	memberMeta
	numMembers
)

var memberExt = [numMembers]string{DirdbData, DirdbMeta}

func (m member) String() string { return memberExt[m] }

// splitDirdbName splits NAME.ext into NAME and ext when ext is one of
// dirdb's and NAME is a valid entry name (not empty, not ".").
func splitDirdbName(name string) (base, ext string, ok bool) {
	for _, e := range []string{DirdbData, DirdbMeta, DirdbLock} {
		if b, found := strings.CutSuffix(name, e); found && b != "" && b != "." && !strings.Contains(b, "/") {
			return b, e, true
		}
	}
	return "", "", false
}

// DirdbMetaName is the metadata file of the entry whose data file is
// name (NAME.pickle → NAME.json).
func DirdbMetaName(name string) (string, bool) {
	base, ext, ok := splitDirdbName(name)
	if !ok || ext != DirdbData {
		return "", false
	}
	return base + DirdbMeta, true
}

// dirdbState is a Dataset's dirdb bookkeeping. The zero value is ready.
type dirdbState struct {
	mu sync.Mutex
	// dirs caches whether a directory holds a NAME.pickle, keyed by its
	// dataset-relative path, valid while the directory's signature is.
	dirs map[string]dirInfo
	// entries are the entries something holds: an open handle, a
	// reference from Classify, or a stage. Keyed by the entry's path
	// without extension ("db/set-001").
	entries map[string]*DirdbEntry
	snaps   snapCache
	stats   dirdbCounters
}

// dirInfo is what a directory listing said, and the directory's
// signature when it was listed.
type dirInfo struct {
	sig       fileSig
	hasPickle bool
}

// DirdbStats are counters for /.arrayfs/stats.json and tests.
type DirdbStats struct {
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

// DirdbStats returns a snapshot of the dirdb counters.
func (d *Dataset) DirdbStats() DirdbStats {
	c := &d.dirdb.stats
	return DirdbStats{
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
func (d *Dataset) isDirdbDir(dirRel string) bool {
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
func (d *Dataset) dirHasPickle(rel string) bool {
	st, err := d.back.Lstat(rel)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return false
	}
	sig := sigOf(&st.Stat_t)
	dd := &d.dirdb
	dd.mu.Lock()
	if c, ok := dd.dirs[rel]; ok && c.sig == sig {
		dd.mu.Unlock()
		return c.hasPickle
	}
	dd.mu.Unlock()
	now := time.Now()
	has := d.scanForPickle(rel)
	if !sig.racy(now) {
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
func (d *Dataset) scanForPickle(rel string) bool {
	d.dirdb.stats.listings.Add(1)
	f, err := d.back.OpenDir(rel)
	if err != nil {
		return false
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if _, ext, ok := splitDirdbName(n); ok && ext == DirdbData {
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
func (d *Dataset) dirdbMemberOf(rel string) (entryRel string, m member, ok bool) {
	dirRel, name := filepath.Split(rel)
	base, ext, ok := splitDirdbName(name)
	if !ok {
		return "", 0, false
	}
	switch ext {
	case DirdbData:
		m = memberData
	case DirdbMeta:
		if !d.isDirdbDir(dirRel) {
			return "", 0, false
		}
		m = memberMeta
	default:
		return "", 0, false
	}
	return filepath.Join(dirRel, base), m, true
}

// dirdbUnlisted leaves dirdb's lock files out of listings of a database.
func (d *Dataset) dirdbUnlisted(dirRel, name string) bool {
	_, ext, ok := splitDirdbName(name)
	return ok && ext == DirdbLock && d.isDirdbDir(dirRel)
}

// A DirdbFile is one member (NAME.pickle or NAME.json) of an entry, as
// Classify hands it out: it holds a reference to the entry. Release it.
type DirdbFile struct {
	e *DirdbEntry
	m member
}

// dirdbFile returns the DirdbFile for rel, referenced, when rel is a
// member of a dirdb entry.
func (d *Dataset) dirdbFile(rel string) (*DirdbFile, bool) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return nil, false
	}
	return &DirdbFile{e: d.getEntry(entryRel), m: m}, true
}

// Release drops the reference to the entry.
func (f *DirdbFile) Release() { f.e.release() }

// Rel is the dataset-relative path of the file (it follows renames of
// its entry).
func (f *DirdbFile) Rel() string {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	return f.e.relOf(f.m)
}

// IsMeta reports whether the file is an entry's NAME.json.
func (f *DirdbFile) IsMeta() bool { return f.m == memberMeta }

// getEntry returns the entry at entryRel, referenced.
func (d *Dataset) getEntry(entryRel string) *DirdbEntry {
	dd := &d.dirdb
	dd.mu.Lock()
	defer dd.mu.Unlock()
	if dd.entries == nil {
		dd.entries = map[string]*DirdbEntry{}
	}
	e := dd.entries[entryRel]
	if e == nil {
		e = &DirdbEntry{ds: d}
		e.setRel(entryRel)
		dd.entries[entryRel] = e
	}
	e.refs++
	return e
}

// peekEntry returns the entry at entryRel if something holds it, without
// taking a reference.
func (d *Dataset) peekEntry(entryRel string) *DirdbEntry {
	dd := &d.dirdb
	dd.mu.Lock()
	defer dd.mu.Unlock()
	return dd.entries[entryRel]
}

func (e *DirdbEntry) ref() {
	dd := &e.ds.dirdb
	dd.mu.Lock()
	e.refs++
	dd.mu.Unlock()
}

func (e *DirdbEntry) release() {
	dd := &e.ds.dirdb
	dd.mu.Lock()
	defer dd.mu.Unlock()
	e.refs--
	e.maybeDropLocked()
}

// maybeDropLocked forgets an entry nothing holds any more. dd.mu held.
func (e *DirdbEntry) maybeDropLocked() {
	dd := &e.ds.dirdb
	if e.refs == 0 && e.stages == 0 && dd.entries[e.rel] == e {
		delete(dd.entries, e.rel)
	}
}

// DirdbStat returns the attributes of rel when it is a dirdb member:
// those of its staged version while one is pending (pending is then
// true: a file being created does not exist on disk until it is
// committed), else the backing file's.
func (d *Dataset) DirdbStat(rel string) (st Stat, pending, ok bool, err error) {
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

// DirdbVersions returns the attributes of what rel, a dirdb member, is
// now: its published file (hasFile) and its pending version (pending).
// ok is false when rel is not a member.
func (d *Dataset) DirdbVersions(rel string) (file Stat, hasFile bool, stage Stat, pending bool, ok bool) {
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

// DirdbPending lists the members of entries in directory dirRel that are
// being created: staged, not yet on disk. A listing shows them.
func (d *Dataset) DirdbPending(dirRel string) map[string]Stat {
	dirRel = cleanRel(dirRel)
	dd := &d.dirdb
	dd.mu.Lock()
	es := map[string]*DirdbEntry{}
	for rel, e := range dd.entries {
		if filepath.Dir(rel) == dirRel {
			es[rel] = e
		}
	}
	dd.mu.Unlock()
	var out map[string]Stat
	for rel, e := range es {
		for m := member(0); m < numMembers; m++ {
			st, ok := e.pendingStat(m, false)
			if !ok || d.back.Exists(rel+memberExt[m]) {
				continue
			}
			if out == nil {
				out = map[string]Stat{}
			}
			out[filepath.Base(rel+memberExt[m])] = st
		}
	}
	return out
}
