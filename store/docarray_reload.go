package store

import (
	"fmt"
	"hash/maphash"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// While mounted arrayfs is the only writer of a store (it holds the
// store's lock), but nothing stops a program that ignores the lock (the
// original Python code does not take it). Every directory operation
// first compares header.bin and body.bin with how arrayfs left them; if
// they changed, the store is reloaded as the original's reload() does,
// and the file system is told which documents changed so that it drops
// what the kernel caches of them.

// refreshEvery is how often a store compares its files with how it
// left them.
const refreshEvery = 50 * time.Millisecond

// DocChange is a document whose content or name changed behind
// arrayfs's back. Documents that are gone are not listed (their keys
// are not kept in memory): the file system checks the names it knows.
type DocChange struct {
	Name  string
	Ino   uint64
	Added bool // the name is new (not only the content changed)
}

// refresh reloads the store if its files changed behind our back. It
// reports whether the store is gone (its files or its directory
// replaced or removed): the dataset then forgets it.
func (s *DocStore) refresh() (gone bool) {
	// At most one look every refreshEvery: a listing of a big store
	// (a lookup per entry with READDIRPLUS) must not stat the files a
	// million times. The kernel caches names for longer anyway.
	t := time.Now().UnixNano()
	if last := s.lastCheck.Load(); t-last < int64(refreshEvery) || !s.lastCheck.CompareAndSwap(last, t) {
		return false
	}
	if !s.wbMu.TryLock() {
		return false // a write-back is changing the files right now
	}
	defer s.wbMu.Unlock()
	if s.closed {
		return true
	}
	var hs, bs, ds unix.Stat_t
	if unix.Fstatat(s.dirFd(), DocHeaderName, &hs, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		unix.Fstatat(s.dirFd(), DocBodyName, &bs, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		unix.Fstat(s.dirFd(), &ds) != nil {
		return true
	}
	if dp, err := s.ds.back.Lstat(s.Rel()); err != nil || ds.Ino != dp.Ino || ds.Dev != dp.Dev {
		return true
	}
	if sigOfUnix(&hs) == s.sigs[0] && sigOfUnix(&bs) == s.sigs[1] {
		return false
	}
	changes, err := s.reloadLocked()
	if err != nil {
		s.report(fmt.Sprintf("changed behind arrayfs's back and cannot be reloaded: %v", err))
		return true
	}
	s.ds.notifyDocs(s.Rel(), changes)
	return false
}

// reloadLocked re-reads the store from its files. New versions not yet
// written back are kept (by key); header changes not yet written back
// (deletions, renames) are dropped, as the original's reload() drops its
// buffer pool.
func (s *DocStore) reloadLocked() ([]DocChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Keys are not in memory and the header already changed: the old
	// state is matched by the hash of each key, which is in memory.
	oldByHash, oldCollide, oldSlots, oldExt := s.byHash, s.collide, s.slots, s.ext
	oldSlot := func(key string) (int32, bool) {
		if i, ok := oldCollide[key]; ok {
			return i, true
		}
		i, ok := oldByHash[maphash.String(s.seed, key)]
		return i, ok
	}
	keep := map[string]*docExtra{}
	for i, x := range s.ext {
		if s.slots[i].flags&fLive != 0 && (x.pending != nil || x.meta != nil || x.ino != 0) {
			x.key = s.keyOf(i)
			keep[x.key] = x
		}
	}
	dropped := len(s.recDirty)
	if err := s.reopenFilesLocked(); err != nil {
		return nil, err
	}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	s.gen++
	s.reloads++
	s.rewrite = false
	for key, x := range keep {
		if i := s.find(key); i >= 0 {
			x.slot = i
			s.ext[i] = x
			s.slots[i].flags |= fExt
			if x.ino != 0 {
				s.inoOwner[x.ino] = i
			}
		} else if x.pending != nil {
			s.placeDoc(s.placeNew(key), key, x)
		} else {
			continue
		}
		s.metaDirty[key] = true
	}
	if s.order != nil {
		s.setOrder(s.order)
	}
	s.orderChanged()
	msg := "header.bin or body.bin changed behind arrayfs's back (another program wrote the store while it was mounted): reloaded"
	if dropped > 0 {
		msg += fmt.Sprintf("; %d deletions or renames not yet written back were dropped", dropped)
	}
	s.ds.Logf("%s: %s", s.rel, msg)

	var changes []DocChange
	for _, d := range s.liveDocs() {
		ino := s.inoOf(d.slot, d.key)
		i, ok := oldSlot(d.key)
		switch {
		case !ok || int(i) >= len(oldSlots) || oldSlots[i].flags&fLive == 0:
			changes = append(changes, DocChange{Name: DocName(d.key), Ino: ino, Added: true})
		case oldSlots[i].loc() != s.slots[d.slot].loc() || (oldExt[i] != nil && oldExt[i].pending != nil):
			changes = append(changes, DocChange{Name: DocName(d.key), Ino: ino})
		}
	}
	return changes, nil
}

// reopenFilesLocked opens header.bin and body.bin again when they were
// replaced, and takes their new sizes.
func (s *DocStore) reopenFilesLocked() error {
	same := func(f *os.File, name string) (bool, *unix.Stat_t, error) {
		var a, b unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &a); err != nil {
			return false, nil, err
		}
		if err := unix.Fstatat(s.dirFd(), name, &b, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return false, nil, err
		}
		return a.Ino == b.Ino && a.Dev == b.Dev, &b, nil
	}
	hs, hst, err := same(s.header, DocHeaderName)
	if err != nil {
		return err
	}
	bs, bst, err := same(s.body.f, DocBodyName)
	if err != nil {
		return err
	}
	if hs && bs {
		s.sigs = [2]fileSig{sigOfUnix(hst), sigOfUnix(bst)}
		s.bodySize = bst.Size
		if err := s.hmap.Resize(hst.Size); err != nil {
			return err
		}
		return s.body.m.Resize(bst.Size)
	}
	oldHeader, oldHmap, oldBody := s.header, s.hmap, s.body
	if err := s.openFiles(); err != nil {
		return err
	}
	oldHmap.Close()
	oldHeader.Close()
	oldBody.unref()
	return nil
}
