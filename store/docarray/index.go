package docarray

import (
	"fmt"
	"math/bits"
	"runtime"
	"slices"
	"sync"
)

// The in-memory index of header.bin: its records parsed into slots, and
// every live key mapped to its slot by a hash (keys themselves are read
// from the header when needed).

// loadIndex parses header.bin into the slots and the key map.
//
// A million records take a tenth of a second, ten million a second, on
// two CPUs; nothing of it is done by one CPU alone (the key map's
// duplicates and collisions aside), and nothing is sorted out of cache:
//
//  1. Scan: one worker per CPU over its own range of records parses
//     them into their slots and hashes their keys. It hands each live
//     record to the bucket of its hash's top bits (indexBucketBits),
//     keeping record order. A bucket lies in one region of the key map
//     (keytable.go: a hash's home cell is given by its top bits, so a
//     range of hashes is a range of cells).
//  2. Fill: one worker per region takes its buckets in order, sorts each
//     by hash (a radix sort within the cache, stable: record order within
//     a hash), taking the scan workers' lists in their order, and fills
//     its cells front to back. A hash of several records (a key's
//     duplicates, or two keys colliding) is found as neighbours there,
//     and is left for the end, as is a record whose probe would run past
//     the region's last cell.
//  3. What was left is taken one by one.
//
// Tried and measured slower on ten million records (first mount to
// first byte, same runs): sorting each region whole after the scan,
// 10-30% longer (one scatter of every record over the region's 80 MB)
// with 125 MiB more memory; inserting each record straight into its
// region's cells in record order, 1.27-1.66 s against 1.19-1.40 s (a
// probe reads a cell before it writes one, where a scatter only writes);
// three LSD passes of 8 bits, no faster and 136 MiB more memory.
func (s *Store) loadIndex() error {
	n := int(s.sigs[0].Size / int64(s.rs))
	s.initIndex(n)
	s.indexLoaded = false
	workers := min(runtime.GOMAXPROCS(0), max(1, n/65536))
	regionBits := fillRegionBits(workers)
	bucketBits := indexBucketBits(n, regionBits)
	parts, err := s.scanIndexParts(n, workers, bucketBits)
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
	left := s.fillRegions(parts, regionBits, bucketBits)
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

// indexBucketBits is how many top bits of a hash make the buckets the
// scan hands records to: at least one per region, buckets of about 4,096
// records, and at most 256 of them, so that each scan worker appends to
// few enough streams for its caches. Ten million records make buckets
// of 40,000 (640 KB), still sorted within the second-level cache. (4,096
// buckets of 2,400 were slower: 0.98-1.27 s against 0.90-1.07 s.)
func indexBucketBits(n int, regionBits uint) uint {
	return max(regionBits, uint(min(max(bits.Len(uint(n))-12, 0), 8)))
}

// hashedRecord is a live record and its key's hash.
type hashedRecord struct {
	h uint64
	i int32
}

// indexPart is what one scan worker of loadIndex found in its records.
type indexPart struct {
	// buckets holds its live records by the top bits of their hash,
	// each in record order.
	buckets [][]hashedRecord
	nbad    int
	bad     []string
	long    map[int32]string // keys long enough to be hashed names
}

// scanIndexParts parses records [0, n) into s.slots, one range per
// worker, and hands their live records to the 1<<bucketBits buckets of
// the top bits of their hash.
func (s *Store) scanIndexParts(n, workers int, bucketBits uint) ([]indexPart, error) {
	parts := make([]indexPart, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		from, to := n*w/workers, n*(w+1)/workers
		wg.Go(func() {
			p := &parts[w]
			nb := 1 << bucketBits
			p.buckets = make([][]hashedRecord, nb)
			// Hashes are uniform: a bucket gets its share, and a
			// little more room spares most a regrowth. One array
			// holds them all.
			per := (to-from)/nb + (to-from)/nb/8 + 8
			all := make([]hashedRecord, nb*per)
			for b := range p.buckets {
				p.buckets[b] = all[b*per : b*per : (b+1)*per]
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
				b := topBits(h, bucketBits)
				p.buckets[b] = append(p.buckets[b], hashedRecord{h, int32(i)})
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
// parts, one worker per region, bucket by bucket; the records it put (of
// a hash of their own) count in s.live, those it leaves over do not.
func (s *Store) fillRegions(parts []indexPart, regionBits, bucketBits uint) leftOver {
	live := 0
	for _, p := range parts {
		for _, run := range p.buckets {
			live += len(run)
		}
	}
	s.byHash = newKeyTable(live)
	regions := 1 << regionBits
	left := make([]leftOver, regions)
	fills := make([]*regionFill, regions)
	var wg sync.WaitGroup
	for r := range regions {
		wg.Go(func() {
			fill := s.byHash.region(r, regionBits)
			fills[r] = fill
			lo := &left[r]
			runs := make([][]hashedRecord, len(parts))
			var sorter bucketSorter
			per := 1 << (bucketBits - regionBits)
			for b := r * per; b < (r+1)*per; b++ {
				for w := range parts {
					runs[w] = parts[w].buckets[b]
				}
				sorted := sorter.sort(bucketBits, runs)
				for g := 0; g < len(sorted); {
					e := g + 1
					for e < len(sorted) && sorted[e].h == sorted[g].h {
						e++
					}
					switch {
					case e > g+1:
						lo.groups = append(lo.groups, slices.Clone(sorted[g:e]))
					case fill.add(sorted[g].h, sorted[g].i):
						// A hash of one record: a key of its own
						// (its slot's flags were set by its worker).
					default:
						lo.singles = append(lo.singles, sorted[g])
					}
					g = e
				}
			}
		})
	}
	wg.Wait()
	var all leftOver
	for r := range regions {
		s.byHash.n += fills[r].n
		s.live += fills[r].n
		all.singles = append(all.singles, left[r].singles...)
		all.groups = append(all.groups, left[r].groups...)
	}
	return all
}

// bucketSorter sorts buckets of records by hash, one after another, in
// memory it keeps: a bucket is a few thousand records, in cache.
type bucketSorter struct {
	out []hashedRecord
	end []int32
}

// sort returns the records of runs, taken in that order, sorted by hash,
// stably: records of one hash stay in the order they were given. All
// hashes share their top `same` bits (a bucket's). The slice is the
// sorter's, valid until its next sort.
//
// One pass of a counting sort on the next bits, as many as make
// sub-buckets of 8 to 16 records on average, then an insertion sort of
// each.
func (bs *bucketSorter) sort(same uint, runs [][]hashedRecord) []hashedRecord {
	n := 0
	for _, run := range runs {
		n += len(run)
	}
	if n == 0 {
		return nil
	}
	b := uint(max(1, min(bits.Len(uint(n))-4, 16, 64-int(same))))
	shift := 64 - same - b
	mask := uint64(1)<<b - 1
	// end[d+1] counts sub-bucket d, then end[d] is where it starts;
	// after the pass end[d] is where it ends.
	if cap(bs.end) < 1<<b+1 {
		bs.end = make([]int32, 1<<b+1)
	}
	end := bs.end[:1<<b+1]
	clear(end)
	for _, run := range runs {
		for _, r := range run {
			end[(r.h>>shift)&mask+1]++
		}
	}
	for d := 1; d < len(end); d++ {
		end[d] += end[d-1]
	}
	if cap(bs.out) < n {
		bs.out = make([]hashedRecord, n+n/4)
	}
	out := bs.out[:n]
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
