package store

import (
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is what the engine needs from the mount options.
type Config struct {
	PoolUnits int
	PoolBytes int64
	// KeyLength is the docarray key length to use; 0 auto-detects.
	KeyLength int
	ReadOnly  bool
	// LockTimeout bounds the wait for a dirdb entry's lock held by
	// another process; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// Logf receives one line per problem or refused write; log.Printf if nil.
	Logf func(format string, args ...any)
}

// A Dataset is an open dataset directory: the items recognised in it and
// the write-back pool they share. Every byte arrayfs writes under the
// directory goes through a Dataset.
//
// Items are recognised by their names each time they are opened, so a
// directory can change what it holds while mounted (an array appears
// when its yaml is copied in after its data file).
type Dataset struct {
	back *Backing
	lock *datasetLock // a writable dataset's (datasetlock.go)
	cfg  Config
	pool *Pool
	rep  *reporter

	mu     sync.Mutex
	arrays map[string]*ArrayFile // by dataset-relative path
	// retired are old versions of array files kept open for a while
	// after their replacement (retireGrace).
	retired map[*ArrayFile]struct{}

	dirdb dirdbState
	// Document stores (docarray_dataset.go): open ones by directory,
	// ones that cannot be served by the signature of their files.
	openMu    sync.Mutex
	docs      map[string]*DocStore
	badDocs   map[string][2]fileSig
	docNotify func(dirRel string, changes []DocChange)
}

// Open opens the dataset directory root.
func Open(root string, cfg Config) (*Dataset, error) {
	back, err := OpenBacking(root)
	if err != nil {
		return nil, err
	}
	var lock *datasetLock
	if !cfg.ReadOnly {
		if lock, err = lockDataset(back.Path(), back.Fd()); err != nil {
			back.Close()
			return nil, err
		}
	}
	if cfg.PoolUnits <= 0 {
		cfg.PoolUnits = 1000
	}
	if cfg.PoolBytes <= 0 {
		cfg.PoolBytes = 64 << 20
	}
	return &Dataset{
		back:    back,
		lock:    lock,
		cfg:     cfg,
		pool:    NewPool(cfg.PoolUnits, cfg.PoolBytes),
		rep:     newReporter(cfg.Logf),
		arrays:  map[string]*ArrayFile{},
		retired: map[*ArrayFile]struct{}{},
		docs:    map[string]*DocStore{},
		badDocs: map[string][2]fileSig{},
	}, nil
}

// Root is the dataset directory's absolute path, for messages: every
// access goes through Backing.
func (d *Dataset) Root() string { return d.back.Path() }

// Backing is the dataset directory through which files are reached.
func (d *Dataset) Backing() *Backing { return d.back }

// Pool is the dataset's write-back pool.
func (d *Dataset) Pool() *Pool { return d.pool }

// ReadOnly reports whether the dataset was opened read-only.
func (d *Dataset) ReadOnly() bool { return d.cfg.ReadOnly }

// Logf logs one line the way the dataset reports problems.
func (d *Dataset) Logf(format string, args ...any) { d.rep.logf(format, args...) }

// Report logs a problem once per mount.
func (d *Dataset) Report(p Problem) { d.rep.report(p) }

// Class is what a regular file of the dataset is, for the file system:
// a plain file, or a member of an item served by the engine. A Class
// holds references to the items it names: Release it when done.
type Class struct {
	// Array is set when the file is a data file of a valid daf array.
	Array *ArrayFile
	// Dirdb is set when the file is a member of a dirdb entry
	// (NAME.pickle, or NAME.json in a database).
	Dirdb *DirdbFile
}

// Release drops the references the Class holds.
func (c Class) Release() {
	if c.Array != nil {
		c.Array.Release()
	}
	if c.Dirdb != nil {
		c.Dirdb.Release()
	}
}

// Classify tells what the regular file at rel is. Problems with the item
// it belongs to are logged (once) and the file is then plain.
func (d *Dataset) Classify(rel string) (Class, error) {
	if f, ok := d.dirdbFile(rel); ok {
		return Class{Dirdb: f}, nil
	}
	a, err := d.arrayFile(rel)
	if err != nil {
		return Class{}, err
	}
	return Class{Array: a}, nil
}

// Hidden reports whether name in directory dirRel is arrayfs's or a
// format's own bookkeeping that the mount never shows.
func (d *Dataset) Hidden(dirRel, name string) bool {
	return IsStageName(name) || name == DocMetaName
}

// Unlisted reports whether name is left out of listings of directory
// dirRel though it can be reached by name: dirdb's lock files, which
// backups must not copy but dirdb processes working through the mount
// open.
func (d *Dataset) Unlisted(dirRel, name string) bool {
	return d.dirdbUnlisted(dirRel, name)
}

// arrayFile returns the ArrayFile serving rel, referenced, when rel is a
// data file of a valid daf array; nil otherwise.
func (d *Dataset) arrayFile(rel string) (*ArrayFile, error) {
	dirRel, name := filepath.Split(rel)
	if _, _, ok := SplitDafName(name); !ok {
		return nil, nil
	}
	item, problem, err := validateArray(d.back, dirRel, name)
	if err != nil {
		return nil, err
	}
	if problem != nil {
		problem.Path = filepath.Join(dirRel, problem.Path)
		d.rep.report(Problem{Path: problem.Path, Reason: problem.Reason + "; served as plain files"})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.arrays[rel]
	if a != nil && (item == nil || a.size != item.size || !a.current()) {
		d.retireArrayLocked(a)
		a = nil
	}
	if item == nil {
		return nil, nil
	}
	if a == nil {
		a = &ArrayFile{ds: d, rel: rel, size: item.size}
		b, err := openArrayBacking(d.back, rel, d.cfg.ReadOnly)
		if err != nil {
			return nil, err
		}
		a.backing.Store(b)
		d.arrays[rel] = a
	}
	a.refs++
	return a, nil
}

// current reports whether the ArrayFile still serves the file at its path
// (not replaced or removed behind it).
func (a *ArrayFile) current() bool {
	b := a.backing.Load()
	st, err := a.ds.back.Lstat(a.rel)
	if err != nil {
		return false
	}
	return uint64(st.Dev) == b.dev && st.Ino == b.ino
}

// Release drops a reference taken by Classify. The last one of a retired
// ArrayFile writes back what is left and closes it.
func (a *ArrayFile) Release() {
	d := a.ds
	d.mu.Lock()
	a.refs--
	last := a.refs == 0 && a.retired
	d.mu.Unlock()
	if last {
		a.finish()
	}
}

// retireGrace is how long the old version of a replaced (or removed)
// array file stays open after its name moved on. An open that raced with
// the replacement (the kernel still had the old node for the name) reads
// that old version whole, as if it had come first, instead of failing;
// and the old inode's number cannot come back as another file meanwhile.
// It is longer than the kernel keeps a name (entryTimeout in fs).
const retireGrace = 2 * time.Second

// retireArrayLocked stops giving a out: the file at its path is no longer
// the one it serves. Handles still open keep using it (POSIX: an open
// file outlives its name) until they release it; for retireGrace it can
// still be had by RetiredArray.
func (d *Dataset) retireArrayLocked(a *ArrayFile) {
	delete(d.arrays, a.rel)
	a.retired = true
	a.refs++ // the grace period's
	d.retired[a] = struct{}{}
	time.AfterFunc(retireGrace, func() {
		d.mu.Lock()
		delete(d.retired, a)
		d.mu.Unlock()
		a.Release()
	})
}

// RetiredArray returns, referenced, a retired version of the array file
// rel for which own says yes: an old version still open (see
// retireGrace). nil if there is none.
func (d *Dataset) RetiredArray(rel string, own func(*Stat) bool) *ArrayFile {
	d.mu.Lock()
	var cands []*ArrayFile
	for a := range d.retired {
		if a.rel == rel {
			a.refs++
			cands = append(cands, a)
		}
	}
	d.mu.Unlock()
	var found *ArrayFile
	for _, a := range cands {
		if st, err := a.Stat(); found == nil && err == nil && own(&st) {
			found = a
			continue
		}
		a.Release()
	}
	return found
}

// finish writes back a's dirty chunks and closes its backing file.
func (a *ArrayFile) finish() {
	if err := a.ds.pool.Flush(a); err != nil {
		a.ds.rep.logf("%s: write-back: %v", a.rel, err)
	}
	a.close()
}

// Forget tells the dataset that rel was removed or renamed away, so that
// nothing new is served from the old file.
func (d *Dataset) Forget(rel string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.arrays[rel]; a != nil {
		d.retireArrayLocked(a)
	}
}

// Sync writes back everything dirty (fsync of the root, unmount).
func (d *Dataset) Sync() error {
	err := d.pool.FlushAll()
	if serr := d.syncStores(); err == nil {
		err = serr
	}
	return err
}

// Close writes back everything and releases every backing file.
func (d *Dataset) Close() error {
	d.pool.Close()
	derr := d.dirdbClose()
	err := d.pool.FlushAll()
	if err == nil {
		err = derr
	}
	if serr := d.syncStores(); err == nil {
		err = serr
	}
	d.closeStores()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.arrays {
		a.close()
	}
	for a := range d.retired {
		a.close() // its grace timer's Release finds nothing left to do
	}
	d.arrays = map[string]*ArrayFile{}
	d.back.Close()
	d.lock.release()
	return err
}

// Tidy removes name from directory dirRel when it is arrayfs's own
// leftover: a staged file no process owns (a crash interrupted the write
// that made it). A stage being written, by this mount or any other
// process, is its owner's and stays.
func (d *Dataset) Tidy(dirRel, name string) {
	if !IsStageName(name) || d.cfg.ReadOnly {
		return
	}
	if removed, _ := d.back.RemoveStaleStage(dirRel, name); removed {
		d.rep.logf("%s: removed a staged file left by an interrupted write", filepath.Join(dirRel, name))
	}
}

// Unlink removes the file rel.
func (d *Dataset) Unlink(rel string) error {
	if handled, err := d.dirdbUnlink(rel); handled {
		return err
	}
	if err := d.back.Unlink(rel); err != nil {
		return err
	}
	d.Forget(rel)
	return nil
}

// Rename renames the file or directory from to to; flags are renameat2's.
// A rename that would give a valid array a data file of the wrong size is
// refused with EINVAL.
func (d *Dataset) Rename(from, to string, flags uint) error {
	if handled, err := d.dirdbRename(from, to, flags); handled {
		return err
	}
	if err := d.checkRename(from, to, flags&unix.RENAME_EXCHANGE != 0); err != nil {
		return err
	}
	if err := d.back.Rename(from, to, flags); err != nil {
		return err
	}
	d.Forget(from)
	d.Forget(to)
	d.renameStores(from, to, flags&unix.RENAME_EXCHANGE != 0)
	return nil
}

// checkRename refuses a rename that would leave a valid array with a data
// file of the wrong size; with exchange both names are checked.
func (d *Dataset) checkRename(from, to string, exchange bool) error {
	check := func(src, dst string) error {
		cls, err := d.Classify(dst)
		if err != nil || cls.Array == nil {
			return err
		}
		defer cls.Release()
		st, err := d.back.Lstat(src)
		if err != nil {
			return nil // the rename itself will fail
		}
		if st.Size != cls.Array.Size() {
			return refuse(dst, "rename", syscall.EINVAL,
				"refused: %s is %d bytes, the yaml of %s says %d; the old content is kept",
				src, st.Size, dst, cls.Array.Size())
		}
		return nil
	}
	if err := check(from, to); err != nil {
		return err
	}
	if exchange {
		return check(to, from)
	}
	return nil
}
