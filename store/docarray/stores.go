package docarray

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Stores are the document stores of a dataset: recognised by name (a
// directory holding header.bin and body.bin) each time a directory is
// used, so that a directory becomes a store the moment a marker makes
// one there.
type Stores struct {
	back        *engine.Backing
	pool        *engine.Pool
	rep         *engine.Reporter
	readOnly    bool
	lockTimeout time.Duration
	keyLength   int // 0: the sidecar's, else detected

	// openMu serialises opening and creating stores; mu guards the maps.
	openMu  sync.Mutex
	mu      sync.Mutex
	docs    map[string]*Store            // open ones, by directory
	badDocs map[string][2]engine.FileSig // ones that cannot be served, by the signature of their files
	notify  func(dirRel string, changes []Change)

	wholes wholeCache // whole-store views (wholeviews.go)
	watch  *watcher   // changes behind arrayfs's back (watch.go); nil if inotify is not available
	// saves are the saved indexes being written (indexfile.go): Close
	// waits for them.
	saves sync.WaitGroup
	// indexing counts the records of stores being opened, which Indexed
	// includes; onIndexing (guarded by mu) is told when it grows.
	indexing   atomic.Int64
	onIndexing func()
}

var _ engine.Format = (*Stores)(nil)

// NewStores serves the document stores of the dataset env gives, with
// key length keyLength (0: each store's sidecar's, else detected).
func NewStores(env engine.Env, keyLength int) *Stores {
	d := &Stores{
		back: env.Back, pool: env.Pool, rep: env.Rep, readOnly: env.ReadOnly,
		lockTimeout: env.LockTimeout, keyLength: keyLength,
		docs: map[string]*Store{}, badDocs: map[string][2]engine.FileSig{},
	}
	w, err := newWatcher(d)
	if err != nil {
		d.rep.Logf("changes made to stores behind arrayfs's back are seen at the next directory operation, not at once: inotify: %v", err)
	} else {
		d.watch = w
	}
	return d
}

// Classify: a store is a directory, its documents no files of the
// dataset.
func (d *Stores) Classify(rel string) (engine.Item, error) { return nil, nil }

// Visibility hides a store's sidecar and its saved index.
func (d *Stores) Visibility(dirRel, name string) engine.Visibility {
	if name == MetaName || name == IndexName {
		return engine.Hidden
	}
	return engine.Listed
}

// Unlink: documents are removed through their store (Store.Remove).
func (d *Stores) Unlink(rel string) (bool, error) { return false, nil }

// Rename: documents are renamed through their store; a store directory
// is renamed by the dataset, and followed by Moved.
func (d *Stores) Rename(from, to string, flags uint) (bool, error) { return false, nil }

// Moved follows a rename of directories holding stores.
func (d *Stores) Moved(from, to string, exchange bool) {
	if to != "" {
		d.renameStores(from, to, exchange)
	}
}

// Check validates the store of a directory holding header.bin and
// body.bin: every record, and every live document's bytes.
func (d *Stores) Check(dirRel string, names []string) []engine.Problem {
	return checkDocStores(d.back, dirRel, names, d.keyLength)
}

// Store returns the store directory dirRel is, or nil when it is a
// plain directory, a store that cannot be served (reported once, then
// shown as plain files), or one that cannot be read (StoreErr).
func (d *Stores) Store(dirRel string) *Store {
	s, _ := d.StoreErr(dirRel)
	return s
}

// StoreErr is Store that tells a store whose files cannot be read
// (permission denied, an I/O error, a lock held too long) from a plain
// directory: its error is what the directory's operations answer, rather
// than showing header.bin and body.bin as plain files.
func (d *Stores) StoreErr(dirRel string) (*Store, error) {
	d.mu.Lock()
	s := d.docs[dirRel]
	d.mu.Unlock()
	if s != nil {
		if !s.refresh() {
			return s, nil
		}
		d.retireStore(s, "its files were replaced or removed behind arrayfs's back")
	}
	if !d.back.IsRegular(filepath.Join(dirRel, HeaderName)) || !d.back.IsRegular(filepath.Join(dirRel, BodyName)) {
		return nil, nil
	}
	d.openMu.Lock()
	defer d.openMu.Unlock()
	s, err := d.openStoreLocked(dirRel)
	if err != nil {
		d.rep.Report(engine.Problem{Path: dirRel, Reason: "cannot be read: " + err.Error()})
		return nil, &engine.Error{Path: dirRel, Op: "open", Reason: "the store cannot be read: " + err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return s, nil
}

// storeSig identifies the files of a store that could not be served, so
// that it is not parsed again until they change.
func storeSig(back *engine.Backing, dirRel string) [2]engine.FileSig {
	var sig [2]engine.FileSig
	for i, n := range []string{HeaderName, BodyName} {
		if st, err := back.Lstat(filepath.Join(dirRel, n)); err == nil {
			sig[i] = engine.SigOf(&st.Stat_t)
		}
	}
	return sig
}

func (d *Stores) openStoreLocked(dirRel string) (*Store, error) {
	d.mu.Lock()
	s := d.docs[dirRel]
	d.mu.Unlock()
	if s != nil {
		return s, nil
	}
	sig := storeSig(d.back, dirRel)
	if bad, ok := d.badDocs[dirRel]; ok && bad == sig {
		return nil, nil
	}
	t0 := time.Now()
	s, err := openStore(d, dirRel)
	if took := time.Since(t0); err == nil && took > 100*time.Millisecond {
		how := "its records parsed"
		if s.indexLoaded {
			how = "from its saved index"
		}
		d.rep.Logf("%s: %d documents, opened in %.2f s (%s)", dirRel, s.Len(), took.Seconds(), how)
	}
	if err != nil {
		var sp *errStoreProblem
		if errors.As(err, &sp) {
			// Not a store arrayfs can serve: plain files until the files
			// change. (A store that cannot be read, EACCES or EIO, is
			// tried again at every access: its error is the answer.)
			d.badDocs[dirRel] = sig
			d.rep.Report(engine.Problem{Path: dirRel, Reason: sp.reason + "; served as plain files"})
			return nil, nil
		}
		return nil, err
	}
	delete(d.badDocs, dirRel)
	d.mu.Lock()
	d.docs[dirRel] = s
	d.mu.Unlock()
	if d.watch != nil {
		d.watch.watch(s)
	}
	return s, nil
}

// SetNotify sets the function told about documents changed behind
// arrayfs's back (the file system drops the kernel's caches of them). It
// is called from a goroutine of its own, never from within a request.
func (d *Stores) SetNotify(f func(dirRel string, changes []Change)) {
	d.mu.Lock()
	d.notify = f
	d.mu.Unlock()
}

// SetIndexingHook sets the function told when a store starts being
// indexed, before its records are parsed: Indexed has grown.
func (d *Stores) SetIndexingHook(f func()) {
	d.mu.Lock()
	d.onIndexing = f
	d.mu.Unlock()
}

// indexingStarted counts n records as indexed until done is called.
func (d *Stores) indexingStarted(n int64) (done func()) {
	d.indexing.Add(n)
	d.mu.Lock()
	f := d.onIndexing
	d.mu.Unlock()
	if f != nil {
		f()
	}
	return func() { d.indexing.Add(-n) }
}

func (d *Stores) notifyDocs(dirRel string, changes []Change) {
	d.mu.Lock()
	f := d.notify
	d.mu.Unlock()
	if f != nil {
		go f(dirRel, changes)
	}
}

// retireStore forgets a store whose files are gone: what it had not
// written back cannot be written any more.
func (d *Stores) retireStore(s *Store, why string) {
	d.mu.Lock()
	if d.docs[s.Rel()] == s {
		delete(d.docs, s.Rel())
	}
	d.mu.Unlock()
	d.pool.Discard(s)
	s.wbMu.Lock()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.closeFiles()
		d.rep.Logf("%s: store dropped: %s", s.rel, why)
	}
	s.mu.Unlock()
	s.wbMu.Unlock()
	// The kernel may hold its documents' names for long: the file
	// system looks at each again.
	d.notifyDocs(s.Rel(), nil)
}

// Remove turns an empty store back into a plain directory: its
// header.bin, body.bin and sidecar are removed (rmdir of the store, or
// unlink of its marker, once every document is gone).
func (d *Stores) Remove(s *Store) error {
	if err := s.checkWritable(MarkerName, "unlink"); err != nil {
		return err
	}
	s.mutMu.Lock()
	defer s.mutMu.Unlock()
	s.mu.RLock()
	n := s.live + len(s.creating)
	s.mu.RUnlock()
	if n > 0 {
		return engine.Refuse(s.Rel(), "remove", syscall.ENOTEMPTY, "the store still holds %d documents", n)
	}
	d.pool.Discard(s)
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	unlock, err := s.lockFiles(true, "remove")
	if err != nil {
		return err
	}
	defer unlock()
	if changed, _, _ := s.filesChanged(); changed {
		return engine.Refuse(s.Rel(), "remove", syscall.ENOTEMPTY, "another program wrote the store a moment ago; look at it again")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range []string{HeaderName, BodyName, MetaName, IndexName} {
		if err := unix.Unlinkat(s.dirFd(), n, 0); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%s: %w", filepath.Join(s.rel, n), err)
		}
	}
	unix.Fsync(s.dirFd())
	s.closed = true
	s.closeFiles()
	d.mu.Lock()
	delete(d.docs, s.rel)
	d.mu.Unlock()
	return nil
}

// Sync writes back every store's pending header changes and
// repairs their tails (after the pool's FlushAll).
func (d *Stores) Sync() error {
	var first error
	for _, s := range d.storeList() {
		if err := s.Settle(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Indexed is the number of document slots the open stores index (one
// per header record, and per document not yet written back), and the
// records of the stores being opened: what the memory they hold grows
// with.
func (d *Stores) Indexed() int {
	n := int(d.indexing.Load())
	for _, s := range d.storeList() {
		s.mu.RLock()
		n += len(s.slots)
		s.mu.RUnlock()
	}
	return n
}

func (d *Stores) storeList() []*Store {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Store, 0, len(d.docs))
	for _, s := range d.docs {
		out = append(out, s)
	}
	return out
}

// Close closes every store (after the final write-back), once the
// saved indexes being written are.
func (d *Stores) Close() error {
	d.saves.Wait()
	for _, s := range d.storeList() {
		s.wbMu.Lock()
		s.mu.Lock()
		if !s.closed {
			s.closed = true
			s.closeFiles()
		}
		s.mu.Unlock()
		s.wbMu.Unlock()
	}
	d.mu.Lock()
	clear(d.docs)
	d.mu.Unlock()
	if d.watch != nil {
		d.watch.close()
	}
	return nil
}

// renameStores follows a rename (or exchange) of two directories.
func (d *Stores) renameStores(from, to string, exchange bool) {
	if !exchange {
		d.moveStores(from, to)
		return
	}
	const tmp = "\x00exchange"
	d.moveStores(from, tmp)
	d.moveStores(to, from)
	d.moveStores(tmp, to)
}

// moveStores follows a rename of a directory: stores at or under from
// are now at or under to. They keep working through their open
// directory, whatever its name.
func (d *Stores) moveStores(from, to string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	moved := map[string]*Store{}
	for rel, s := range d.docs {
		if rel == from || strings.HasPrefix(rel, from+"/") {
			nrel := to + strings.TrimPrefix(rel, from)
			delete(d.docs, rel)
			moved[nrel] = s
			s.mu.Lock()
			s.rel = nrel
			s.mu.Unlock()
		}
	}
	for rel, s := range moved {
		d.docs[rel] = s
	}
	for rel := range d.badDocs {
		if rel == from || strings.HasPrefix(rel, from+"/") {
			delete(d.badDocs, rel)
		}
	}
}
