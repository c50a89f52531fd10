package docarray

import (
	"math/rand"
	"testing"
)

// TestKeyTableAgreesWithAMap: random puts, replacements and deletes
// (hashes crowded into few homes, so that probe runs and the moves of
// deletion are exercised) leave the table holding what a Go map holds.
func TestKeyTableAgreesWithAMap(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	tab := newKeyTable(4)
	want := map[uint64]int32{}
	for op := 0; op < 60000; op++ {
		// Top bits from a small set: many keys share a home.
		h := uint64(rng.Intn(64))<<58 | uint64(rng.Intn(1<<20)) | 1
		switch rng.Intn(3) {
		case 0, 1:
			i := int32(rng.Intn(1 << 30))
			tab.put(h, i)
			want[h] = i
		case 2:
			tab.del(h)
			delete(want, h)
		}
		if op%5000 == 0 {
			if tab.n != len(want) {
				t.Fatalf("op %d: %d keys, want %d", op, tab.n, len(want))
			}
			for k, v := range want {
				if got, ok := tab.get(k); !ok || got != v {
					t.Fatalf("op %d: get(%x) = %d %v, want %d", op, k, got, ok, v)
				}
			}
		}
	}
	for k := range want {
		tab.del(k)
	}
	if tab.n != 0 {
		t.Fatalf("%d keys left after deleting all", tab.n)
	}
	for c, h := range tab.hs {
		if h != 0 {
			t.Fatalf("cell %d still holds %x", c, h)
		}
	}
}

func TestSortByHashIsStable(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	a := make([]hashedRecord, 100000)
	for i := range a {
		a[i] = hashedRecord{h: uint64(rng.Intn(5000)) * 0x9e3779b97f4a7c15, i: int32(i)}
	}
	sortByHash(a)
	for j := 1; j < len(a); j++ {
		if a[j-1].h > a[j].h || (a[j-1].h == a[j].h && a[j-1].i > a[j].i) {
			t.Fatalf("out of order at %d: %+v %+v", j, a[j-1], a[j])
		}
	}
}
