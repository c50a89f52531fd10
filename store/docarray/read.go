package docarray

import (
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Reading a store: names to keys, listings, document versions.

// resolve turns a file name into the key it stands for, truncated to K.
func (s *Store) resolve(name string) (string, error) {
	if isHashedName(name) {
		if key, ok := s.hashed[name]; ok {
			return key, nil
		}
		if key, ok := s.hashedInOrder(name); ok {
			return key, nil
		}
		return "", syscall.ENOENT
	}
	key, ok := KeyOfName(name)
	if !ok {
		return "", engine.Refuse(filepath.Join(s.rel, name), "lookup", syscall.EINVAL, "%s", badDocName(name))
	}
	return truncateKey(key, s.k), nil
}

func (s *Store) hashedInOrder(name string) (string, bool) {
	for _, k := range s.order {
		if NameOfKey(k) == name {
			return k, true
		}
	}
	return "", false
}

// Lookup finds the document a file name stands for.
func (s *Store) Lookup(name string) (Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	key, err := s.resolve(name)
	if err != nil {
		return Entry{}, err
	}
	if i := s.find(key); i >= 0 {
		return s.entry(i, key), nil
	}
	if nd := s.creating[key]; nd != nil {
		return nd.entry(), nil
	}
	return Entry{}, syscall.ENOENT
}

// List returns every document in store order (the order of dam[i]),
// then the documents being created.
func (s *Store) List() []Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Entry, 0, s.live+len(s.creating))
	var kbuf []byte
	emit := func(i int32, key string) {
		out = append(out, Entry{Name: NameOfKey(key), Key: key, Ino: s.inoOf(i, key)})
	}
	// Keys on disk are decoded in one pass over the header; the rest
	// come from the overlays.
	_ = s.scanRecords(0, s.nrec, func(i int, rec []byte) {
		sl := &s.slots[i]
		if sl.flags&fLive == 0 {
			return
		}
		if sl.flags&fKeyDisk != 0 {
			kbuf = appendKey(kbuf[:0], rec, s.k)
			emit(int32(i), string(kbuf))
		} else {
			emit(int32(i), s.ext[int32(i)].key)
		}
	})
	for i := s.nrec; i < len(s.slots); i++ {
		if s.slots[i].flags&fLive != 0 {
			emit(int32(i), s.ext[int32(i)].key)
		}
	}
	for _, nd := range s.creating {
		out = append(out, Entry{Name: NameOfKey(nd.key), Key: nd.key, Ino: nd.ino, Scratch: nd.isScratch})
	}
	return out
}

// Len is the number of live documents.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.live
}

// A Reader is one version of a document, fixed when it was opened:
// later changes make new versions and do not disturb it (like a file
// replaced by rename).
type Reader struct {
	data []byte
	body *bodyFile
	loc  docLoc
}

// Size is the document's size.
func (r *Reader) Size() int64 {
	if r.body == nil {
		return int64(len(r.data))
	}
	return r.loc.size
}

// View returns bytes [off, off+n) of the document, pinned: the slice is
// the mapping of body.bin itself (or the pending version), no copy.
func (r *Reader) View(off int64, n int) engine.View {
	size := r.Size()
	if off < 0 || off >= size || n <= 0 {
		return engine.View{}
	}
	n = int(min(int64(n), size-off))
	if r.body == nil {
		return engine.View{Bytes: r.data[off : off+int64(n) : off+int64(n)]}
	}
	return r.body.m.View(r.loc.start+off, n)
}

// Bytes copies the whole document (for a writer that starts from it).
func (r *Reader) Bytes() ([]byte, error) {
	if r.body == nil {
		return append([]byte(nil), r.data...), nil
	}
	b := make([]byte, r.loc.size)
	n, err := r.body.m.ReadAt(b, r.loc.start)
	if err == nil && int64(n) != r.loc.size {
		err = fmt.Errorf("%s: short read at %d", BodyName, r.loc.start)
	}
	return b, err
}

// Release lets go of the version.
func (r *Reader) Release() {
	if r.body != nil {
		r.body.unref()
		r.body = nil
	}
}

// Open returns a reader of the current version of the document name.
func (s *Store) Open(name string) (*Reader, Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	key, err := s.resolve(name)
	if err != nil {
		return nil, Entry{}, err
	}
	if i := s.find(key); i >= 0 {
		return s.readerLocked(i), s.entry(i, key), nil
	}
	if nd := s.creating[key]; nd != nil {
		return &Reader{data: nd.scratch}, nd.entry(), nil
	}
	return nil, Entry{}, syscall.ENOENT
}

func (s *Store) readerLocked(i int32) *Reader {
	if x := s.ext[i]; x != nil && x.pending != nil {
		return &Reader{data: x.pending.data}
	}
	return &Reader{body: s.body.ref(), loc: s.slots[i].loc()}
}

// A ListingVersion changes whenever List's answer may have: with the
// store's version (every change of a document on disk or in the pool,
// every reload), a fingerprint of the documents being created, which
// come and go without one.
type ListingVersion struct {
	store    StoreVersion
	creating uint64
}

// ListingVersion is the version of the store's listing now.
func (s *Store) ListingVersion() ListingVersion {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := ListingVersion{store: s.versionLocked(), creating: uint64(len(s.creating))}
	for key, nd := range s.creating {
		v.creating += foldMul(hashOfKeyString(0, key)^nd.ino, 0x9e3779b97f4a7c15) // order-free: a sum
	}
	return v
}
