package docarray

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// keyTable maps the hash of a live key to its slot: what Go's map did,
// made for a million keys loaded at once. It is open addressing with
// linear probing, each hash's home is given by the hash's top bits, so
// that records sorted by hash (loadIndex) fill it front to back instead
// of at random: the load is a sequential pass over memory, not a cache
// miss per key.
//
// A hash is never 0 (hashOfKey), which marks an empty cell.
type keyTable struct {
	hs    []uint64
	slots []int32
	n     int
	shift uint // home of h: h >> shift
}

// hashOfKey is the hash of a key's UTF-8 bytes under seed, never 0. It
// is a hash of arrayfs's own, not maphash, so that an index saved by one
// process (indexfile.go) is valid in another: the seed is saved with it,
// and is random per store, so that keys cannot be chosen to collide.
func hashOfKey(seed uint64, key []byte) uint64 {
	h := seed ^ uint64(len(key))*0x9e3779b97f4a7c15
	for len(key) >= 8 {
		h = foldMul(h^binary.LittleEndian.Uint64(key), 0xbf58476d1ce4e5b9)
		key = key[8:]
	}
	var t uint64
	for i, c := range key {
		t |= uint64(c) << (8 * i)
	}
	h = foldMul(h^t^0xff51afd7ed558ccd, 0x94d049bb133111eb)
	if h == 0 {
		return 1
	}
	return h
}

func hashOfKeyString(seed uint64, key string) uint64 {
	return hashOfKey(seed, unsafe.Slice(unsafe.StringData(key), len(key)))
}

// foldMul mixes x by a 128-bit product folded to 64 bits.
func foldMul(x, m uint64) uint64 {
	hi, lo := bits.Mul64(x, m)
	return hi ^ lo
}

// newKeyTable is a table sized for n keys.
func newKeyTable(n int) *keyTable {
	t := &keyTable{}
	t.init(max(16, n*4/3+1))
	return t
}

func (t *keyTable) init(want int) {
	size := 1 << bits.Len(uint(want-1))
	t.hs = make([]uint64, size)
	t.slots = make([]int32, size)
	t.shift = uint(64 - bits.Len(uint(size-1)))
	t.n = 0
}

func (t *keyTable) mask() int { return len(t.hs) - 1 }

// find is the cell of h, or the empty cell where it would go.
func (t *keyTable) find(h uint64) int {
	m := t.mask()
	for c := int(h>>t.shift) & m; ; c = (c + 1) & m {
		if t.hs[c] == h || t.hs[c] == 0 {
			return c
		}
	}
}

func (t *keyTable) get(h uint64) (int32, bool) {
	c := t.find(h)
	return t.slots[c], t.hs[c] != 0
}

func (t *keyTable) has(h uint64) bool { return t.hs[t.find(h)] != 0 }

// put maps h to slot i, replacing what h had.
func (t *keyTable) put(h uint64, i int32) {
	if (t.n+1)*4 > len(t.hs)*3 {
		t.grow()
	}
	c := t.find(h)
	if t.hs[c] == 0 {
		t.n++
		t.hs[c] = h
	}
	t.slots[c] = i
}

func (t *keyTable) grow() {
	hs, slots := t.hs, t.slots
	t.init(len(hs) * 2)
	for c, h := range hs {
		if h != 0 {
			t.put(h, slots[c])
		}
	}
}

// Filling the table in parallel (loadIndex). Its cells are cut into
// regions, a power of two of them: the homes of the hashes with the same
// top bits. One goroutine fills each region, in ascending order of hash,
// while nothing else touches the table. Filling an empty region in that
// order needs no probing: a hash goes to its home, or to the cell after
// the last one filled if that is further. One that would go past the
// region's end is left to put, once every region is filled.

// maxFillRegionBits bounds the regions: at most 16, the smallest table.
const maxFillRegionBits = 4

// fillRegionBits is how many top bits of a hash choose its region for a
// fill by up to workers goroutines.
func fillRegionBits(workers int) uint {
	return uint(min(bits.Len(uint(max(workers, 1)))-1, maxFillRegionBits))
}

// topBits is the number in the top n bits of h: its region (or bucket)
// among 1<<n.
func topBits(h uint64, n uint) int {
	return int(h >> (64 - n)) // a shift by 64 is 0: one of one
}

// regionFill is one region being filled.
type regionFill struct {
	t         *keyTable
	next, end int // the first cell free for the next hash; past the region
	n         int // hashes put
}

// region is region r of 1<<regionBits, empty, to be filled.
func (t *keyTable) region(r int, regionBits uint) *regionFill {
	per := len(t.hs) >> regionBits
	return &regionFill{t: t, next: r * per, end: (r + 1) * per}
}

// add puts h, greater than every hash added before, with slot i; false
// when its cell would be past the region (put places it later).
func (f *regionFill) add(h uint64, i int32) bool {
	c := max(int(h>>f.t.shift), f.next)
	if c >= f.end {
		return false
	}
	f.t.hs[c], f.t.slots[c] = h, i
	f.next = c + 1
	f.n++
	return true
}

// del removes h, moving back the cells after it that would no longer be
// found past the hole (linear probing's deletion).
func (t *keyTable) del(h uint64) {
	c := t.find(h)
	if t.hs[c] == 0 {
		return
	}
	m := t.mask()
	t.n--
	for hole, next := c, (c+1)&m; ; next = (next + 1) & m {
		hn := t.hs[next]
		if hn == 0 {
			t.hs[hole] = 0
			return
		}
		home := int(hn>>t.shift) & m
		// next may fill the hole if its home is not in (hole, next].
		if (next-home)&m >= (next-hole)&m {
			t.hs[hole], t.slots[hole] = hn, t.slots[next]
			hole = next
		}
	}
}
