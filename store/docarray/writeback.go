package docarray

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Write-back: how changes reach header.bin and body.bin.
//
//  1. The new versions of the batch are appended at the END of body.bin
//     (never where the original's "last record" rule points, which can
//     be live data), in slot order, then fdatasync: data before
//     metadata.
//  2. Header records are written in place: the batch's documents, and
//     every pending header change (tombstones, renames, documents moved
//     by a rename over another). New records extend the file; a slot
//     between the old end and a new record gets a tombstone.
//  3. The store is left as docarray can reopen it safely: trailing
//     tombstones are cut off (nothing follows them, so they hold no
//     position) and the last record is live and ends exactly at the end
//     of body.bin — when the batch does not end with it, its bytes are
//     appended again (with the batch, in the same write) and its record
//     points at the copy. A bad record at the end is left alone and
//     reported.
//  4. fdatasync of header.bin, then the sidecar's lines.
//
// After a crash at any point the header points only at bytes that were
// made durable before it was written: the store opens with every version
// whose write-back completed (every acknowledged fsync).

// WriteBack is the pool's call: write the given versions and every
// pending header change.
func (s *Store) WriteBack(units []*engine.Unit) error {
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	return s.writeBackLocked(units)
}

// Settle writes the pending header changes and repairs the tail, even
// with no version to write (fsync of the directory, unmount).
func (s *Store) Settle() error {
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	return s.writeBackLocked(nil)
}

// Sync writes back everything of the store (fsync of a document).
func (s *Store) Sync() error {
	if err := s.ds.pool.Flush(s); err != nil {
		return err
	}
	return s.Settle()
}

// syncSoonDelay is how soon after the close of a document (or an rm or
// mv in the store) the store is written back: soon enough that a program
// reading the store beside the mount sees the change at once, late
// enough that a copy of many documents writes them back together.
const syncSoonDelay = 20 * time.Millisecond

// SyncSoon writes the store back shortly, without the caller waiting:
// at the close of a document, rm and mv. fsync is what waits for
// durability.
func (s *Store) SyncSoon() {
	if !s.syncSoon.CompareAndSwap(false, true) {
		return // one is due already
	}
	time.AfterFunc(syncSoonDelay, func() {
		s.syncSoon.Store(false)
		if err := s.Sync(); err != nil {
			s.ds.rep.Logf("%v (kept in the pool; retried at the next write-back)", err)
		}
	})
}

type wbItem struct {
	v   *docVersion
	loc docLoc
}

func (s *Store) writeBackLocked(units []*engine.Unit) error {
	if s.closed || s.readOnly {
		return nil
	}
	// Phase 0: the store's lock, and the files as another program may
	// have left them (lock.go): reload first, then append at
	// their real end.
	unlock, err := s.lockFiles(true, "write-back")
	if err != nil {
		return err
	}
	defer unlock()
	// Whatever happens below, the files are then as arrayfs left them:
	// its own partial writes are not a change behind its back.
	defer s.recordSigs()
	changed, gone, sigs := s.filesChanged()
	if gone {
		return s.wbError("the store's files", fmt.Errorf("%s or %s is missing or not a regular file; the changes stay pending", HeaderName, BodyName))
	}
	if changed {
		changes, err := s.reloadLocked(sigs)
		if err != nil {
			return s.wbError("re-reading the store another program changed", err)
		}
		s.ds.notifyDocs(s.Rel(), changes)
	}

	// Phases 1 to 3, again while a change made meanwhile left header
	// work undone (a deletion of the last record, a rename): what is
	// settled below must be in the records written, and the store must
	// be left with its tail in order while it is still locked.
	var r wbRound
	wrote := false
	for round := 0; ; round++ {
		r, err = s.writeRound(units)
		if err != nil {
			return err
		}
		wrote = wrote || r.wrote
		units = nil // written, or superseded by the pool's next units
		if !r.workLeft || round == 2 {
			break
		}
	}

	// Phase 4: durability of the header, then the sidecar.
	if wrote {
		if err := unix.Fdatasync(int(s.header.Fd())); err != nil {
			return s.wbError("fdatasync of "+HeaderName, err)
		}
	}
	s.mu.Lock()
	for x := range s.unsettled {
		x.written = nil
	}
	clear(s.unsettled)
	s.settleJournal(r.journaled, r.at)
	s.mu.Unlock()
	if side := r.sidecar; len(side) > 0 && s.sidecar != nil {
		if _, err := s.sidecar.Write(side); err != nil {
			return s.wbError("appending to "+MetaName, err)
		}
		if err := unix.Fdatasync(int(s.sidecar.Fd())); err != nil {
			return s.wbError("fdatasync of "+MetaName, err)
		}
		s.mu.Lock()
		s.sidecarPending = s.sidecarPending[len(side):]
		s.mu.Unlock()
	}
	return nil
}

// wbRound is what one round of phases 1 to 3 did.
type wbRound struct {
	wrote     bool   // header.bin was written: it needs an fdatasync
	journaled int    // the journal's changes the records now hold
	at        int64  // when the records were written
	sidecar   []byte // the sidecar lines to append
	workLeft  bool   // a change made meanwhile left header work to do
}

// headerWorkLocked reports whether header.bin needs writing even with
// no new version: pending record changes, or a tail to repair. s.mu
// held (read or write).
func (s *Store) headerWorkLocked() bool {
	return len(s.recDirty) > 0 || s.rewrite || s.tailUnsafe || s.headerTrailing
}

// writeRound appends the versions of units (or, after a reload, every
// pending one) and writes the header records: phases 1 to 3.
func (s *Store) writeRound(units []*engine.Unit) (wbRound, error) {
	// Phase 1 (read lock): what to append: the pool's units, or after a
	// reload every pending version (a reload can make versions pending
	// that the pool no longer holds).
	s.mu.RLock()
	var items []wbItem
	if s.replayed {
		for _, x := range s.ext {
			if x.pending != nil && s.slots[x.slot].flags&fLive != 0 {
				items = append(items, wbItem{v: x.pending})
			}
		}
	} else {
		for _, u := range units {
			if v, ok := u.Value.(*docVersion); ok && v.x.pending == v {
				items = append(items, wbItem{v: v})
			}
		}
	}
	sort.Slice(items, func(a, b int) bool { return items[a].v.x.slot < items[b].v.x.slot })
	headerWork := len(items) > 0 || s.headerWorkLocked()
	repairOnly := ""
	if len(items) == 0 && len(s.recDirty) == 0 && !s.rewrite {
		switch {
		case s.headerTrailing:
			repairOnly = fmt.Sprintf("%s ended in a torn record (a writer was interrupted)", HeaderName)
		case s.tailUnsafe:
			repairOnly = s.tailNote
		}
	}
	tail, tailOld := int32(-1), docLoc{}
	copyTail := false
	if headerWork {
		tail = s.tailSlot(items)
		if tail >= 0 && (len(items) == 0 || items[len(items)-1].v.x.slot != tail) {
			sl := s.slots[tail]
			if sl.flags&fBad == 0 && (len(items) > 0 || sl.loc().end() != s.bodySize) {
				copyTail, tailOld = true, sl.loc()
			}
		}
	}
	s.mu.RUnlock()

	// Phase 2 (no lock: readers go on): append and make durable.
	off := s.bodySize
	bufs := make([][]byte, 0, len(items)+1)
	for k := range items {
		d := items[k].v.data
		items[k].loc = docLoc{start: off, size: int64(len(d))}
		bufs = append(bufs, d)
		off += int64(len(d))
	}
	tailNew := docLoc{}
	if copyTail {
		b := make([]byte, tailOld.size)
		if _, err := s.body.m.ReadAt(b, tailOld.start); err != nil {
			return wbRound{}, s.wbError("reading the last document to append it again", err)
		}
		tailNew = docLoc{start: off, size: tailOld.size}
		bufs = append(bufs, b)
		off += tailOld.size
	}
	if off > s.bodySize {
		if err := pwritevAll(s.body.f, bufs, s.bodySize); err != nil {
			// Nothing points at a partial append; where the truncate
			// fails too, the next append goes after it.
			if s.body.f.Truncate(s.bodySize) != nil {
				if st, serr := s.body.f.Stat(); serr == nil && st.Size() > s.bodySize {
					s.bodySize = st.Size()
					s.body.m.Resize(s.bodySize)
				}
			}
			return wbRound{}, s.wbError("appending to "+BodyName, err)
		}
		if err := unix.Fdatasync(int(s.body.f.Fd())); err != nil {
			return wbRound{}, s.wbError("fdatasync of "+BodyName, err)
		}
		s.bodySize = off
		if err := s.body.m.Resize(off); err != nil {
			return wbRound{}, s.wbError("mapping "+BodyName, err)
		}
	}

	// Phase 3 (write lock): records, and the in-memory state with them.
	s.mu.Lock()
	for _, it := range items {
		x := it.v.x
		if s.ext[x.slot] != x || s.slots[x.slot].flags&fLive == 0 {
			continue // deleted meanwhile: its bytes are garbage
		}
		sl := &s.slots[x.slot]
		sl.start, sl.size = it.loc.start, it.loc.size
		sl.flags |= fWritten
		if x.pending == it.v {
			x.pending = nil
		}
		x.written = it.v // until its record is durable
		if s.unsettled == nil {
			s.unsettled = map[*docExtra]struct{}{}
		}
		s.unsettled[x] = struct{}{}
		s.recDirty[x.slot] = struct{}{}
	}
	s.replayed = false
	if copyTail && int(tail) < len(s.slots) {
		sl := &s.slots[tail]
		live := sl.flags&(fLive|fWritten) == fLive|fWritten || sl.flags&fShadow != 0
		if live && sl.loc() == tailOld {
			sl.start, sl.size = tailNew.start, tailNew.size
			s.recDirty[tail] = struct{}{}
		}
	}
	if s.order != nil && s.orderFilled == len(s.order) {
		// Every listed key is in its place: the adoption is over.
		s.setOrder(nil)
	}
	// Changes made since phase 1 are written too: every change the
	// journal holds up to here is then in the records.
	wrote, err := false, error(nil)
	if s.rewrite {
		err = s.rewriteHeaderLocked()
		wrote = err == nil
	} else if headerWork || s.headerWorkLocked() {
		wrote, err = s.writeRecordsLocked()
	}
	// The header changes made up to here are in the records written;
	// later ones (made while phase 4 runs) are not. What header.bin now
	// says of each key changed is what a reload must compare with.
	written, settledAt := len(s.journal), now()
	if err == nil {
		for key, t := range s.touched {
			t.before = s.diskStateOf(key)
			s.touched[key] = t
		}
	}
	if err == nil && repairOnly != "" {
		s.ds.rep.Logf("%s: repaired so that docarray can reopen it and append safely (its documents are unchanged): %s", s.rel, repairOnly)
	}
	r := wbRound{wrote: wrote, journaled: written, at: settledAt, sidecar: s.sidecarLinesLocked()}
	r.workLeft = err == nil && s.headerWorkLocked()
	s.mu.Unlock()
	if err != nil {
		return r, s.wbError("writing "+HeaderName, err)
	}
	return r, nil
}

func (s *Store) wbError(what string, err error) error {
	return &engine.Error{Path: s.Rel(), Op: "write-back", Reason: fmt.Sprintf("%s: %v", what, err), Errno: engine.ErrnoOf(err)}
}

// tailSlot is the slot of the last record that will be live once items
// are written: the last record of header.bin after this write-back.
func (s *Store) tailSlot(items []wbItem) int32 {
	maxItem := int32(-1)
	if len(items) > 0 {
		maxItem = items[len(items)-1].v.x.slot
	}
	for i := int32(len(s.slots)) - 1; i > maxItem; i-- {
		if s.recordStays(i) {
			return i
		}
	}
	return maxItem
}

// recordStays reports whether slot i holds a non-tombstone record once
// the pending changes are written.
func (s *Store) recordStays(i int32) bool {
	f := s.slots[i].flags
	return f&(fLive|fWritten) == fLive|fWritten || f&(fShadow|fBad) != 0
}

// sidecarLinesLocked renders the sidecar lines of the changes made since
// the last write-back and returns everything not yet appended.
func (s *Store) sidecarLinesLocked() []byte {
	s.settleMarkerLocked()
	if s.storeDirty {
		s.sidecarPending = append(s.sidecarPending, encodeStoreLine(s.id, s.k, s.base.Mtime)...)
		s.storeDirty = false
	}
	if s.markerDirty {
		s.sidecarPending = append(s.sidecarPending, encodeMarkerLine(s.marker)...)
		s.markerDirty = false
	}
	if s.orderDirty {
		s.sidecarPending = append(s.sidecarPending, encodeOrderLine(s.order)...)
		s.orderDirty = false
	}
	for key := range s.metaDirty {
		i := s.find(key)
		if i >= 0 {
			if x := s.ext[i]; x != nil && (x.meta != nil || x.ino != 0) {
				s.sidecarPending = append(s.sidecarPending, encodeDocLine(key, s.metaOf(i), x.ino)...)
				continue
			}
		}
		s.sidecarPending = append(s.sidecarPending, encodeRmLine(key)...)
	}
	clear(s.metaDirty)
	return s.sidecarPending
}

// recordSigs remembers the files as we left them, to tell our own
// changes from others'.
func (s *Store) recordSigs() {
	var st unix.Stat_t
	if unix.Fstat(int(s.header.Fd()), &st) == nil {
		s.sigs[0] = engine.SigOfUnix(&st)
	}
	if unix.Fstat(int(s.body.f.Fd()), &st) == nil {
		s.sigs[1] = engine.SigOfUnix(&st)
	}
}

// pwritevAll writes bufs back to back at off.
func pwritevAll(f *os.File, bufs [][]byte, off int64) error {
	var iov [][]byte
	for _, b := range bufs {
		if len(b) > 0 {
			iov = append(iov, b)
		}
	}
	for len(iov) > 0 {
		n, err := unix.Pwritev(int(f.Fd()), iov[:min(len(iov), 1024)], off)
		if err != nil {
			return err
		}
		off += int64(n)
		for n > 0 {
			if n >= len(iov[0]) {
				n -= len(iov[0])
				iov = iov[1:]
			} else {
				iov[0] = iov[0][n:]
				n = 0
			}
		}
	}
	return nil
}
