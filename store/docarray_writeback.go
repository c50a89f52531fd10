package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

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
func (s *DocStore) WriteBack(units []*Unit) error {
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	return s.writeBackLocked(units)
}

// Settle writes the pending header changes and repairs the tail, even
// with no version to write (fsync of the directory, unmount).
func (s *DocStore) Settle() error {
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	return s.writeBackLocked(nil)
}

// Sync writes back everything of the store (fsync of a document).
func (s *DocStore) Sync() error {
	if err := s.ds.pool.Flush(s); err != nil {
		return err
	}
	return s.Settle()
}

type wbItem struct {
	v   *docVersion
	loc docLoc
}

func (s *DocStore) writeBackLocked(units []*Unit) error {
	if s.closed || s.readOnly {
		return nil
	}
	// Phase 1 (read lock): what to append.
	s.mu.RLock()
	var items []wbItem
	for _, u := range units {
		if v, ok := u.Value.(*docVersion); ok && v.x.pending == v {
			items = append(items, wbItem{v: v})
		}
	}
	sort.Slice(items, func(a, b int) bool { return items[a].v.x.slot < items[b].v.x.slot })
	headerWork := len(items) > 0 || len(s.recDirty) > 0 || s.rewrite || s.tailBroken
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
			return s.wbError("reading the last document to append it again", err)
		}
		tailNew = docLoc{start: off, size: tailOld.size}
		bufs = append(bufs, b)
		off += tailOld.size
	}
	if off > s.bodySize {
		if err := pwritevAll(s.body.f, bufs, s.bodySize); err != nil {
			s.body.f.Truncate(s.bodySize)
			return s.wbError("appending to "+DocBodyName, err)
		}
		if err := unix.Fdatasync(int(s.body.f.Fd())); err != nil {
			return s.wbError("fdatasync of "+DocBodyName, err)
		}
		s.bodySize = off
		if err := s.body.m.Resize(off); err != nil {
			return s.wbError("mapping "+DocBodyName, err)
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
		s.recDirty[x.slot] = struct{}{}
	}
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
	var err error
	wrote := false
	if s.rewrite {
		err = s.rewriteHeaderLocked()
	} else if headerWork {
		wrote, err = s.writeRecordsLocked()
	}
	side := s.sidecarLinesLocked()
	s.mu.Unlock()
	if err != nil {
		return s.wbError("writing "+DocHeaderName, err)
	}

	// Phase 4: durability of the header, then the sidecar.
	if wrote {
		if err := unix.Fdatasync(int(s.header.Fd())); err != nil {
			return s.wbError("fdatasync of "+DocHeaderName, err)
		}
	}
	if len(side) > 0 && s.sidecar != nil {
		if _, err := s.sidecar.Write(side); err != nil {
			return s.wbError("appending to "+DocMetaName, err)
		}
		if err := unix.Fdatasync(int(s.sidecar.Fd())); err != nil {
			return s.wbError("fdatasync of "+DocMetaName, err)
		}
		s.mu.Lock()
		s.sidecarPending = s.sidecarPending[len(side):]
		s.mu.Unlock()
	}
	s.recordSigs()
	return nil
}

func (s *DocStore) wbError(what string, err error) error {
	return &Error{Path: s.Rel(), Op: "write-back", Reason: fmt.Sprintf("%s: %v", what, err), Errno: ErrnoOf(err)}
}

// tailSlot is the slot of the last record that will be live once items
// are written: the last record of header.bin after this write-back.
func (s *DocStore) tailSlot(items []wbItem) int32 {
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
func (s *DocStore) recordStays(i int32) bool {
	f := s.slots[i].flags
	return f&(fLive|fWritten) == fLive|fWritten || f&(fShadow|fBad) != 0
}

// recordBytes renders the record slot i will have on disk into dst.
func (s *DocStore) recordBytes(dst []byte, i int32) {
	sl := &s.slots[i]
	switch {
	case sl.flags&(fLive|fWritten) == fLive|fWritten:
		encodeRecord(dst, s.keyOf(i), s.k, recordFor(sl.loc()))
	case sl.flags&fShadow != 0:
		// A shadow whose bytes were appended again as the last record.
		s.hmap.ReadAt(dst, int64(i)*int64(s.rs))
		binaryPutRecord(dst, s.k, recordFor(sl.loc()))
	case int(i) < s.nrec && sl.flags&fRecLive != 0:
		// A tombstone keeps its key, as the original writes them.
		s.hmap.ReadAt(dst, int64(i)*int64(s.rs))
		binaryPutRecord(dst, s.k, tombstoneRecord)
	default:
		key := ""
		if sl.flags&fLive != 0 {
			key = s.ext[i].key
		} else if int(i) < len(s.order) {
			key = s.order[i]
		}
		encodeRecord(dst, key, s.k, tombstoneRecord)
	}
}

func binaryPutRecord(dst []byte, k int, rr rawRecord) {
	binary.LittleEndian.PutUint64(dst[4*k:], uint64(rr.p))
	binary.LittleEndian.PutUint64(dst[4*k+8:], uint64(rr.r))
	binary.LittleEndian.PutUint64(dst[4*k+16:], uint64(rr.end))
}

// newRecordCount is the number of records header.bin keeps: up to the
// last one that stays live.
func (s *DocStore) newRecordCount() int {
	for i := int32(len(s.slots)) - 1; i >= 0; i-- {
		if s.recordStays(i) {
			return int(i) + 1
		}
	}
	return 0
}

// writeRecordsLocked writes the dirty records in place, pads new ones,
// and cuts trailing tombstones.
func (s *DocStore) writeRecordsLocked() (bool, error) {
	newN := s.newRecordCount()
	var ws []int32
	for i := range s.recDirty {
		if int(i) >= len(s.slots) {
			delete(s.recDirty, i) // a slot popped since
		} else if int(i) < newN && int(i) < s.nrec {
			ws = append(ws, i)
		}
	}
	for i := s.nrec; i < newN; i++ {
		ws = append(ws, int32(i))
	}
	sort.Slice(ws, func(a, b int) bool { return ws[a] < ws[b] })
	wrote := false
	for a := 0; a < len(ws); {
		b := a + 1
		for b < len(ws) && ws[b] == ws[b-1]+1 {
			b++
		}
		buf := make([]byte, (b-a)*s.rs)
		for j := a; j < b; j++ {
			s.recordBytes(buf[(j-a)*s.rs:(j-a+1)*s.rs], ws[j])
		}
		if _, err := s.header.WriteAt(buf, int64(ws[a])*int64(s.rs)); err != nil {
			return wrote, err
		}
		wrote = true
		a = b
	}
	if newN < s.nrec {
		if err := s.header.Truncate(int64(newN) * int64(s.rs)); err != nil {
			return wrote, err
		}
		wrote = true
	}
	for _, i := range ws {
		s.settleSlot(i)
	}
	for i := range s.recDirty {
		if int(i) >= newN && int(i) < len(s.slots) {
			s.slots[i].flags &^= fRecLive | fKeyDisk
		}
	}
	clear(s.recDirty)
	s.nrec = newN
	if err := s.hmap.Resize(int64(newN) * int64(s.rs)); err != nil {
		return wrote, err
	}
	s.popTrailing()
	s.checkTail()
	return wrote, nil
}

// settleSlot records that slot i's record on disk is what recordBytes
// rendered.
func (s *DocStore) settleSlot(i int32) {
	sl := &s.slots[i]
	switch {
	case sl.flags&(fLive|fWritten) == fLive|fWritten:
		sl.flags |= fRecLive | fKeyDisk
		s.dropExtIfEmpty(i)
	case sl.flags&fShadow != 0:
	default:
		sl.flags &^= fRecLive | fKeyDisk
	}
}

func (s *DocStore) dropExtIfEmpty(i int32) {
	x := s.ext[i]
	if x != nil && x.pending == nil && x.meta == nil && x.ino == 0 && s.slots[i].flags&fKeyDisk != 0 {
		delete(s.ext, i)
		s.slots[i].flags &^= fExt
	}
}

// checkTail notes whether the last record ends at the end of body.bin
// (a change between the phases of a write-back can leave it not so; the
// next write-back repairs it).
func (s *DocStore) checkTail() {
	s.tailBroken = false
	if s.nrec == 0 {
		return
	}
	sl := &s.slots[s.nrec-1]
	if sl.flags&fBad != 0 {
		s.report(fmt.Sprintf("the last record of %s is invalid: docarray cannot reopen this store safely until it is pruned (arrayfs prune)", DocHeaderName))
		return
	}
	s.tailBroken = sl.loc().end() != s.bodySize
}

// rewriteHeaderLocked writes a whole new header.bin beside the old one
// and renames it into place (after an adopted order moved documents).
func (s *DocStore) rewriteHeaderLocked() error {
	newN := s.newRecordCount()
	buf := make([]byte, newN*s.rs)
	for i := 0; i < newN; i++ {
		s.recordBytes(buf[i*s.rs:(i+1)*s.rs], int32(i))
	}
	var st unix.Stat_t
	perm := uint32(0o644)
	if unix.Fstat(int(s.header.Fd()), &st) == nil {
		perm = st.Mode & 0o777
	}
	if err := writeFileAt(s.dirFd(), DocHeaderName, buf, perm); err != nil {
		return err
	}
	fd, err := unix.Openat(s.dirFd(), DocHeaderName, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), s.header.Name())
	m, err := OpenMapping(f, true)
	if err != nil {
		f.Close()
		return err
	}
	s.hmap.Close()
	s.header.Close()
	s.header, s.hmap = f, m
	for i := 0; i < newN; i++ {
		s.settleSlot(int32(i))
	}
	clear(s.recDirty)
	s.nrec = newN
	s.rewrite = false
	s.popTrailing()
	s.checkTail()
	return nil
}

// sidecarLinesLocked renders the sidecar lines of the changes made since
// the last write-back and returns everything not yet appended.
func (s *DocStore) sidecarLinesLocked() []byte {
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
func (s *DocStore) recordSigs() {
	var st unix.Stat_t
	if unix.Fstat(int(s.header.Fd()), &st) == nil {
		s.sigs[0] = sigOfUnix(&st)
	}
	if unix.Fstat(int(s.body.f.Fd()), &st) == nil {
		s.sigs[1] = sigOfUnix(&st)
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
