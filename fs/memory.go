package fs

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The daemon's memory budget: the pool's dirty bytes, 64 MiB for
// everything else (the kernel's inodes the node tree mirrors, request
// buffers, caches of views), and 64 bytes per document slot the open
// stores index. It is the Go runtime's soft limit, refreshed as stores
// open and grow: the collector then works harder as the heap nears the
// budget, instead of letting it reach twice what is live (GOGC's
// default), which is where the resident size of a mount serving 100,000
// documents went (220 MiB, 100 MiB of it live).
const (
	memoryBase   = 64 << 20
	memoryPerDoc = 64
	// memoryHeadroom is kept below the budget in the soft limit: the
	// runtime overshoots its limit a little while it collects, and
	// some of the daemon's memory is not the heap's to give back.
	memoryHeadroom = 16 << 20
)

// MemoryBudget is the budget now.
func (f *FS) MemoryBudget() int64 {
	return f.opts.PoolBytes + memoryBase + memoryPerDoc*int64(f.ds.Docs().Indexed())
}

// memoryCheck is how often the limit is refreshed and the live heap
// looked at; it is also the epoch of known nodes' uses (known.go).
const memoryCheck = 250 * time.Millisecond

// nodeBytes is what a node the kernel knows keeps live: after ls -l of
// 100,000 documents the live heap is 540 bytes a document larger
// (pprof: 390 of them the node, its entry in go-fuse's table and in its
// parent's children).
const nodeBytes = 500

// KeepMemoryBudget makes the budget the runtime's soft memory limit,
// now and at every check after, unless GOMEMLIMIT sets one; and at
// every check hands nodes back to the kernel while the live heap is
// past three quarters of the limit (known.go).
func (f *FS) KeepMemoryBudget() {
	own := os.Getenv("GOMEMLIMIT") == ""
	set := func() {
		if own {
			debug.SetMemoryLimit(f.MemoryBudget() - memoryHeadroom)
		}
	}
	set()
	f.ds.Docs().SetIndexingHook(set)
	go func() {
		for range time.Tick(memoryCheck) {
			set()
			f.known.tick()
			f.shrinkKnown(debug.SetMemoryLimit(-1))
		}
	}()
}

// shrinkKnown prunes nodes enough to bring the live heap back to 5/8 of
// limit, once it is past 3/4 of it: below that the collector has room
// to work without running all the time (past 9/10 it hardly stops),
// and a prune costs the kernel's cache of what it hands back. The live
// heap is what the last collection found: after a prune it is looked at
// again only once a collection has run since, or it would count the
// nodes just handed back again.
func (f *FS) shrinkKnown(limit int64) {
	live, cycles := heapLive(), gcCycles()
	if limit <= 0 || live <= limit/4*3 || cycles == f.known.prunedAt.Load() {
		return
	}
	f.known.prunedAt.Store(cycles)
	f.known.prune(int((live - limit/8*5) / nodeBytes))
}

// heapLive is the heap the last collection found live.
func heapLive() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// gcCycles counts the collections so far.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// goMemory is the memory the Go runtime has mapped (heap, stacks and
// its own structures; not the mappings of backing files).
func goMemory() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}
