package daf

import (
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Arrays are the daf arrays of a dataset: recognised by name each time a
// data file is opened (an array appears when its yaml is copied in after
// its data file), and the open ArrayFile of each data file in use.
type Arrays struct {
	back     *engine.Backing
	pool     *engine.Pool
	rep      *engine.Reporter
	readOnly bool

	mu     sync.Mutex
	arrays map[string]*ArrayFile // by dataset-relative path
	// retired are old versions of array files kept open for a while
	// after their replacement (retireGrace).
	retired map[*ArrayFile]struct{}

	// Caches of the views (views.go): axis names, Matrix Market indexes.
	axes axisCache
	mtx  mtxCache
}

var _ engine.Format = (*Arrays)(nil)

// NewArrays serves the daf arrays of the dataset env gives.
func NewArrays(env engine.Env) *Arrays {
	return &Arrays{
		back: env.Back, pool: env.Pool, rep: env.Rep, readOnly: env.ReadOnly,
		arrays:  map[string]*ArrayFile{},
		retired: map[*ArrayFile]struct{}{},
	}
}

// Classify returns the ArrayFile serving rel, referenced, when rel is a
// data file of a valid daf array. Problems with the array are logged
// (once) and the file is then plain.
func (d *Arrays) Classify(rel string) (engine.Item, error) {
	a, err := d.arrayFile(rel)
	if a == nil {
		return nil, err
	}
	return a, nil
}

// arrayFile returns the ArrayFile serving rel, referenced, when rel is a
// data file of a valid daf array; nil otherwise.
func (d *Arrays) arrayFile(rel string) (*ArrayFile, error) {
	dirRel, name := filepath.Split(rel)
	if _, _, ok := SplitName(name); !ok {
		return nil, nil
	}
	item, problem, err := validateArray(d.back, dirRel, name)
	if err != nil {
		return nil, err
	}
	if problem != nil {
		problem.Path = filepath.Join(dirRel, problem.Path)
		d.rep.Report(engine.Problem{Path: problem.Path, Reason: problem.Reason + "; served as plain files"})
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
		b, err := openArrayBacking(d.back, rel, d.readOnly)
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
// still be had by Retired.
func (d *Arrays) retireArrayLocked(a *ArrayFile) {
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

// Retired returns, referenced, a retired version of the array file rel
// for which own says yes: an old version still open (see retireGrace).
// nil if there is none.
func (d *Arrays) Retired(rel string, own func(*engine.Stat) bool) *ArrayFile {
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
		a.ds.rep.Logf("%s: write-back: %v", a.rel, err)
	}
	a.close()
}

// forget: rel was removed or renamed away, so nothing new is served from
// the old file.
func (d *Arrays) forget(rel string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.arrays[rel]; a != nil {
		d.retireArrayLocked(a)
	}
}

// Visibility: daf has no names of its own to hide.
func (d *Arrays) Visibility(dirRel, name string) engine.Visibility { return engine.Listed }

// Unlink is the dataset's: an array's files are plain files to remove.
func (d *Arrays) Unlink(rel string) (bool, error) { return false, nil }

// Rename refuses a rename that would leave a valid array with a data
// file of the wrong size; with exchange both names are checked. It
// never renames itself.
func (d *Arrays) Rename(from, to string, flags uint) (bool, error) {
	check := func(src, dst string) error {
		a, err := d.arrayFile(dst)
		if err != nil || a == nil {
			return err
		}
		defer a.Release()
		st, err := d.back.Lstat(src)
		if err != nil {
			return nil // the rename itself will fail
		}
		if st.Size != a.Size() {
			return engine.Refuse(dst, "rename", syscall.EINVAL,
				"refused: %s is %d bytes, the yaml of %s says %d; the old content is kept",
				src, st.Size, dst, a.Size())
		}
		return nil
	}
	if err := check(from, to); err != nil {
		return true, err
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if err := check(to, from); err != nil {
			return true, err
		}
	}
	return false, nil
}

// Moved retires the files that were at both names.
func (d *Arrays) Moved(from, to string, exchange bool) {
	d.forget(from)
	if to != "" {
		d.forget(to)
	}
}

// Sync: an array keeps nothing beyond the pool.
func (d *Arrays) Sync() error { return nil }

// Close releases every array file (after the pool's last flush).
func (d *Arrays) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.arrays {
		a.close()
	}
	for a := range d.retired {
		a.close() // its grace timer's Release finds nothing left to do
	}
	d.arrays = map[string]*ArrayFile{}
	return nil
}

// Check validates every daf array of a directory: each NAME.yaml with a
// data file beside it.
func (d *Arrays) Check(dirRel string, names []string) []engine.Problem {
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	var out []engine.Problem
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ExtYAML)
		if !ok || base == "" {
			continue
		}
		var first string
		for _, ext := range dafDataExts {
			if has[base+ext] {
				first = base + ext
				break
			}
		}
		if first == "" {
			continue // a scalar property or any other yaml
		}
		item, p, err := validateArray(d.back, dirRel, first)
		if err == nil && p == nil && item != nil && item.meta.Sparse {
			p = checkSparseContent(d.back, dirRel, base, item.meta)
		}
		if err != nil {
			out = append(out, engine.Problem{Path: filepath.Join(dirRel, first), Reason: err.Error()})
		} else if p != nil {
			out = append(out, engine.Problem{Path: filepath.Join(dirRel, p.Path), Reason: p.Reason})
		}
	}
	return out
}
