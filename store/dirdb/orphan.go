package dirdb

import "os"

// Handles of a deleted member.
//
// A member unlinked, or replaced by a rename over it, while handles have
// it open for writing keeps, for those handles, the version they see, as
// a file system keeps an unlinked inode for its open descriptors: their
// reads, writes, truncations and fstat (nlink 0) go on, to a file no name
// leads to, which goes away with the last of them. Nothing of it is ever
// published. A member moved to a name outside the format is not kept:
// its handles answer ESTALE (checkLocked), since their writes could not
// reach the file they opened.

// orphan is the version the handles of one generation of a member keep.
type orphan struct {
	file *os.File
	refs int // handles of that generation not yet released
}

// keepForHandlesLocked gives the member a stage, a copy of its file, when
// handles have it open and none has a stage yet, so that detachLocked
// can keep their view. dirdb's lock of the entry is held (so the copy is
// taken without it). Without a copy the handles answer ESTALE after.
func (e *Entry) keepForHandlesLocked(m member) {
	ms := &e.m[m]
	if ms.handles == 0 || ms.stage != nil {
		return
	}
	st, err := e.ds.back.NewStage(e.relOf(m), true, 0o644)
	if err != nil {
		return
	}
	e.setStageLocked(m, &dirdbStage{s: st})
	e.holdStage(1)
}

// orphanLocked hands the member's stage to its open handles, which are
// about to be detached, as their orphan.
func (e *Entry) orphanLocked(m member) {
	ms := &e.m[m]
	if ms.handles == 0 || ms.stage == nil {
		return
	}
	f, err := ms.stage.s.Orphan()
	if err != nil {
		return // dropped with the stage: the handles answer ESTALE
	}
	if ms.orphans == nil {
		ms.orphans = map[uint64]*orphan{}
	}
	ms.orphans[ms.gen] = &orphan{file: f, refs: ms.handles}
	e.setStageLocked(m, nil)
	e.holdStage(-1)
}

// orphanOf is the orphan the writer writes, if its member was deleted or
// replaced since it opened it and its version was kept.
func (w *Writer) orphanOf() *os.File {
	ms := &w.f.e.m[w.f.m]
	if w.gen == ms.gen {
		return nil
	}
	if o := ms.orphans[w.gen]; o != nil {
		return o.file
	}
	return nil
}

// releaseHandleLocked is the end of the writer: of its generation's
// handles, or of its orphan's.
func (w *Writer) releaseHandleLocked() {
	ms := &w.f.e.m[w.f.m]
	if w.gen == ms.gen {
		ms.handles--
		return
	}
	if o := ms.orphans[w.gen]; o != nil {
		if o.refs--; o.refs == 0 {
			o.file.Close()
			delete(ms.orphans, w.gen)
		}
	}
}
