package docarray

import (
	"hash/maphash"
	"math/bits"
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

// hashOfKey is the hash of a key's UTF-8 bytes under seed, never 0.
func hashOfKey(seed maphash.Seed, key []byte) uint64 {
	if h := maphash.Bytes(seed, key); h != 0 {
		return h
	}
	return 1
}

func hashOfKeyString(seed maphash.Seed, key string) uint64 {
	if h := maphash.String(seed, key); h != 0 {
		return h
	}
	return 1
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
