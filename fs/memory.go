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

// KeepMemoryBudget makes the budget the runtime's soft memory limit,
// now and every second after, unless GOMEMLIMIT sets one.
func (f *FS) KeepMemoryBudget() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	set := func() { debug.SetMemoryLimit(f.MemoryBudget() - memoryHeadroom) }
	set()
	f.ds.Docs().SetIndexingHook(set)
	go func() {
		for range time.Tick(time.Second) {
			set()
		}
	}()
}

// goMemory is the memory the Go runtime has mapped (heap, stacks and
// its own structures; not the mappings of backing files).
func goMemory() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}
