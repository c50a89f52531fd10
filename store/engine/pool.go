package engine

import (
	"container/list"
	"sync"
	"time"
)

// An Owner is a backing item (an array, a document store, a dirdb entry)
// whose dirty units the pool holds.
type Owner interface {
	// WriteBack makes units durable in the owner's backing files, data
	// before the metadata that points at it. units all belong to this
	// owner, least recently used first. It must not call back into the
	// pool that owns the units.
	WriteBack(units []*Unit) error
	// String names the owner in logs and errors (its path).
	String() string
}

// A Unit is one piece of dirty state: a document's new bytes, a dirty
// range of an array, a staged entry. Value is the owner's payload and is
// immutable once handed to the pool: a later change is a new Unit with
// the same key.
type Unit struct {
	Owner Owner
	Key   string
	Size  int64
	Value any
}

type unitKey struct {
	owner Owner
	key   string
}

// unitState is where a held unit is in its life. A unit that is clean is
// not in the pool at all.
type unitState int

const (
	// dirty: in the LRU list, waiting for write-back.
	dirty unitState = iota
	// writingBack: taken out of the LRU by one goroutine that is writing
	// it back with the pool unlocked.
	writingBack
)

type entry struct {
	unit  *Unit
	state unitState
	// next is a newer version marked dirty while this one was being
	// written back; it becomes the dirty version once that finishes.
	next *Unit
	elem *list.Element // in lru while dirty
}

// Pool is the LRU write-back pool: every write lands here first, and the
// pool decides when it reaches the backing files.
//
// Policy (all of it lives in this file):
//   - bounded by unit count and by bytes; MarkDirty past either bound
//     writes back the least recently used units, in a batch of about a
//     sixteenth of the pool so that owners can amortise their fsyncs;
//   - Flush writes back one owner (fsync), FlushAll everything (timer,
//     signals, unmount);
//   - a failed write-back leaves its units dirty and the error sticks to
//     the owner until a Flush of that owner reports it, as the kernel does
//     for page write-back errors.
type Pool struct {
	maxUnits int
	maxBytes int64

	mu      sync.Mutex
	settled *sync.Cond // signalled whenever a write-back finishes
	lru     *list.List // of *entry, most recently used at the front
	entries map[unitKey]*entry
	byOwner map[Owner]map[string]*entry
	bytes   int64
	failed  map[Owner]error

	stats PoolStats

	stopTimer chan struct{}
	timerDone chan struct{}
}

// PoolStats are counters for /.arrayfs/stats.json and tests.
type PoolStats struct {
	Units      int   `json:"units"`
	Bytes      int64 `json:"bytes"`
	MaxUnits   int   `json:"max_units"`
	MaxBytes   int64 `json:"max_bytes"`
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	WriteBacks int64 `json:"write_backs"` // units written back
	Evictions  int64 `json:"evictions"`   // units written back because the pool was full
	Flushes    int64 `json:"flushes"`     // Flush and FlushAll calls
	Errors     int64 `json:"errors"`      // failed write-back batches
}

// NewPool returns a pool bounded by maxUnits dirty units and maxBytes.
func NewPool(maxUnits int, maxBytes int64) *Pool {
	p := &Pool{
		maxUnits: max(maxUnits, 1),
		maxBytes: max(maxBytes, 1),
		lru:      list.New(),
		entries:  map[unitKey]*entry{},
		byOwner:  map[Owner]map[string]*entry{},
		failed:   map[Owner]error{},
	}
	p.settled = sync.NewCond(&p.mu)
	return p
}

// MarkDirty puts u in the pool as the newest version of its key, then
// evicts while the pool is over its bounds. An eviction failure is
// returned (u itself is held either way).
func (p *Pool) MarkDirty(u *Unit) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := unitKey{u.Owner, u.Key}
	if e := p.entries[k]; e != nil {
		switch e.state {
		case dirty:
			p.bytes += u.Size - e.unit.Size
			e.unit = u
			p.lru.MoveToFront(e.elem)
		case writingBack:
			if e.next != nil {
				p.bytes -= e.next.Size
			}
			p.bytes += u.Size
			e.next = u
		}
	} else {
		e := &entry{unit: u, state: dirty}
		e.elem = p.lru.PushFront(e)
		p.entries[k] = e
		if p.byOwner[u.Owner] == nil {
			p.byOwner[u.Owner] = map[string]*entry{}
		}
		p.byOwner[u.Owner][u.Key] = e
		p.bytes += u.Size
	}
	return p.evictLocked()
}

// Lookup returns the newest version of a unit still in the pool, so
// owners can serve reads of data not yet written back.
func (p *Pool) Lookup(owner Owner, key string) (*Unit, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[unitKey{owner, key}]
	if e == nil {
		p.stats.Misses++
		return nil, false
	}
	p.stats.Hits++
	if e.next != nil {
		return e.next, true
	}
	return e.unit, true
}

// Units returns the newest version of every unit of owner still held.
func (p *Pool) Units(owner Owner) []*Unit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Unit
	for _, e := range p.byOwner[owner] {
		if e.next != nil {
			out = append(out, e.next)
		} else {
			out = append(out, e.unit)
		}
	}
	return out
}

// Discard drops owner's dirty units without writing them back (the owner
// was deleted or replaced as a whole). Units being written back finish.
func (p *Pool) Discard(owner Owner) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.byOwner[owner] {
		if e.state == dirty {
			p.removeLocked(e)
		} else if e.next != nil {
			p.bytes -= e.next.Size
			e.next = nil
		}
	}
	delete(p.failed, owner)
}

// Flush writes back every unit of owner, including ones being written
// back by others when it was called, and reports any write-back error of
// owner not reported before.
func (p *Pool) Flush(owner Owner) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Flushes++
	for {
		var batch []*entry
		busy := false
		for _, e := range p.byOwner[owner] {
			if e.state == dirty {
				batch = append(batch, e)
			} else {
				busy = true
			}
		}
		if len(batch) == 0 {
			if !busy {
				break
			}
			p.settled.Wait()
			continue
		}
		p.sortByAge(batch)
		if err := p.writeBackLocked(owner, batch); err != nil {
			delete(p.failed, owner)
			return err
		}
	}
	err := p.failed[owner]
	delete(p.failed, owner)
	return err
}

// FlushAll writes back everything and returns the first error.
func (p *Pool) FlushAll() error {
	p.mu.Lock()
	owners := make([]Owner, 0, len(p.byOwner)+len(p.failed))
	for o := range p.byOwner {
		owners = append(owners, o)
	}
	for o := range p.failed {
		if p.byOwner[o] == nil {
			owners = append(owners, o)
		}
	}
	p.stats.Flushes++
	p.mu.Unlock()
	var first error
	for _, o := range owners {
		if err := p.Flush(o); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Stats returns a snapshot of the counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Units = len(p.entries)
	s.Bytes = p.bytes
	s.MaxUnits = p.maxUnits
	s.MaxBytes = p.maxBytes
	return s
}

// StartTimer writes everything back every interval until Close, then
// calls after (nil: nothing), for what is made durable beyond the
// pool's units (Backing.SyncDirs). errf receives write-back errors
// (they also stay with their owners).
func (p *Pool) StartTimer(interval time.Duration, errf func(error), after func() error) {
	if interval <= 0 || p.stopTimer != nil {
		return
	}
	p.stopTimer = make(chan struct{})
	p.timerDone = make(chan struct{})
	go func() {
		defer close(p.timerDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stopTimer:
				return
			case <-t.C:
				err := p.writeBackAllQuietly()
				if after != nil {
					if aerr := after(); err == nil {
						err = aerr
					}
				}
				if err != nil && errf != nil {
					errf(err)
				}
			}
		}
	}()
}

// writeBackAllQuietly is the timer's flush: unlike FlushAll it leaves
// sticky errors for the owner's next fsync to report.
func (p *Pool) writeBackAllQuietly() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	byOwner := map[Owner][]*entry{}
	var order []Owner
	for el := p.lru.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*entry)
		o := e.unit.Owner
		if byOwner[o] == nil {
			order = append(order, o)
		}
		byOwner[o] = append(byOwner[o], e)
	}
	var first error
	for _, o := range order {
		if err := p.writeBackLocked(o, byOwner[o]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops the timer. It does not write back: callers FlushAll first.
func (p *Pool) Close() {
	if p.stopTimer != nil {
		close(p.stopTimer)
		<-p.timerDone
		p.stopTimer = nil
	}
}

// evictLocked writes back least recently used units while the pool is
// over a bound. When every held unit is already being written back by
// someone else it waits for them: that is the pool's back-pressure.
func (p *Pool) evictLocked() error {
	for p.overLocked() {
		if p.lru.Len() == 0 {
			p.settled.Wait()
			continue
		}
		// Write back down to a low-water mark in one go.
		slack := max(p.maxUnits/16, 1)
		byteSlack := p.maxBytes / 16
		units, bytes := len(p.entries), p.bytes
		byOwner := map[Owner][]*entry{}
		var order []Owner
		for el := p.lru.Back(); el != nil; el = el.Prev() {
			if units <= p.maxUnits-slack && bytes <= p.maxBytes-byteSlack {
				break
			}
			e := el.Value.(*entry)
			o := e.unit.Owner
			if byOwner[o] == nil {
				order = append(order, o)
			}
			byOwner[o] = append(byOwner[o], e)
			units--
			bytes -= e.unit.Size
		}
		for _, o := range order {
			p.stats.Evictions += int64(len(byOwner[o]))
			if err := p.writeBackLocked(o, byOwner[o]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Pool) overLocked() bool {
	return len(p.entries) > p.maxUnits || p.bytes > p.maxBytes
}

// writeBackLocked writes back batch (dirty entries of owner, oldest
// first) with the pool unlocked, then settles each entry: written units
// leave the pool unless a newer version arrived meanwhile.
func (p *Pool) writeBackLocked(owner Owner, batch []*entry) error {
	// Entries gathered before an earlier batch unlocked the pool may
	// have been taken by another writer since.
	live := batch[:0]
	for _, e := range batch {
		if e.state == dirty && e.elem != nil {
			live = append(live, e)
		}
	}
	batch = live
	if len(batch) == 0 {
		return nil
	}
	units := make([]*Unit, len(batch))
	for i, e := range batch {
		e.state = writingBack
		p.lru.Remove(e.elem)
		e.elem = nil
		units[i] = e.unit
	}
	p.mu.Unlock()
	err := owner.WriteBack(units)
	p.mu.Lock()
	defer p.settled.Broadcast()
	if err != nil {
		p.stats.Errors++
		p.failed[owner] = err
		for _, e := range batch {
			if e.next != nil {
				p.bytes -= e.unit.Size
				e.unit, e.next = e.next, nil
			}
			e.state = dirty
			e.elem = p.lru.PushBack(e) // retried last, after healthy units
		}
		return err
	}
	p.stats.WriteBacks += int64(len(batch))
	for _, e := range batch {
		if e.next != nil {
			p.bytes -= e.unit.Size
			e.unit, e.next = e.next, nil
			e.state = dirty
			e.elem = p.lru.PushFront(e)
			continue
		}
		p.removeLocked(e)
	}
	return nil
}

func (p *Pool) removeLocked(e *entry) {
	u := e.unit
	if e.elem != nil {
		p.lru.Remove(e.elem)
		e.elem = nil
	}
	delete(p.entries, unitKey{u.Owner, u.Key})
	if m := p.byOwner[u.Owner]; m != nil {
		delete(m, u.Key)
		if len(m) == 0 {
			delete(p.byOwner, u.Owner)
		}
	}
	p.bytes -= u.Size
	if e.next != nil {
		p.bytes -= e.next.Size
	}
}

// sortByAge orders entries least recently used first, the order the LRU
// list holds them in; a pool holds few units per owner, so a scan of the
// list is cheaper than keeping a second index.
func (p *Pool) sortByAge(batch []*entry) {
	if len(batch) < 2 {
		return
	}
	in := make(map[*entry]bool, len(batch))
	for _, e := range batch {
		in[e] = true
	}
	out := make([]*entry, 0, len(batch))
	for el := p.lru.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*entry); in[e] {
			out = append(out, e)
		}
	}
	copy(batch, out)
}
