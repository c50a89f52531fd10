package docarray

import (
	"math/rand"
	"slices"
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

func TestBucketSortIsStable(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	a := make([]hashedRecord, 100000)
	for i := range a {
		a[i] = hashedRecord{h: uint64(rng.Intn(5000)) * 0x9e3779b97f4a7c15, i: int32(i)}
	}
	var bs bucketSorter
	a = bs.sort(0, [][]hashedRecord{a})
	for j := 1; j < len(a); j++ {
		if a[j-1].h > a[j].h || (a[j-1].h == a[j].h && a[j-1].i > a[j].i) {
			t.Fatalf("out of order at %d: %+v %+v", j, a[j-1], a[j])
		}
	}
}

// TestRegionFillAgreesWithPut: a table filled region by region, in
// ascending order of hash, with what runs past a region's end put after,
// holds what puts one by one would: every hash found, and deletion
// (whose moves rely on the probe runs being whole) empties it.
func TestRegionFillAgreesWithPut(t *testing.T) {
	for regionBits := uint(0); regionBits <= maxFillRegionBits; regionBits++ {
		rng := rand.New(rand.NewSource(int64(regionBits)))
		const n = 3000
		tab := newKeyTable(n)
		regions := 1 << regionBits
		per := len(tab.hs) / regions
		want := map[uint64]int32{}
		byRegion := make([][]uint64, regions)
		for len(want) < n {
			// Half the hashes crowd the last cells of a region, so
			// that its fill runs past its end.
			cell := rng.Intn(len(tab.hs))
			if rng.Intn(2) == 0 {
				cell = (cell/per+1)*per - 1 - rng.Intn(min(per, 4))
			}
			h := uint64(cell)<<tab.shift | uint64(rng.Int63())>>(64-tab.shift) | 1
			if _, dup := want[h]; dup {
				continue
			}
			want[h] = int32(len(want))
			r := topBits(h, regionBits)
			byRegion[r] = append(byRegion[r], h)
		}
		var left []uint64
		for r := range regions {
			slices.Sort(byRegion[r])
			f := tab.region(r, regionBits)
			for _, h := range byRegion[r] {
				if !f.add(h, want[h]) {
					left = append(left, h)
				}
			}
			tab.n += f.n
		}
		if len(left) == 0 {
			t.Fatalf("%d regions: no hash ran past its region; the test crowds too little", regions)
		}
		for _, h := range left {
			tab.put(h, want[h])
		}
		if tab.n != n {
			t.Fatalf("%d regions: %d keys, want %d", regions, tab.n, n)
		}
		for h, i := range want {
			if got, ok := tab.get(h); !ok || got != i {
				t.Fatalf("%d regions: get(%x) = %d %v, want %d", regions, h, got, ok, i)
			}
		}
		for h := range want {
			tab.del(h)
		}
		for c, h := range tab.hs {
			if h != 0 || tab.n != 0 {
				t.Fatalf("%d regions: cell %d still holds %x after deleting all (%d keys)", regions, c, h, tab.n)
			}
		}
	}
}
