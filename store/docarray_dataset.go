package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Document stores of a dataset: recognised by name (a directory holding
// header.bin and body.bin) each time a directory is used, so that a
// directory becomes a store the moment a marker makes one there.

// DocStore returns the store directory dirRel is, or nil when it is a
// plain directory, a store that cannot be served (reported once, then
// shown as plain files), or one that cannot be read (DocStoreErr).
func (d *Dataset) DocStore(dirRel string) *DocStore {
	s, _ := d.DocStoreErr(dirRel)
	return s
}

// DocStoreErr is DocStore that tells a store whose files cannot be read
// (permission denied, an I/O error, a lock held too long) from a plain
// directory: its error is what the directory's operations answer, rather
// than showing header.bin and body.bin as plain files.
func (d *Dataset) DocStoreErr(dirRel string) (*DocStore, error) {
	d.mu.Lock()
	s := d.docs[dirRel]
	d.mu.Unlock()
	if s != nil {
		if !s.refresh() {
			return s, nil
		}
		d.retireStore(s, "its files were replaced or removed behind arrayfs's back")
	}
	if !d.back.IsRegular(filepath.Join(dirRel, DocHeaderName)) || !d.back.IsRegular(filepath.Join(dirRel, DocBodyName)) {
		return nil, nil
	}
	d.openMu.Lock()
	defer d.openMu.Unlock()
	s, err := d.openStoreLocked(dirRel)
	if err != nil {
		d.Report(Problem{Path: dirRel, Reason: "cannot be read: " + err.Error()})
		return nil, &Error{Path: dirRel, Op: "open", Reason: "the store cannot be read: " + err.Error(), Errno: ErrnoOf(err)}
	}
	return s, nil
}

// storeSig identifies the files of a store that could not be served, so
// that it is not parsed again until they change.
func storeSig(back *Backing, dirRel string) [2]fileSig {
	var sig [2]fileSig
	for i, n := range []string{DocHeaderName, DocBodyName} {
		if st, err := back.Lstat(filepath.Join(dirRel, n)); err == nil {
			sig[i] = sigOf(&st.Stat_t)
		}
	}
	return sig
}

func (d *Dataset) openStoreLocked(dirRel string) (*DocStore, error) {
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
	s, err := openDocStore(d, dirRel, d.cfg)
	if err != nil {
		var sp *errStoreProblem
		if errors.As(err, &sp) {
			// Not a store arrayfs can serve: plain files until the files
			// change. (A store that cannot be read, EACCES or EIO, is
			// tried again at every access: its error is the answer.)
			d.badDocs[dirRel] = sig
			d.Report(Problem{Path: dirRel, Reason: sp.reason + "; served as plain files"})
			return nil, nil
		}
		return nil, err
	}
	delete(d.badDocs, dirRel)
	d.mu.Lock()
	d.docs[dirRel] = s
	d.mu.Unlock()
	return s, nil
}

// SetDocNotify sets the function told about documents changed behind
// arrayfs's back (the file system drops the kernel's caches of them). It
// is called from a goroutine of its own, never from within a request.
func (d *Dataset) SetDocNotify(f func(dirRel string, changes []DocChange)) {
	d.mu.Lock()
	d.docNotify = f
	d.mu.Unlock()
}

func (d *Dataset) notifyDocs(dirRel string, changes []DocChange) {
	d.mu.Lock()
	f := d.docNotify
	d.mu.Unlock()
	if f != nil {
		go f(dirRel, changes)
	}
}

// retireStore forgets a store whose files are gone: what it had not
// written back cannot be written any more.
func (d *Dataset) retireStore(s *DocStore, why string) {
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
		d.Logf("%s: store dropped: %s", s.rel, why)
	}
	s.mu.Unlock()
	s.wbMu.Unlock()
}

// RemoveDocStore turns an empty store back into a plain directory: its
// header.bin, body.bin and sidecar are removed (rmdir of the store, or
// unlink of its marker, once every document is gone).
func (d *Dataset) RemoveDocStore(s *DocStore) error {
	if err := s.checkWritable(DocMarkerName, "unlink"); err != nil {
		return err
	}
	s.mutMu.Lock()
	defer s.mutMu.Unlock()
	s.mu.RLock()
	n := s.live + len(s.creating)
	s.mu.RUnlock()
	if n > 0 {
		return refuse(s.Rel(), "remove", syscall.ENOTEMPTY, "the store still holds %d documents", n)
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
		return refuse(s.Rel(), "remove", syscall.ENOTEMPTY, "another program wrote the store a moment ago; look at it again")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range []string{DocHeaderName, DocBodyName, DocMetaName} {
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

// syncStores writes back every store's pending header changes and
// repairs their tails (after the pool's FlushAll).
func (d *Dataset) syncStores() error {
	var first error
	for _, s := range d.storeList() {
		if err := s.Settle(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (d *Dataset) storeList() []*DocStore {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*DocStore, 0, len(d.docs))
	for _, s := range d.docs {
		out = append(out, s)
	}
	return out
}

// closeStores closes every store (after the final write-back).
func (d *Dataset) closeStores() {
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
}

// renameStores follows a rename (or exchange) of two directories.
func (d *Dataset) renameStores(from, to string, exchange bool) {
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
func (d *Dataset) moveStores(from, to string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	moved := map[string]*DocStore{}
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
