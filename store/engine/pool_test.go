package engine

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// memOwner is an owner whose backing store is a map: what was written
// back, in which batches.
type memOwner struct {
	name string
	mu   sync.Mutex
	disk map[string]any
	// batches records the keys of each WriteBack call, in order.
	batches [][]string
	fail    error
	delay   time.Duration
}

func newMemOwner(name string) *memOwner { return &memOwner{name: name, disk: map[string]any{}} }

func (o *memOwner) String() string { return o.name }

func (o *memOwner) WriteBack(units []*Unit) error {
	if o.delay > 0 {
		time.Sleep(o.delay)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return o.fail
	}
	var keys []string
	for _, u := range units {
		if u.Owner != o {
			panic("unit of another owner in batch")
		}
		o.disk[u.Key] = u.Value
		keys = append(keys, u.Key)
	}
	o.batches = append(o.batches, keys)
	return nil
}

func (o *memOwner) get(key string) any {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.disk[key]
}

func unit(o Owner, key string, size int64, v any) *Unit {
	return &Unit{Owner: o, Key: key, Size: size, Value: v}
}

func TestPoolEvictsLeastRecentlyUsedFirst(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(4, 1<<20)
	for i := 0; i < 4; i++ {
		if err := p.MarkDirty(unit(o, fmt.Sprint(i), 1, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Touch 0 again: 1 is now the least recently used.
	if err := p.MarkDirty(unit(o, "0", 1, 100)); err != nil {
		t.Fatal(err)
	}
	if len(o.batches) != 0 {
		t.Fatalf("written back before the pool was full: %v", o.batches)
	}
	if err := p.MarkDirty(unit(o, "4", 1, 4)); err != nil {
		t.Fatal(err)
	}
	// Five units in a pool of four: write back down to the low-water
	// mark (4 - max(4/16, 1) = 3), least recently used first.
	if fmt.Sprint(o.batches) != "[[1 2]]" {
		t.Fatalf("eviction wrote back %v, want [[1 2]]", o.batches)
	}
	if s := p.Stats(); s.Units != 3 || s.Evictions != 2 {
		t.Fatalf("stats after eviction: %+v", s)
	}
	if o.get("0") != nil {
		t.Fatal("the recently used unit was written back")
	}
}

func TestPoolBoundedByBytes(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(1000, 1000)
	for i := 0; i < 50; i++ {
		if err := p.MarkDirty(unit(o, fmt.Sprint(i), 100, i)); err != nil {
			t.Fatal(err)
		}
		if s := p.Stats(); s.Bytes > 1000 {
			t.Fatalf("pool holds %d bytes, bound 1000", s.Bytes)
		}
	}
	// Everything not in the pool any more is on "disk".
	for i := 0; i < 50; i++ {
		k := fmt.Sprint(i)
		if _, held := p.Lookup(o, k); !held && o.get(k) != i {
			t.Fatalf("unit %s neither held nor written back", k)
		}
	}
}

func TestPoolBatchesEvictionsByOwner(t *testing.T) {
	a, b := newMemOwner("a"), newMemOwner("b")
	p := NewPool(32, 1<<20)
	for i := 0; i < 32; i++ {
		o := a
		if i%2 == 1 {
			o = b
		}
		p.MarkDirty(unit(o, fmt.Sprint(i), 1, i))
	}
	p.MarkDirty(unit(a, "x", 1, "x"))
	// 33 > 32: the pool writes back down to 32 - 32/16 = 30, three units,
	// oldest first, one batch per owner.
	if len(a.batches) != 1 || len(b.batches) != 1 {
		t.Fatalf("batches: a=%v b=%v", a.batches, b.batches)
	}
	if fmt.Sprint(a.batches[0]) != "[0 2]" || fmt.Sprint(b.batches[0]) != "[1]" {
		t.Fatalf("batches: a=%v b=%v, want [0 2] and [1]", a.batches, b.batches)
	}
}

func TestPoolFlushOwnerOnly(t *testing.T) {
	a, b := newMemOwner("a"), newMemOwner("b")
	p := NewPool(100, 1<<20)
	p.MarkDirty(unit(a, "1", 1, "a1"))
	p.MarkDirty(unit(b, "1", 1, "b1"))
	p.MarkDirty(unit(a, "2", 1, "a2"))
	if err := p.Flush(a); err != nil {
		t.Fatal(err)
	}
	if a.get("1") != "a1" || a.get("2") != "a2" {
		t.Fatal("Flush(a) did not write a back")
	}
	if fmt.Sprint(a.batches) != "[[1 2]]" {
		t.Fatalf("Flush(a) batches %v, want one batch oldest first", a.batches)
	}
	if b.get("1") != nil {
		t.Fatal("Flush(a) wrote back b")
	}
	if err := p.FlushAll(); err != nil {
		t.Fatal(err)
	}
	if b.get("1") != "b1" || p.Stats().Units != 0 {
		t.Fatal("FlushAll left something")
	}
}

func TestPoolLookupServesNewestVersion(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(10, 1<<20)
	p.MarkDirty(unit(o, "k", 1, "v1"))
	p.MarkDirty(unit(o, "k", 1, "v2"))
	u, ok := p.Lookup(o, "k")
	if !ok || u.Value != "v2" {
		t.Fatalf("Lookup = %v %v, want v2", u, ok)
	}
	if s := p.Stats(); s.Units != 1 || s.Bytes != 1 {
		t.Fatalf("two versions of one key counted twice: %+v", s)
	}
	p.Flush(o)
	if _, ok := p.Lookup(o, "k"); ok {
		t.Fatal("still held after Flush")
	}
	if o.get("k") != "v2" {
		t.Fatalf("written back %v, want v2", o.get("k"))
	}
}

// A version marked dirty while an older one is being written back must
// not be lost when that write-back completes.
func TestPoolRedirtyDuringWriteBack(t *testing.T) {
	o := newMemOwner("a")
	o.delay = 50 * time.Millisecond
	p := NewPool(10, 1<<20)
	p.MarkDirty(unit(o, "k", 1, "old"))
	done := make(chan error)
	go func() { done <- p.Flush(o) }()
	time.Sleep(10 * time.Millisecond) // the flush is now writing "old"
	p.MarkDirty(unit(o, "k", 1, "new"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Flush waits for units being written back by others, so "new" is
	// on disk once a second Flush returns.
	if err := p.Flush(o); err != nil {
		t.Fatal(err)
	}
	if got := o.get("k"); got != "new" {
		t.Fatalf("disk has %v, want new", got)
	}
	if p.Stats().Units != 0 {
		t.Fatal("pool not empty")
	}
}

func TestPoolWriteBackErrorSticksUntilFlush(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(10, 1<<20)
	o.fail = errors.New("disk on fire")
	p.MarkDirty(unit(o, "k", 1, "v"))
	if err := p.writeBackAllQuietly(); err == nil {
		t.Fatal("timer write-back did not fail")
	}
	if _, ok := p.Lookup(o, "k"); !ok {
		t.Fatal("a unit that failed to write back was dropped")
	}
	o.mu.Lock()
	o.fail = nil
	o.mu.Unlock()
	// The retry succeeds, but the earlier failure is still reported once,
	// as fsync reports an earlier write-back error.
	if err := p.Flush(o); err == nil || err.Error() != "disk on fire" {
		t.Fatalf("Flush = %v, want the sticky error", err)
	}
	if err := p.Flush(o); err != nil {
		t.Fatalf("second Flush = %v, want nil", err)
	}
	if o.get("k") != "v" {
		t.Fatal("unit not written back after recovery")
	}
}

func TestPoolDiscard(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(10, 1<<20)
	p.MarkDirty(unit(o, "k", 5, "v"))
	p.Discard(o)
	if s := p.Stats(); s.Units != 0 || s.Bytes != 0 {
		t.Fatalf("after Discard: %+v", s)
	}
	p.FlushAll()
	if o.get("k") != nil {
		t.Fatal("discarded unit written back")
	}
}

func TestPoolTimerWritesBack(t *testing.T) {
	o := newMemOwner("a")
	p := NewPool(10, 1<<20)
	p.StartTimer(10*time.Millisecond, func(err error) { t.Error(err) }, nil)
	defer p.Close()
	p.MarkDirty(unit(o, "k", 1, "v"))
	deadline := time.Now().Add(5 * time.Second)
	for o.get("k") == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if o.get("k") != "v" {
		t.Fatal("timer did not write back")
	}
}

// Many writers, a small pool, concurrent flushes: every final version of
// every key ends up on disk and nothing else is left (run with -race).
func TestPoolConcurrentNoLostWrite(t *testing.T) {
	owners := []*memOwner{newMemOwner("a"), newMemOwner("b"), newMemOwner("c")}
	p := NewPool(8, 1<<20)
	const writers, keys, rounds = 6, 20, 50
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			o := owners[w%len(owners)]
			for r := 0; r < rounds; r++ {
				for k := 0; k < keys; k++ {
					// Writer w owns keys w/len(owners)*keys...: no two
					// writers race on one key.
					key := fmt.Sprintf("%d-%d", w, k)
					if err := p.MarkDirty(unit(o, key, 1, r)); err != nil {
						t.Error(err)
						return
					}
				}
				if r%10 == 0 {
					if err := p.Flush(o); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				p.writeBackAllQuietly()
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := p.FlushAll(); err != nil {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		o := owners[w%len(owners)]
		for k := 0; k < keys; k++ {
			key := fmt.Sprintf("%d-%d", w, k)
			if got := o.get(key); got != rounds-1 {
				t.Fatalf("%s: disk has %v, want %d", key, got, rounds-1)
			}
		}
	}
	if s := p.Stats(); s.Units != 0 || s.Bytes != 0 {
		t.Fatalf("pool not empty: %+v", s)
	}
}
