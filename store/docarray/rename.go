package docarray

import (
	"path/filepath"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Renames within a store and between stores, and attribute changes.

// Rename renames document from to to within the store (flags are
// renameat2's). Onto an existing document, the moved one takes its
// place in the order (as an editor's or rsync's temp-file-and-rename
// replaces a file); a plain rename keeps the document where it is,
// unless an adopted order reserves a place for the new key.
func (s *Store) Rename(from, to string, flags uint) error {
	if err := s.checkWritable(from, "rename"); err != nil {
		return err
	}
	if flags&^uint(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	s.mutMu.RLock()
	s.mu.Lock()
	err := s.renameLocked(from, to, flags)
	s.mu.Unlock()
	s.mutMu.RUnlock()
	if err != nil {
		return err
	}
	s.entryChanged()
	return s.markHeaderDirty()
}

func (s *Store) renameLocked(from, to string, flags uint) error {
	k1, err := s.resolve(from)
	if err != nil {
		return err
	}
	k2, err := s.resolve(to)
	if err == syscall.ENOENT {
		return engine.Refuse(filepath.Join(s.rel, to), "rename", syscall.EINVAL, "a shortened name (ending in %%#…) cannot name a new key")
	}
	if err != nil {
		return err
	}
	if s.find(k1) >= 0 {
		// A header change, to apply again after a reload.
		s.touchKey(k1)
		s.touchKey(k2)
	}
	err = s.renameKeysLocked(k1, k2, flags)
	if err == nil && k1 != k2 {
		s.changedLocked(k2)
		if flags&unix.RENAME_EXCHANGE != 0 {
			s.changedLocked(k1)
		}
	}
	if err == nil && s.find(k2) >= 0 {
		s.journalOp(docOp{kind: opRename, key: k1, to: k2, flags: flags})
	}
	return err
}

// changedLocked notes a change of key's document now (its ctime): a
// rename, as ext4 notes one. s.mu held.
func (s *Store) changedLocked(key string) {
	if i := s.find(key); i >= 0 {
		x := s.extFor(i)
		m := s.metaOf(i)
		m.changed()
		x.meta = &m
		s.metaDirty[key] = true
	} else if nd := s.creating[key]; nd != nil {
		nd.meta.changed()
	}
}

// renameKeysLocked renames key k1 to k2 (see Rename). s.mu held.
func (s *Store) renameKeysLocked(k1, k2 string, flags uint) error {
	from := NameOfKey(k1)
	i1, i2 := s.find(k1), s.find(k2)
	var nd1, nd2 *newDoc
	if i1 < 0 {
		if nd1 = s.creating[k1]; nd1 == nil {
			return syscall.ENOENT
		}
	}
	if i2 < 0 {
		nd2 = s.creating[k2]
	}
	if k1 == k2 {
		return nil
	}
	exists := i2 >= 0 || nd2 != nil
	if flags&unix.RENAME_NOREPLACE != 0 && exists {
		return syscall.EEXIST
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		switch {
		case !exists:
			return syscall.ENOENT
		case i1 >= 0 && i2 >= 0:
			s.swapKeys(i1, i2)
		case nd1 != nil && nd2 != nil:
			nd1.key, nd2.key = k2, k1
			s.creating[k1], s.creating[k2] = nd2, nd1
		default:
			return engine.Refuse(filepath.Join(s.rel, from), "rename", syscall.EINVAL, "cannot exchange a document with one still being written")
		}
		return nil
	}
	if nd2 != nil {
		delete(s.creating, k2)
	}
	if nd1 != nil {
		if i2 >= 0 {
			s.clearDoc(i2)
		}
		delete(s.creating, k1)
		nd1.key = k2
		s.creating[k2] = nd1
		s.popTrailing()
		return nil
	}
	switch {
	case i2 >= 0:
		s.clearDoc(i2)
		s.moveDoc(i1, i2)
		s.renameInPlace(i2, k2)
	default:
		if r, ok := s.orderRank[k2]; ok && r != i1 && s.slotFree(r) {
			s.moveDoc(i1, r)
			i1 = r
		}
		s.renameInPlace(i1, k2)
	}
	s.popTrailing()
	return nil
}

// swapKeys exchanges the names of two documents (RENAME_EXCHANGE).
func (s *Store) swapKeys(i1, i2 int32) {
	k1, k2 := s.keyOf(i1), s.keyOf(i2)
	ino1, ino2 := s.inoOf(i1, k1), s.inoOf(i2, k2)
	s.detachKey(i1, k1)
	s.detachKey(i2, k2)
	s.attachKey(i1, k2, ino1)
	s.attachKey(i2, k1, ino2)
	s.metaDirty[k1], s.metaDirty[k2] = true, true
	s.orderChanged()
}

// MoveTo moves document from of s to name to of store dst (a rename
// between two stores): dst gets it with its metadata and, when free
// there, its inode number; then s deletes it.
func (s *Store) MoveTo(dst *Store, from, to string, flags uint) error {
	if err := s.checkWritable(from, "rename"); err != nil {
		return err
	}
	if err := dst.checkWritable(to, "rename"); err != nil {
		return err
	}
	if flags&unix.RENAME_EXCHANGE != 0 || flags&^uint(unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL
	}
	r, e, err := s.Open(from)
	if err != nil {
		return err
	}
	data, err := r.Bytes()
	r.Release()
	if err != nil {
		return err
	}
	if e.Scratch {
		return engine.Refuse(filepath.Join(s.Rel(), from), "rename", syscall.EINVAL, "a marker under a temporary name can only be renamed onto %s in its own store", MarkerName)
	}
	meta := e.Meta
	meta.changed()
	if err := dst.insert(to, data, meta, e.Ino, flags&unix.RENAME_NOREPLACE != 0); err != nil {
		return err
	}
	return s.Remove(from)
}

// insert puts a whole document (moved from another store) under name,
// replacing one there in its place.
func (s *Store) insert(name string, data []byte, meta Meta, ino uint64, noReplace bool) error {
	if verr := ValidateDocument(data); verr != nil {
		return engine.Refuse(filepath.Join(s.Rel(), name), "rename", syscall.EINVAL, "refused: not a DocumentProto (%v)", verr)
	}
	key, unlock, err := s.lockName(name)
	if err != nil {
		return err
	}
	at := s.placeNew(key)
	if i := s.find(key); i >= 0 {
		if noReplace {
			unlock()
			return syscall.EEXIST
		}
		s.touchKey(key)
		s.clearDoc(i)
		at = i
	}
	s.touchKey(key)
	if nd := s.creating[key]; nd != nil {
		if noReplace {
			unlock()
			return syscall.EEXIST
		}
		delete(s.creating, key)
	}
	x := &docExtra{meta: &meta}
	if s.inoInUse(ino) || ino == 0 {
		ino = s.freshIno(key)
	}
	if ino != docIno(s.id, key) {
		x.ino = ino
	}
	s.placeDoc(at, key, x)
	v := newVersion(x, data)
	x.pending = v
	s.metaDirty[key] = true
	s.popTrailing()
	unlock()
	s.entryChanged()
	if err := s.ds.pool.MarkDirty(&engine.Unit{Owner: s, Key: s.unitKey(ino), Size: int64(len(data)), Value: v}); err != nil {
		return err
	}
	return s.markHeaderDirty()
}

// AttrChange is a chmod, chown or utimes of a document.
type AttrChange struct {
	Mode  *uint32
	UID   *uint32
	GID   *uint32
	Mtime *int64
	Atime *int64
}

func (c AttrChange) apply(m *Meta) {
	if c != (AttrChange{}) {
		m.changed()
	}
	if c.Mode != nil {
		m.Mode = *c.Mode & 0o7777
	}
	if c.UID != nil {
		m.UID = *c.UID
	}
	if c.GID != nil {
		m.GID = *c.GID
	}
	if c.Mtime != nil {
		m.Mtime = *c.Mtime
	}
	if c.Atime != nil {
		m.Atime = *c.Atime
	}
}

// ApplyAttr applies c to m.
func ApplyAttr(m *Meta, c AttrChange) { c.apply(m) }

// SetAttr changes a document's mode, owner or mtime.
func (s *Store) SetAttr(name string, c AttrChange) (Entry, error) {
	if err := s.checkWritable(name, "setattr"); err != nil {
		return Entry{}, err
	}
	s.mutMu.RLock()
	s.mu.Lock()
	var e Entry
	key, err := s.resolve(name)
	if err == nil {
		if i := s.find(key); i >= 0 {
			x := s.extFor(i)
			m := s.metaOf(i)
			c.apply(&m)
			x.meta = &m
			s.metaDirty[key] = true
			e = s.entry(i, key)
		} else if nd := s.creating[key]; nd != nil {
			c.apply(&nd.meta)
			e = nd.entry()
			err = errNoHeaderChange
		} else {
			err = syscall.ENOENT
		}
	}
	s.mu.Unlock()
	s.mutMu.RUnlock()
	if err == errNoHeaderChange {
		return e, nil
	}
	if err != nil {
		return Entry{}, err
	}
	return e, s.markHeaderDirty()
}
