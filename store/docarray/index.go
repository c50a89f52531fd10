package docarray

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync"
)

// The in-memory index of header.bin: its records parsed into slots, and
// every live key mapped to its slot by a hash (keys themselves are read
// from the header when needed).

// loadIndex parses header.bin into the slots and the key map.
//
// A million records take a tenth of a second, ten million a second, on
// two CPUs; nothing of it is done by one CPU alone (the key map's
// duplicates and collisions aside), and no pass makes a cache miss per
// record:
//
//  1. Scan: one worker per CPU over its own range of records parses
//     them into their slots and hashes their keys. It hands each live
//     record to the region of the key map its hash falls in (keytable.go:
//     a hash's home cell is given by its top bits, so a range of hashes
//     is a range of cells), keeping record order.
//  2. Fill: one worker per region sorts its records by hash (a radix
//     sort, stable: record order within a hash), taking the scan
//     workers' lists in their order, and fills its cells front to back.
//     A hash of several records (a key's duplicates, or two keys
//     colliding) is found as neighbours there, and is left for the end,
//     as is a record whose probe would run past the region's last cell.
//  3. What was left is taken one by one.
//
// Tried and measured slower on ten million records (first mount to
// first byte, same runs): inserting each record straight into its
// region's cells in record order, 1.27-1.66 s against 1.19-1.40 s (a
// probe reads a cell before it writes one, where a scatter only writes);
// three LSD passes of 8 bits, no faster and 136 MiB more memory.
func (s *Store) loadIndex() error {
	n := int(s.sigs[0].Size / int64(s.rs))
	s.initIndex(n)
	s.indexLoaded = false
	workers := min(runtime.GOMAXPROCS(0), max(1, n/65536))
	regionBits := fillRegionBits(workers)
	parts, err := s.scanIndexParts(n, workers, regionBits)
	if err != nil {
		return err
	}
	var bad []string
	nbad := 0
	long := map[int32]string{}
	for _, p := range parts {
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
	left := s.fillRegions(parts, regionBits)
	for _, r := range left.singles {
		s.byHash.put(r.h, r.i)
		s.live++
	}
	for _, g := range left.groups {
		s.indexGroup(g)
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

// indexPart is what one scan worker of loadIndex found in its records.
type indexPart struct {
	// byRegion holds its live records by the key map's region their
	// hash falls in, each in record order.
	byRegion [][]hashedRecord
	nbad     int
	bad      []string
	long     map[int32]string // keys long enough to be hashed names
}

// scanIndexParts parses records [0, n) into s.slots, one range per
// worker, and hands their live records to the 1<<regionBits regions of
// the key map.
func (s *Store) scanIndexParts(n, workers int, regionBits uint) ([]indexPart, error) {
	parts := make([]indexPart, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		from, to := n*w/workers, n*(w+1)/workers
		wg.Go(func() {
			p := &parts[w]
			regions := 1 << regionBits
			p.byRegion = make([][]hashedRecord, regions)
			for r := range p.byRegion {
				// Hashes are uniform: a region gets its share, and
				// a little more room spares most a regrowth.
				p.byRegion[r] = make([]hashedRecord, 0, (to-from)/regions+(to-from)/64+16)
			}
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
				h := hashOfKey(s.seed, kbuf)
				r := regionOf(h, regionBits)
				p.byRegion[r] = append(p.byRegion[r], hashedRecord{h, int32(i)})
				if len(kbuf) > 85 {
					p.long[int32(i)] = string(kbuf)
				}
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// leftOver is what the region workers leave to be indexed one by one.
type leftOver struct {
	singles []hashedRecord   // records of a hash of their own
	groups  [][]hashedRecord // records sharing a hash, in record order
}

// fillRegions makes s.byHash and fills it with the live records of
// parts, one worker per region; it counts the records of a hash of their
// own into s.live, except those it leaves over.
func (s *Store) fillRegions(parts []indexPart, regionBits uint) leftOver {
	live := 0
	for _, p := range parts {
		for _, run := range p.byRegion {
			live += len(run)
		}
	}
	s.byHash = newKeyTable(live)
	regions := 1 << regionBits
	left := make([]leftOver, regions)
	fills := make([]*regionFill, regions)
	lives := make([]int, regions)
	var wg sync.WaitGroup
	for r := range regions {
		wg.Go(func() {
			runs := make([][]hashedRecord, len(parts))
			for w := range parts {
				runs[w] = parts[w].byRegion[r]
			}
			sorted := sortByHash(regionBits, runs...)
			for w := range parts {
				parts[w].byRegion[r] = nil // sorted holds them now
			}
			fill := s.byHash.region(r, regionBits)
			fills[r] = fill
			lo := &left[r]
			for g := 0; g < len(sorted); {
				e := g + 1
				for e < len(sorted) && sorted[e].h == sorted[g].h {
					e++
				}
				switch {
				case e > g+1:
					lo.groups = append(lo.groups, sorted[g:e:e])
				case fill.add(sorted[g].h, sorted[g].i):
					// A hash of one record: a key of its own (its
					// slot's flags were set by its worker).
					lives[r]++
				default:
					lo.singles = append(lo.singles, sorted[g])
				}
				g = e
			}
		})
	}
	wg.Wait()
	var all leftOver
	for r := range regions {
		s.byHash.n += fills[r].n
		s.live += lives[r]
		all.singles = append(all.singles, left[r].singles...)
		all.groups = append(all.groups, left[r].groups...)
	}
	return all
}

// sortByHash returns the records of runs, taken in that order, sorted by
// hash, stably: records of one hash stay in the order they were given.
// All hashes share their top `same` bits (a region's).
//
// One pass of a counting sort on the next bits, as many as make buckets
// of 8 to 16 records on average (at most 18 bits, 256K counters in a
// megabyte: 19 records for a region of five million), then an insertion
// sort of each bucket, which is in cache. It writes the
// records once, into the one array it allocates: at ten million records
// that array is 160 MB of fresh memory, whose page faults cost what the
// sorting does.
func sortByHash(same uint, runs ...[]hashedRecord) []hashedRecord {
	n := 0
	for _, run := range runs {
		n += len(run)
	}
	if n == 0 {
		return nil
	}
	b := uint(max(1, min(bits.Len(uint(n))-4, 18, 64-int(same))))
	shift := 64 - same - b
	mask := uint64(1)<<b - 1
	// end[d+1] counts bucket d, then end[d] is where it starts; after
	// the pass end[d] is where it ends.
	end := make([]int32, 1<<b+1)
	for _, run := range runs {
		for _, r := range run {
			end[(r.h>>shift)&mask+1]++
		}
	}
	for d := 1; d < len(end); d++ {
		end[d] += end[d-1]
	}
	out := make([]hashedRecord, n)
	for _, run := range runs {
		for _, r := range run {
			d := (r.h >> shift) & mask
			out[end[d]] = r
			end[d]++
		}
	}
	start := 0
	for _, e := range end[:1<<b] {
		for j := start + 1; j < int(e); j++ {
			for k := j; k > start && out[k-1].h > out[k].h; k-- {
				out[k-1], out[k] = out[k], out[k-1]
			}
		}
		start = int(e)
	}
	return out
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
