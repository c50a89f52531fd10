package docarray

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Changes made through the mount survive another program's writes.
//
// Every change to a store takes effect in memory at once and reaches
// header.bin at the next write-back. When another program (the original
// DocumentArrayMemmap, mostly) writes the store in between, arrayfs must
// re-read the store before it writes (lock.go), and the re-read
// must not lose what the mount acknowledged and has not written yet:
//
//   - new versions, metadata and inode numbers live in each document's
//     docExtra; a reload carries them over by key (reloadLocked);
//   - deletions, renames and adopted orders change header records at
//     positions that mean nothing after the other program's writes: each
//     is recorded in s.journal as what it did to which keys, and applied
//     again, in order, to the store as re-read.
//
// When both sides changed one key (the other program's record for it is
// not what arrayfs last saw), the later change wins: arrayfs's, made at
// its time stamp, against the other program's last write to the files
// (their mtime, an upper bound of when it changed the key). The log
// names every such key and which change was dropped.
//
// When a write-back writes the records, every touched key's "before"
// becomes what header.bin now says of it; once they are durable the
// changes written leave the journal, and the keys with nothing left to
// write leave touched.

type docOpKind int

const (
	opRemove docOpKind = iota // key deleted
	opRename                  // key renamed to to (flags: renameat2's)
	opAdopt                   // an order adopted (a marker written)
)

// docOp is one header change the mount made and has not written yet.
type docOp struct {
	kind  docOpKind
	key   string
	to    string
	flags uint
	order []string
}

func (op docOp) keys() []string {
	switch op.kind {
	case opRemove:
		return []string{op.key}
	case opRename:
		return []string{op.key, op.to}
	}
	return nil
}

// touch is what arrayfs knows of a key it changed: what header.bin said
// of it before arrayfs's first change since the last complete write-back,
// and when arrayfs last changed it.
type touch struct {
	before diskState
	at     int64 // ns
}

// diskState is what header.bin says of a key: live, and where.
type diskState struct {
	live bool
	loc  docLoc
}

// diskStateOf is what header.bin says of key, as far as the store in
// memory knows: the record of a live document that is on disk with that
// key. s.mu held.
func (s *Store) diskStateOf(key string) diskState {
	i := s.find(key)
	if i < 0 {
		return diskState{}
	}
	sl := &s.slots[i]
	// A record written and not yet fdatasync'd counts: the other
	// program sees it already.
	if sl.flags&(fWritten|fRecLive|fKeyDisk) != fWritten|fRecLive|fKeyDisk {
		return diskState{}
	}
	return diskState{live: true, loc: sl.loc()}
}

// touchKey records that the mount is about to change key. s.mu held.
func (s *Store) touchKey(key string) {
	s.changes++
	t, ok := s.touched[key]
	if !ok {
		t.before = s.diskStateOf(key)
	}
	t.at = now()
	s.touched[key] = t
}

// journalOp records a header change, after touching its keys. s.mu held.
func (s *Store) journalOp(op docOp) {
	s.journal = append(s.journal, op)
}

// settleJournal forgets what the last write-back made durable: the
// first n header changes, and the keys last changed at or before at that
// have no new version left to write. s.mu held.
func (s *Store) settleJournal(n int, at int64) {
	s.journal = s.journal[n:]
	// Only the keys touched are looked at (not every document: this runs
	// at every write-back, a copy into a big store makes many).
	unsettled := func(i int32) bool {
		x := s.ext[i]
		return x != nil && (x.pending != nil || x.written != nil)
	}
	for key, t := range s.touched {
		if t.at > at {
			continue
		}
		if i := s.find(key); i >= 0 && (unsettled(i) || slices.ContainsFunc(s.dups[i], unsettled)) {
			continue
		}
		delete(s.touched, key)
	}
}

// conflicts compares the keys arrayfs changed with what the store just
// re-read says of them, and decides for each key both sides changed:
// arrayfs's change is dropped (lost) when the other program's is later.
// s.mu held, the new index loaded.
func (s *Store) conflicts(touched map[string]touch, theirs int64) (lost map[string]bool, notes []string) {
	lost = map[string]bool{}
	keys := make([]string, 0, len(touched))
	for k := range touched {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		t := touched[key]
		if now := s.diskStateOf(key); now == t.before {
			continue // the other program left it alone
		}
		if t.at > theirs {
			notes = append(notes, fmt.Sprintf("%q: changed by both; arrayfs's change is later and is kept", key))
			continue
		}
		lost[key] = true
		notes = append(notes, fmt.Sprintf("%q: changed by both; the other program's change is later and is kept, arrayfs's is dropped", key))
	}
	return lost, notes
}

// replayLocked applies the journal again to the store as re-read,
// skipping the changes to keys the other program won. It leaves the
// journal as the changes replayed. s.mu held.
func (s *Store) replayLocked(journal []docOp, lost map[string]bool) {
	s.journal = nil
	for _, op := range journal {
		skip := false
		for _, k := range op.keys() {
			skip = skip || lost[k]
		}
		if skip {
			continue
		}
		switch op.kind {
		case opRemove:
			if i := s.find(op.key); i >= 0 {
				s.clearDoc(i)
				s.popTrailing()
			}
		case opRename:
			// A key the other program removed meanwhile: nothing to do.
			s.renameKeysLocked(op.key, op.to, op.flags)
		case opAdopt:
			s.adoptLocked(op.order)
		}
		s.journal = append(s.journal, op)
	}
}

// describeJournal is a short list of the journal's changes, for logs.
func describeJournal(journal []docOp) string {
	var parts []string
	for i, op := range journal {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(journal)-5))
			break
		}
		switch op.kind {
		case opRemove:
			parts = append(parts, "rm "+fmt.Sprintf("%q", op.key))
		case opRename:
			parts = append(parts, fmt.Sprintf("mv %q %q", op.key, op.to))
		case opAdopt:
			parts = append(parts, "a marker's order")
		}
	}
	return strings.Join(parts, ", ")
}
