package docarray

import (
	"fmt"
	"runtime"
	"sync"
)

// The in-memory index of header.bin: its records parsed into slots, and
// every live key mapped to its slot by a hash (keys themselves are read
// from the header when needed).

// loadIndex parses header.bin into the slots and the key map.
//
// A million records take a fraction of a second: the records are parsed,
// their keys hashed and their live records sorted by hash (a radix sort,
// stable, so in record order within a hash) by one worker per CPU, each
// over its own range; then the sorted ranges are merged, stably, and
// taken in order. Equal keys can only be neighbours there, so duplicates
// and hash collisions are found without a lookup per record, and the key
// map is filled front to back (keytable.go).
func (s *Store) loadIndex() error {
	n := int(s.sigs[0].Size / int64(s.rs))
	s.initIndex(n)
	s.indexLoaded = false
	parts, err := s.scanIndexParts(n)
	if err != nil {
		return err
	}
	var bad []string
	nbad := 0
	long := map[int32]string{}
	sorted := make([][]hashedRecord, len(parts))
	for w, p := range parts {
		sorted[w] = p.live
		nbad += p.nbad
		bad = append(bad, p.bad...)
		for i, k := range p.long {
			long[i] = k
		}
	}
	if len(bad) > 3 {
		bad = bad[:3]
	}
	s.indexBad, s.indexBadMsgs = nbad, bad
	live := mergeByHash(sorted)
	s.byHash = newKeyTable(len(live))
	for g := 0; g < len(live); {
		e := g + 1
		for e < len(live) && live[e].h == live[g].h {
			e++
		}
		if e == g+1 {
			// A hash of one record: a key of its own (its slot's
			// flags were set by its worker).
			s.byHash.put(live[g].h, live[g].i)
			s.live++
		} else {
			s.indexGroup(live[g:e])
		}
		g = e
	}
	for i, key := range long {
		if s.slots[i].flags&fShadow == 0 {
			if name := NameOfKey(key); isHashedName(name) {
				s.hashed[name] = key
			}
		}
	}
	s.reportIndex()
	return nil
}

// initIndex empties the index for a header of n records.
func (s *Store) initIndex(n int) {
	s.nrec = n
	s.headerTrailing = s.sigs[0].Size%int64(s.rs) != 0
	if s.headerTrailing {
		s.report(fmt.Sprintf("%s is %d bytes, not a whole number of %d-byte records (key_length %d): the trailing %d bytes (a record torn by a crash) are ignored, and cut at the next write-back",
			HeaderName, s.sigs[0].Size, s.rs, s.k, s.sigs[0].Size%int64(s.rs)))
	}
	s.slots = make([]slot, n)
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
}

// reportIndex logs what the index found wrong in the header.
func (s *Store) reportIndex() {
	if s.indexBad > 0 {
		s.report(fmt.Sprintf("%d header records cannot be served and are skipped (the others are served): %v", s.indexBad, s.indexBadMsgs))
	}
	if len(s.dups) > 0 {
		s.report(fmt.Sprintf("%d keys have duplicate records: the later record's bytes are served at the earlier position, as docarray does", len(s.dups)))
	}
}

// indexGroup indexes live records of one hash, in record order: the
// first record of each key is its document; a later record of the same
// key is a duplicate, whose bytes the original serves at the first one's
// position; a second key of the hash goes to collide.
func (s *Store) indexGroup(g []hashedRecord) {
	first := map[string]int32{} // key → its first record
	for _, r := range g {
		key := s.diskKey(r.i)
		sl := &s.slots[r.i]
		if j, seen := first[key]; seen {
			main := &s.slots[j]
			main.start, main.size = sl.start, sl.size
			sl.flags = fShadow | fRecLive | fKeyDisk
			s.dups[j] = append(s.dups[j], r.i)
			continue
		}
		first[key] = r.i
		if len(first) == 1 {
			s.byHash.put(r.h, r.i)
		} else {
			s.collide[key] = r.i
		}
		sl.flags = fLive | fWritten | fRecLive | fKeyDisk
		s.live++
	}
}

// hashedRecord is a live record and its key's hash.
type hashedRecord struct {
	h uint64
	i int32
}

// indexPart is what one worker of loadIndex found in its records.
type indexPart struct {
	live []hashedRecord
	nbad int
	bad  []string
	long map[int32]string // keys long enough to be hashed names
}

// scanIndexParts parses records [0, n) into s.slots, one range per CPU.
func (s *Store) scanIndexParts(n int) ([]indexPart, error) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/65536))
	parts := make([]indexPart, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		from, to := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.live = make([]hashedRecord, 0, to-from)
			p.long = map[int32]string{}
			var kbuf []byte
			errs[w] = s.scanRecords(from, to, func(i int, rec []byte) {
				var ok bool
				var pr string
				if kbuf, ok = appendValidKey(kbuf[:0], rec, s.k); !ok {
					pr = keyProblem(rec, s.k)
				} else {
					pr = offsetProblem(rec, s.k, s.bodySize)
				}
				if pr != "" {
					s.slots[i].flags = fBad
					p.nbad++
					if len(p.bad) < 3 {
						p.bad = append(p.bad, fmt.Sprintf("record %d: %s", i, pr))
					}
					return
				}
				rr := readRawRecord(rec, s.k)
				if rr.tombstone() {
					return
				}
				l := rr.loc()
				// A live record's document, unless indexGroup finds
				// it a duplicate.
				s.slots[i] = slot{start: l.start, size: l.size, flags: fLive | fWritten | fRecLive | fKeyDisk}
				p.live = append(p.live, hashedRecord{hashOfKey(s.seed, kbuf), int32(i)})
				if len(kbuf) > 85 {
					p.long[int32(i)] = string(kbuf)
				}
			})
			sortByHash(p.live)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// sortByHash sorts records by hash, stably: records of one hash stay in
// record order. An LSD radix sort of the top 32 bits (two passes of 16),
// then an insertion sort of each run of one top half (a million random
// hashes have about a hundred such runs of two).
func sortByHash(a []hashedRecord) {
	if len(a) < 2 {
		return
	}
	tmp := make([]hashedRecord, len(a))
	var count [1 << 16]int
	for shift := uint(32); shift < 64; shift += 16 {
		clear(count[:])
		for _, r := range a {
			count[(r.h>>shift)&0xffff]++
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, r := range a {
			d := (r.h >> shift) & 0xffff
			tmp[count[d]] = r
			count[d]++
		}
		a, tmp = tmp, a
	}
	// Two passes: the sorted records are back in the caller's slice.
	for g := 0; g < len(a); {
		e := g + 1
		for e < len(a) && a[e].h>>32 == a[g].h>>32 {
			e++
		}
		for j := g + 1; j < e; j++ {
			for k := j; k > g && a[k-1].h > a[k].h; k-- {
				a[k-1], a[k] = a[k], a[k-1]
			}
		}
		g = e
	}
}

// mergeByHash merges runs sorted by hash into one, stably: on equal
// hashes an earlier run's records come first (the runs are consecutive
// ranges of records, so that is record order). Runs are merged in pairs.
func mergeByHash(runs [][]hashedRecord) []hashedRecord {
	if len(runs) == 0 {
		return nil
	}
	for len(runs) > 1 {
		next := make([][]hashedRecord, 0, (len(runs)+1)/2)
		for r := 0; r+1 < len(runs); r += 2 {
			next = append(next, mergeTwo(runs[r], runs[r+1]))
		}
		if len(runs)%2 == 1 {
			next = append(next, runs[len(runs)-1])
		}
		runs = next
	}
	return runs[0]
}

// mergeTwo merges two sorted runs, a's records first on equal hashes.
func mergeTwo(a, b []hashedRecord) []hashedRecord {
	out := make([]hashedRecord, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if b[j].h < a[i].h {
			out = append(out, b[j])
			j++
		} else {
			out = append(out, a[i])
			i++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// scanRecords calls f for records [from, to) of header.bin, in place in
// the mapping, 8 MiB at a time (copying a header of ten million records,
// 1.7 GB, out first cost a tenth of its parse). f must not keep rec.
func (s *Store) scanRecords(from, to int, f func(i int, rec []byte)) error {
	const chunk = 8 << 20
	per := max(1, chunk/s.rs)
	for i := from; i < to; i += per {
		n := min(per, to-i)
		var short bool
		err := s.hmap.Scan(int64(i)*int64(s.rs), n*s.rs, func(b []byte) {
			if short = len(b) < n*s.rs; short {
				return
			}
			for j := 0; j < n; j++ {
				f(i+j, b[j*s.rs:(j+1)*s.rs:(j+1)*s.rs])
			}
		})
		if err == nil && short {
			err = fmt.Errorf("records %d-%d are past the end of the file", i, i+n)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", HeaderName, err)
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
	if i, ok := s.byHash.get(hashOfKeyString(s.seed, key)); ok && s.keyOf(i) == key {
		return i
	}
	if i, ok := s.collide[key]; ok {
		return i
	}
	return -1
}

func (s *Store) indexKey(key string, i int32) {
	h := hashOfKeyString(s.seed, key)
	if s.byHash.has(h) {
		s.collide[key] = i
	} else {
		s.byHash.put(h, i)
	}
	if len(key) > 85 {
		if name := NameOfKey(key); isHashedName(name) {
			s.hashed[name] = key
		}
	}
}

func (s *Store) unindexKey(key string, i int32) {
	h := hashOfKeyString(s.seed, key)
	if j, ok := s.byHash.get(h); ok && j == i {
		s.byHash.del(h)
	} else {
		delete(s.collide, key)
	}
	if len(key) > 85 {
		delete(s.hashed, NameOfKey(key))
	}
}
