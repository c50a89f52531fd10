package docarray

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Header records as the write-back writes them: rendered from the slots,
// written in place (or as a whole new header.bin), and the slots settled
// to what is then on disk.

// recordBytes renders the record slot i will have on disk into dst.
func (s *Store) recordBytes(dst []byte, i int32) {
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
func (s *Store) newRecordCount() int {
	for i := int32(len(s.slots)) - 1; i >= 0; i-- {
		if s.recordStays(i) {
			return int(i) + 1
		}
	}
	return 0
}

// writeRecordsLocked writes the dirty records in place, pads new ones,
// and cuts trailing tombstones.
func (s *Store) writeRecordsLocked() (bool, error) {
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
	if newN < s.nrec || s.headerTrailing {
		if err := s.header.Truncate(int64(newN) * int64(s.rs)); err != nil {
			return wrote, err
		}
		s.headerTrailing = false
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
func (s *Store) settleSlot(i int32) {
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

func (s *Store) dropExtIfEmpty(i int32) {
	x := s.ext[i]
	if x != nil && x.pending == nil && x.meta == nil && x.ino == 0 && s.slots[i].flags&fKeyDisk != 0 {
		delete(s.ext, i)
		s.slots[i].flags &^= fExt
	}
}

// checkTail notes whether docarray can reopen the store as it is on
// disk and append to it without harm (formats/docarray-memmap.md: it
// appends at the end of the LAST record, so that record must be live
// and end at the end of body.bin). A store that breaks the rule is
// repaired by the next write-back even when nothing else changed: the
// original leaves live bytes past its last record after an update (its
// next append overwrites them), and an interrupted append (of any
// writer) leaves bytes past it too.
func (s *Store) checkTail() {
	s.tailUnsafe, s.tailNote = false, ""
	if s.nrec == 0 {
		return
	}
	sl := &s.slots[s.nrec-1]
	switch {
	case sl.flags&fBad != 0:
		s.report(fmt.Sprintf("the last record of %s is invalid: docarray cannot reopen this store safely until it is pruned (arrayfs prune)", HeaderName))
	case sl.flags&(fRecLive|fShadow) == 0:
		s.tailUnsafe, s.tailNote = true, "its last record is a tombstone (docarray cannot open it)"
	case sl.loc().end() != s.bodySize:
		end := sl.loc().end()
		s.tailUnsafe = true
		s.tailNote = fmt.Sprintf("its last record ends at byte %d of %s, which has %d (bytes left by an interrupted append): docarray would append there",
			end, BodyName, s.bodySize)
		for i := range s.slots[:s.nrec] {
			o := &s.slots[i]
			if o.flags&fRecLive != 0 && o.flags&fBad == 0 && o.loc().end() > end {
				s.tailNote = fmt.Sprintf("record %d ends at byte %d of %s, after the last record (%d): docarray's next append would overwrite it",
					i, o.loc().end(), BodyName, end)
				break
			}
		}
	}
}

// rewriteHeaderLocked writes a whole new header.bin beside the old one
// and renames it into place (after an adopted order moved documents).
func (s *Store) rewriteHeaderLocked() error {
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
	if err := writeFileAt(s.dirFd(), HeaderName, buf, perm); err != nil {
		return err
	}
	fd, err := unix.Openat(s.dirFd(), HeaderName, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), s.header.Name())
	m, err := engine.OpenMapping(f, true)
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
	s.headerTrailing = false
	s.popTrailing()
	s.checkTail()
	return nil
}
