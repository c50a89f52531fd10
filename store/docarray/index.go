package docarray

import (
	"fmt"
	"hash/maphash"
)

// The in-memory index of header.bin: its records parsed into slots, and
// every live key mapped to its slot by a hash (keys themselves are read
// from the header when needed).

// loadIndex parses header.bin into the slots and the key map.
func (s *Store) loadIndex() error {
	n := int(s.sigs[0].Size / int64(s.rs))
	s.nrec = n
	s.headerTrailing = s.sigs[0].Size%int64(s.rs) != 0
	if s.headerTrailing {
		s.report(fmt.Sprintf("%s is %d bytes, not a whole number of %d-byte records (key_length %d): the trailing %d bytes (a record torn by a crash) are ignored, and cut at the next write-back",
			HeaderName, s.sigs[0].Size, s.rs, s.k, s.sigs[0].Size%int64(s.rs)))
	}
	s.slots = make([]slot, n)
	s.byHash = make(map[uint64]int32, n)
	s.collide = map[string]int32{}
	s.ext = map[int32]*docExtra{}
	s.inoOwner = map[uint64]int32{}
	s.dups = map[int32][]int32{}
	s.recDirty = map[int32]struct{}{}
	if s.creating == nil {
		s.creating = map[string]*newDoc{}
	}
	s.hashed = map[string]string{}
	s.metaDirty = map[string]bool{}
	s.live = 0
	var bad []string
	nbad := 0
	var kbuf []byte
	err := s.scanRecords(0, n, func(i int, rec []byte) {
		if p := recordProblem(rec, s.k, s.bodySize); p != "" {
			s.slots[i].flags = fBad
			nbad++
			if len(bad) < 3 {
				bad = append(bad, fmt.Sprintf("record %d: %s", i, p))
			}
			return
		}
		rr := readRawRecord(rec, s.k)
		if rr.tombstone() {
			return
		}
		l := rr.loc()
		kbuf = appendKey(kbuf[:0], rec, s.k)
		h := maphash.Bytes(s.seed, kbuf)
		sl := &s.slots[i]
		sl.start, sl.size = l.start, l.size
		j, seen := s.byHash[h]
		if seen && s.diskKey(j) != string(kbuf) {
			j, seen = s.collide[string(kbuf)]
			if !seen {
				s.collide[string(kbuf)] = int32(i)
			}
		}
		if seen {
			// A duplicate key: the later record's bytes, at the
			// earlier position, as the original reads it.
			main := &s.slots[j]
			main.start, main.size = l.start, l.size
			sl.flags = fShadow | fRecLive | fKeyDisk
			s.dups[j] = append(s.dups[j], int32(i))
			return
		}
		if _, c := s.collide[string(kbuf)]; !c {
			s.byHash[h] = int32(i)
		}
		sl.flags = fLive | fWritten | fRecLive | fKeyDisk
		s.live++
		if len(kbuf) > 85 {
			if name := NameOfKey(string(kbuf)); isHashedName(name) {
				s.hashed[name] = string(kbuf)
			}
		}
	})
	if err != nil {
		return err
	}
	if nbad > 0 {
		s.report(fmt.Sprintf("%d header records cannot be served and are skipped (the others are served): %v", nbad, bad))
	}
	if len(s.dups) > 0 {
		s.report(fmt.Sprintf("%d keys have duplicate records: the later record's bytes are served at the earlier position, as docarray does", len(s.dups)))
	}
	return nil
}

// scanRecords calls f for records [from, to) of header.bin, read in
// large chunks (a store of a million documents is read in well under a
// second).
func (s *Store) scanRecords(from, to int, f func(i int, rec []byte)) error {
	const chunk = 8 << 20
	per := max(1, chunk/s.rs)
	buf := make([]byte, min(per, max(to-from, 1))*s.rs)
	for i := from; i < to; i += per {
		n := min(per, to-i)
		b := buf[:n*s.rs]
		if _, err := s.hmap.ReadAt(b, int64(i)*int64(s.rs)); err != nil {
			return fmt.Errorf("%s: %w", HeaderName, err)
		}
		for j := 0; j < n; j++ {
			f(i+j, b[j*s.rs:(j+1)*s.rs])
		}
	}
	return nil
}

// diskKey decodes the key of record i from header.bin.
func (s *Store) diskKey(i int32) string {
	buf := make([]byte, 4*s.k)
	if _, err := s.hmap.ReadAt(buf, int64(i)*int64(s.rs)); err != nil {
		return ""
	}
	if keyProblem(buf, s.k) != "" {
		return ""
	}
	return string(appendKey(nil, buf, s.k))
}

// keyOf is the key of the document (or shadow) in slot i.
func (s *Store) keyOf(i int32) string {
	if x := s.ext[i]; x != nil && s.slots[i].flags&fLive != 0 {
		return x.key
	}
	if s.slots[i].flags&fKeyDisk != 0 {
		return s.diskKey(i)
	}
	return ""
}

// find returns the slot of the live document key, or -1.
func (s *Store) find(key string) int32 {
	if i, ok := s.byHash[maphash.String(s.seed, key)]; ok && s.keyOf(i) == key {
		return i
	}
	if i, ok := s.collide[key]; ok {
		return i
	}
	return -1
}

func (s *Store) indexKey(key string, i int32) {
	h := maphash.String(s.seed, key)
	if _, taken := s.byHash[h]; taken {
		s.collide[key] = i
	} else {
		s.byHash[h] = i
	}
	if len(key) > 85 {
		if name := NameOfKey(key); isHashedName(name) {
			s.hashed[name] = key
		}
	}
}

func (s *Store) unindexKey(key string, i int32) {
	h := maphash.String(s.seed, key)
	if j, ok := s.byHash[h]; ok && j == i {
		delete(s.byHash, h)
	} else {
		delete(s.collide, key)
	}
	if len(key) > 85 {
		delete(s.hashed, NameOfKey(key))
	}
}
