package docarray

import (
	"errors"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Changes to documents. Each takes effect in memory at once (reads and
// listings see it) and reaches the files at the next write-back: a new
// version is a pool unit of its own; tombstones, renames and metadata
// ride on the store's header unit.

// applySidecar takes the store's identity, adopted order and per-document
// metadata from a replayed sidecar.
func (s *Store) applySidecar(sc *sidecarState) {
	if sc.id != 0 {
		s.id = sc.id
	} else {
		s.id = newStoreID()
		s.storeDirty = true
	}
	if sc.base != 0 {
		s.base.Mtime = sc.base
	}
	if sc.marker != nil {
		s.marker = *sc.marker
	} else {
		s.marker = s.base
	}
	if len(sc.order) > 0 {
		s.setOrder(sc.order)
	}
	for key, d := range sc.docs {
		i := s.find(key)
		if i < 0 {
			continue
		}
		x := s.extFor(i)
		x.key = key
		m := d.meta
		x.meta = &m
		if d.ino != 0 && d.ino != docIno(s.id, key) {
			x.ino = d.ino
			s.inoOwner[d.ino] = i
		}
	}
}

// compactSidecar rewrites the sidecar with one line per thing it says.
func (s *Store) compactSidecar() error {
	var b []byte
	b = append(b, encodeStoreLine(s.id, s.k, s.base.Mtime)...)
	b = append(b, encodeMarkerLine(s.marker)...)
	if s.order != nil {
		b = append(b, encodeOrderLine(s.order)...)
	}
	for i, x := range s.ext {
		if s.slots[i].flags&fLive != 0 && (x.meta != nil || x.ino != 0) {
			b = append(b, encodeDocLine(s.keyOf(i), s.metaOf(i), x.ino)...)
		}
	}
	if err := writeFileAt(s.dirFd(), MetaName, b, 0o644); err != nil {
		return err
	}
	s.storeDirty = false
	return nil
}

func (s *Store) checkWritable(name, op string) error {
	if s.readOnly {
		return engine.Refuse(filepath.Join(s.rel, name), op, syscall.EROFS, "read-only mount")
	}
	return nil
}

// markHeaderDirty puts the header unit in the pool. Call it without s.mu.
func (s *Store) markHeaderDirty() error {
	return s.ds.pool.MarkDirty(s.headerUnit())
}

func (s *Store) growSlots(n int32) {
	for int32(len(s.slots)) < n {
		s.slots = append(s.slots, slot{})
	}
}

// popTrailing drops free slots past the end of header.bin, so that the
// next new document does not leave a run of tombstones behind.
func (s *Store) popTrailing() {
	for len(s.slots) > s.nrec && s.slots[len(s.slots)-1].flags&(fLive|fShadow|fBad|fRecLive) == 0 {
		s.slots = s.slots[:len(s.slots)-1]
		delete(s.recDirty, int32(len(s.slots)))
	}
}

func (s *Store) slotFree(i int32) bool {
	return int(i) >= len(s.slots) || s.slots[i].flags&(fLive|fShadow|fBad) == 0
}

// placeNew chooses the slot of a new document: its rank when an adopted
// order lists it, else after everything (and after the reserved ranks).
func (s *Store) placeNew(key string) int32 {
	if r, ok := s.orderRank[key]; ok && s.slotFree(r) {
		return r
	}
	return int32(max(len(s.slots), len(s.order)))
}

func (s *Store) orderFill(i int32, key string, delta int) {
	if int(i) < len(s.order) && s.order[i] == key {
		s.orderFilled += delta
	}
}

// placeDoc puts document x, named key, in free slot i.
func (s *Store) placeDoc(i int32, key string, x *docExtra) {
	s.growSlots(i + 1)
	sl := &s.slots[i]
	sl.flags = sl.flags&fRecLive | fLive | fExt
	sl.start, sl.size = 0, 0
	x.slot, x.key = i, key
	s.ext[i] = x
	if x.ino != 0 {
		s.inoOwner[x.ino] = i
	}
	s.indexKey(key, i)
	s.orderFill(i, key, +1)
	s.recDirty[i] = struct{}{}
	s.live++
	s.orderChanged()
}

// detach takes the document out of slot i, leaving a tombstone to write
// if a record is there, and returns what it keeps (key, bytes, extra).
func (s *Store) detach(i int32) (key string, x *docExtra, written bool, l docLoc) {
	sl := &s.slots[i]
	key = s.keyOf(i)
	x = s.ext[i]
	if x == nil {
		x = &docExtra{}
	}
	x.key = key
	written, l = sl.flags&fWritten != 0, sl.loc()
	s.unindexKey(key, i)
	s.orderFill(i, key, -1)
	if x.ino != 0 {
		delete(s.inoOwner, x.ino)
	}
	delete(s.ext, i)
	sl.flags &^= fLive | fWritten | fKeyDisk | fExt
	if sl.flags&fRecLive != 0 {
		s.recDirty[i] = struct{}{}
	}
	// Shadows of the key would bring the old bytes back in docarray.
	for _, d := range s.dups[i] {
		s.slots[d].flags &^= fShadow | fKeyDisk
		s.recDirty[d] = struct{}{}
	}
	delete(s.dups, i)
	s.live--
	s.orderChanged()
	return key, x, written, l
}

// clearDoc deletes the document in slot i.
func (s *Store) clearDoc(i int32) {
	key, x, _, _ := s.detach(i)
	x.pending = nil // a version still in the pool is skipped at write-back
	s.metaDirty[key] = true
}

// moveDoc moves the document in slot from to free slot to, keeping its
// key, bytes, pending version, metadata and inode number.
func (s *Store) moveDoc(from, to int32) {
	key, x, written, l := s.detach(from)
	s.placeDoc(to, key, x)
	if written {
		sl := &s.slots[to]
		sl.start, sl.size = l.start, l.size
		sl.flags |= fWritten
	}
}

// lockName takes the locks a change of one document needs and resolves
// its name to a key; unlock releases them (already done on error).
func (s *Store) lockName(name string) (key string, unlock func(), err error) {
	s.mutMu.RLock()
	s.mu.Lock()
	unlock = func() { s.mu.Unlock(); s.mutMu.RUnlock() }
	if key, err = s.resolve(name); err != nil {
		unlock()
		return "", nil, err
	}
	return key, unlock, nil
}

// renameInPlace gives the document in slot i the key to, keeping its
// inode number.
func (s *Store) renameInPlace(i int32, to string) {
	old := s.keyOf(i)
	ino := s.inoOf(i, old)
	s.detachKey(i, old)
	s.attachKey(i, to, ino)
	s.metaDirty[old] = true
	s.metaDirty[to] = true
	s.orderChanged()
}

// detachKey takes the key of slot i out of the key index, the order and
// the inode table, before the slot gets another key.
func (s *Store) detachKey(i int32, old string) {
	x := s.extFor(i)
	x.key = old
	s.unindexKey(old, i)
	s.orderFill(i, old, -1)
	if x.ino != 0 {
		delete(s.inoOwner, x.ino)
	}
	s.slots[i].flags &^= fKeyDisk
}

// attachKey gives slot i the key and inode number, marks its header
// record dirty, and lets records that shadowed it show again.
func (s *Store) attachKey(i int32, key string, ino uint64) {
	x := s.extFor(i)
	x.key, x.ino = key, 0
	if ino != docIno(s.id, key) {
		x.ino = ino
		s.inoOwner[ino] = i
	}
	s.indexKey(key, i)
	s.orderFill(i, key, +1)
	s.recDirty[i] = struct{}{}
	for _, d := range s.dups[i] {
		s.slots[d].flags &^= fShadow | fKeyDisk
		s.recDirty[d] = struct{}{}
	}
	delete(s.dups, i)
}

// entryChanged moves the store directory's mtime and ctime, as a
// directory's move when an entry comes, goes or is renamed: at a create,
// a removal, a rename, a document moved in, not when the store reloads
// what another program changed. Through the directory the store holds
// open, whatever its name leads to now.
func (s *Store) entryChanged() {
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	if err := unix.UtimesNanoAt(s.dirFd(), "", now, unix.AT_EMPTY_PATH); err != nil {
		s.report("its directory's times cannot be moved: " + err.Error())
	}
}

// orderChanged notes that the list of keys (the marker's order) changed.
func (s *Store) orderChanged() {
	s.orderGen++
	s.marker.Mtime = now()
	s.marker.Ctime = s.marker.Mtime
	s.markerDirty = true
}

// freshIno is an inode number for a new document named key: the key's
// default unless a renamed document took it.
func (s *Store) freshIno(key string) uint64 {
	ino := docIno(s.id, key)
	for s.inoInUse(ino) {
		ino = inoSpace(ino*1099511628211 + 1)
	}
	return ino
}

func (s *Store) inoInUse(ino uint64) bool {
	if _, ok := s.inoOwner[ino]; ok {
		return true
	}
	for _, nd := range s.creating {
		if nd.ino == ino {
			return true
		}
	}
	return false
}

// Create makes name a new document (not yet in the store: it becomes
// one when its content is committed), or returns the existing one.
func (s *Store) Create(name string, meta Meta, excl bool) (Entry, bool, error) {
	if err := s.checkWritable(name, "create"); err != nil {
		return Entry{}, false, err
	}
	s.mutMu.RLock()
	defer s.mutMu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	key, err := s.resolve(name)
	if err == syscall.ENOENT {
		return Entry{}, false, engine.Refuse(filepath.Join(s.rel, name), "create", syscall.EINVAL,
			"a shortened name (ending in %%#…) names an existing long key; a new one cannot be made from it")
	}
	if err != nil {
		return Entry{}, false, err
	}
	if i := s.find(key); i >= 0 {
		if excl {
			return Entry{}, false, syscall.EEXIST
		}
		return s.entry(i, key), false, nil
	}
	if nd := s.creating[key]; nd != nil {
		if excl {
			return Entry{}, false, syscall.EEXIST
		}
		return nd.entry(), false, nil
	}
	nd := &newDoc{key: key, meta: meta}
	nd.ino = s.freshIno(key)
	s.creating[key] = nd
	s.entryChanged()
	return nd.entry(), true, nil
}

// Abandon drops a document created and never committed (its creator
// closed it after a refused write).
func (s *Store) Abandon(name string, ino uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key, err := s.resolve(name)
	if err != nil {
		return
	}
	if nd := s.creating[key]; nd != nil && nd.ino == ino && !nd.isScratch {
		delete(s.creating, key)
	}
}

// Commit makes data the new content of the document name (inode ino),
// if it is a valid DocumentProto; otherwise it refuses with EINVAL and
// changes nothing. A document created under a temporary name may
// instead hold a .docarray marker until it is renamed onto the marker.
// A document removed meanwhile takes the data nowhere, as a write to an
// unlinked file does.
func (s *Store) Commit(name string, ino uint64, data []byte) error {
	return s.CommitAt(name, ino, data, 0)
}

// CommitAt is Commit with the new version's mtime (0: now): the one its
// writer set after its last write (cp -p and rsync set it before the
// close that commits).
func (s *Store) CommitAt(name string, ino uint64, data []byte, mtime int64) error {
	if err := s.checkWritable(name, "write"); err != nil {
		return err
	}
	verr := ValidateDocument(data)
	key, unlock, err := s.lockName(name)
	if err != nil {
		return err
	}
	i := s.find(key)
	var nd *newDoc
	switch {
	case i >= 0 && s.inoOf(i, key) == ino:
	case s.creating[key] != nil && s.creating[key].ino == ino:
		nd, i = s.creating[key], -1
	default:
		j, ok := s.inoOwner[ino]
		if !ok || s.slots[j].flags&fLive == 0 {
			unlock()
			return nil
		}
		i, key = j, s.keyOf(j)
	}
	if verr != nil {
		if nd != nil {
			if _, perr := parseMarker(data); perr == nil {
				nd.scratch, nd.isScratch = data, true
				unlock()
				return nil
			}
		}
		unlock()
		return engine.Refuse(filepath.Join(s.rel, name), "close", syscall.EINVAL,
			"refused: not a DocumentProto (%v); nothing was written, the previous content is kept", verr)
	}
	s.touchKey(key)
	var x *docExtra
	if nd != nil {
		delete(s.creating, key)
		x = &docExtra{}
		if nd.ino != docIno(s.id, key) {
			x.ino = nd.ino
		}
		m := nd.meta
		x.meta = &m
		s.placeDoc(s.placeNew(key), key, x)
	} else {
		x = s.extFor(i)
		m := s.metaOf(i)
		x.meta = &m
	}
	x.meta.Mtime = now()
	x.meta.Ctime = x.meta.Mtime
	if mtime != 0 {
		x.meta.Mtime = mtime
	}
	v := newVersion(x, data)
	x.pending = v
	s.metaDirty[key] = true
	ino = s.inoOf(x.slot, key)
	unlock()
	if err := s.ds.pool.MarkDirty(&engine.Unit{Owner: s, Key: s.unitKey(ino), Size: int64(len(data)), Value: v}); err != nil {
		return &engine.Error{Path: filepath.Join(s.Rel(), name), Op: "write", Reason: err.Error(), Errno: syscall.EIO}
	}
	return nil
}

// Remove deletes the document name: a tombstone at the next write-back.
func (s *Store) Remove(name string) error {
	if err := s.checkWritable(name, "unlink"); err != nil {
		return err
	}
	s.mutMu.RLock()
	s.mu.Lock()
	key, err := s.resolve(name)
	if err == nil {
		if i := s.find(key); i >= 0 {
			s.touchKey(key)
			s.clearDoc(i)
			s.popTrailing()
			s.journalOp(docOp{kind: opRemove, key: key})
		} else if nd := s.creating[key]; nd != nil {
			delete(s.creating, key)
			err = errNoHeaderChange
		} else {
			err = syscall.ENOENT
		}
	}
	s.mu.Unlock()
	s.mutMu.RUnlock()
	if err == nil || err == errNoHeaderChange {
		s.entryChanged()
	}
	if err == errNoHeaderChange {
		return nil
	}
	if err != nil {
		return err
	}
	return s.markHeaderDirty()
}

// errNoHeaderChange: the change touched only a document being created.
var errNoHeaderChange = errors.New("no header change")
