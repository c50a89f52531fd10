package docarray

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Other programs (the original DocumentArrayMemmap above all) may write
// a store while it is mounted (lock.go). Every directory
// operation, at most every refreshEvery, and every write-back first
// compares header.bin and body.bin with how arrayfs left them; if they
// changed, the store is reloaded, as the original's reload() does, with
// the mount's changes not yet written applied again on top
// (journal.go), and the file system is told which documents
// changed so that it drops what the kernel caches of them.

// refreshEvery is how often a store compares its files with how it
// left them (before every write of them, it always does).
const refreshEvery = 50 * time.Millisecond

// Change is a document whose content or name changed behind
// arrayfs's back. Documents that are gone are not listed (their keys
// are not kept in memory): the file system checks the names it knows.
type Change struct {
	Name  string
	Ino   uint64
	Added bool // the name is new (not only the content changed)
}

// refresh reloads the store if its files changed behind our back. It
// reports whether the store is gone (its directory replaced or removed):
// the dataset then forgets it. Files missing for a moment (the
// original's prune removes and copies them) are looked at again later.
func (s *Store) refresh() (gone bool) {
	// At most one look every refreshEvery: a listing of a big store
	// (a lookup per entry with READDIRPLUS) must not stat the files a
	// million times. The kernel caches names for longer anyway.
	t := time.Now().UnixNano()
	if last := s.lastCheck.Load(); t-last < int64(refreshEvery) || !s.lastCheck.CompareAndSwap(last, t) {
		return false
	}
	gone, _ = s.recheck()
	return gone
}

// recheck is refresh without its rate limit (the watcher's, told that
// the files changed). It is not settled when the files could not be
// looked at now (a write-back, or another program, is writing them):
// the caller looks again later.
func (s *Store) recheck() (gone, settled bool) {
	if !s.wbMu.TryLock() {
		return false, false // a write-back is changing the files right now
	}
	repair := false
	defer func() {
		s.wbMu.Unlock()
		if repair {
			// Outside wbMu: the pool may write back at once.
			s.markHeaderDirty()
		}
	}()
	if s.closed {
		return true, true
	}
	var ds unix.Stat_t
	if unix.Fstat(s.dirFd(), &ds) != nil {
		return true, true
	}
	if dp, err := s.ds.back.Lstat(s.Rel()); err != nil || ds.Ino != dp.Ino || ds.Dev != dp.Dev {
		return true, true
	}
	if changed, missing, _ := s.filesChanged(); !changed || missing {
		return false, !missing
	}
	unlock, ok := s.tryLockShared()
	if !ok {
		return false, false // being written right now: look again later
	}
	defer unlock()
	changed, missing, now := s.filesChanged()
	if !changed || missing {
		return false, !missing
	}
	changes, err := s.reloadLocked(now)
	if err != nil {
		s.report(fmt.Sprintf("changed behind arrayfs's back and cannot be reloaded: %v", err))
		return false, true
	}
	s.ds.notifyDocs(s.Rel(), changes)
	s.mu.RLock() // the journal changes under requests' writes
	repair = !s.readOnly && (s.tailUnsafe || s.headerTrailing || len(s.journal) > 0 || s.replayed)
	s.mu.RUnlock()
	return false, true
}

// reloadLocked re-reads the store from its files, which another program
// changed (their signatures now are now), and applies again every change
// of the mount not yet written (journal.go): new versions,
// metadata and inode numbers by key, deletions, renames and adopted
// orders by replaying them. s.wbMu held, and the store's lock.
func (s *Store) reloadLocked(now [2]engine.FileSig) ([]Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Keys are not in memory and the header already changed: the old
	// state is matched by the hash of each key, which is in memory.
	oldByHash, oldCollide, oldSlots, oldExt := s.byHash, s.collide, s.slots, s.ext
	oldSlot := func(key string) (int32, bool) {
		if i, ok := oldCollide[key]; ok {
			return i, true
		}
		i, ok := oldByHash.get(hashOfKeyString(s.seed, key))
		return i, ok
	}
	// What documents carry over, in store order.
	type kept struct {
		slot int32
		x    *docExtra
	}
	var keep []kept
	for i, x := range s.ext {
		if s.slots[i].flags&fLive == 0 {
			continue
		}
		if x.written != nil && x.pending == nil {
			// Appended, its record not durable: the other program may
			// have written over those bytes. Append them again.
			x.pending = x.written
		}
		x.written = nil
		delete(s.unsettled, x)
		if x.pending != nil || x.meta != nil || x.ino != 0 {
			x.key = s.keyOf(i)
			keep = append(keep, kept{i, x})
		}
	}
	sort.Slice(keep, func(a, b int) bool { return keep[a].slot < keep[b].slot })
	journal, touched := s.journal, s.touched
	if err := s.reopenFilesLocked(); err != nil {
		return nil, err
	}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	s.gen++
	s.reloads++
	s.rewrite = false
	s.replayed = true

	// Both sides changed a key: the later change wins.
	theirs := max(now[0].Mtime, now[1].Mtime)
	reread := map[string]diskState{}
	for key := range touched {
		reread[key] = s.diskStateOf(key)
	}
	lost, notes := s.conflicts(touched, theirs)
	s.replayLocked(journal, lost)
	for _, k := range keep {
		x, key := k.x, k.x.key
		if lost[key] {
			x.pending = nil // its pool unit is skipped at write-back
			continue
		}
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
	s.touched = map[string]touch{}
	for key, t := range touched {
		if !lost[key] {
			s.touched[key] = touch{before: reread[key], at: t.at}
		}
	}
	if s.order != nil {
		s.setOrder(s.order)
	}
	s.orderChanged()
	s.checkTail()
	msg := "header.bin or body.bin changed behind arrayfs's back (another program wrote the store): reloaded"
	if len(s.journal) > 0 {
		msg += fmt.Sprintf("; %d changes not yet written were applied again (%s)", len(s.journal), describeJournal(s.journal))
	}
	for _, n := range notes {
		msg += "; " + n
	}
	s.ds.rep.Logf("%s: %s", s.rel, msg)

	var changes []Change
	for _, d := range s.liveDocs() {
		ino := s.inoOf(d.slot, d.key)
		i, ok := oldSlot(d.key)
		switch {
		case !ok || int(i) >= len(oldSlots) || oldSlots[i].flags&fLive == 0:
			changes = append(changes, Change{Name: NameOfKey(d.key), Ino: ino, Added: true})
		case oldSlots[i].loc() != s.slots[d.slot].loc() || (oldExt[i] != nil && oldExt[i].pending != nil):
			changes = append(changes, Change{Name: NameOfKey(d.key), Ino: ino})
		}
	}
	return changes, nil
}

// reopenFilesLocked opens header.bin and body.bin again when they were
// replaced, and takes their new sizes.
func (s *Store) reopenFilesLocked() error {
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
	hs, hst, err := same(s.header, HeaderName)
	if err != nil {
		return err
	}
	bs, bst, err := same(s.body.f, BodyName)
	if err != nil {
		return err
	}
	if hs && bs {
		s.sigs = [2]engine.FileSig{engine.SigOfUnix(hst), engine.SigOfUnix(bst)}
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
