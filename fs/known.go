package fs

import (
	"context"
	"sync"
	"sync/atomic"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// Nodes the kernel knows, handed back to it under memory pressure.
//
// go-fuse keeps a node for every inode the kernel holds (about 500 live
// bytes for a document: its node, its entry in go-fuse's node table and
// in its parent's children), and the kernel holds inodes until its own
// memory runs short, which on a machine with gigabytes free is never.
// So an `ls -l` or an rsync of a store of N documents leaves N nodes in
// the daemon, whatever the memory budget (memory.go) says. Past the
// budget the collector, held to it by the soft limit, runs without
// pause: a dirdb rewrite loop ran at a third of its speed after the
// benchmark's listing of 100,000 documents, half the CPU in the GC.
//
// So every node but a directory's is kept in a list in the order it
// was last looked up or opened, and when the live heap passes three
// quarters of the soft limit the coldest are handed back to the kernel
// (FUSE_NOTIFY_PRUNE, or an entry invalidation where the kernel lacks
// it). The kernel drops those it does not use (an open file keeps its
// inode) and sends FORGET, which frees the node; a later access is one
// LOOKUP more. Directories stay: their children would go with them.
//
// Lock order: go-fuse's inode locks before knownNodes.mu (OnForget is
// called under them), and nothing is called with mu held.
type knownNodes struct {
	mu sync.Mutex
	// head is the sentinel of the list, coldest first.
	head node
	n    int
	// epoch is a coarse clock (advanced by each shrink check): a node
	// used again within an epoch is not moved again.
	epoch  atomic.Uint32
	pruned atomic.Int64
	// prunedAt is the collection count at the last prune (memory.go).
	prunedAt atomic.Uint64
}

// knownLinks is a node's place in the list; mu guards prev and next.
type knownLinks struct {
	prev, next *node
	used       atomic.Uint32 // epoch of the last use
	asked      atomic.Uint32 // epoch it was last handed back
}

func newKnownNodes() *knownNodes {
	k := &knownNodes{}
	k.head.known.prev, k.head.known.next = &k.head, &k.head
	k.epoch.Store(1)
	return k
}

// base gives every node type its shared part.
func (n *node) base() *node { return n }

type nodeBase interface{ base() *node }

// childInode is the node to answer for name in parent: the one the
// kernel has there already when it is the same file (id), else a new
// one (ops). go-fuse itself would keep the old node and drop the new
// one only after the lookup returned, too late for it to leave the
// list of known nodes (and for a create, its handle would be on the
// dropped node). The node's use is recorded; directories are not
// tracked.
func (f *FS) childInode(ctx context.Context, parent *gofs.Inode, name string, ops gofs.InodeEmbedder, id gofs.StableAttr) *gofs.Inode {
	ch := parent.GetChild(name)
	if name == "" || ch == nil || ch.StableAttr() != id {
		ch = parent.NewInode(ctx, ops, id)
	}
	if b, ok := ch.Operations().(nodeBase); ok && !ch.IsDir() {
		f.known.use(b.base())
	}
	return ch
}

// use moves n to the warm end of the list, adding it if it is not
// there (a new node, or one a spurious OnForget took out).
func (k *knownNodes) use(n *node) {
	e := k.epoch.Load()
	if n.known.used.Load() == e {
		return // moved already in this epoch (forget clears used)
	}
	k.mu.Lock()
	if n.known.next != nil {
		n.known.prev.known.next, n.known.next.known.prev = n.known.next, n.known.prev
	} else {
		k.n++
	}
	last := k.head.known.prev
	n.known.prev, n.known.next = last, &k.head
	last.known.next, k.head.known.prev = n, n
	n.known.used.Store(e)
	k.mu.Unlock()
}

// forget takes n out of the list: the kernel let go of it.
func (k *knownNodes) forget(n *node) {
	k.mu.Lock()
	if n.known.next != nil {
		n.known.prev.known.next, n.known.next.known.prev = n.known.next, n.known.prev
		n.known.prev, n.known.next = nil, nil
		n.known.used.Store(0)
		k.n--
	}
	k.mu.Unlock()
}

// OnForget: the kernel is done with the node.
func (n *node) OnForget() { n.fsys.known.forget(n) }

// count is the number of nodes in the list.
func (k *knownNodes) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

// tick advances the epoch.
func (k *knownNodes) tick() { k.epoch.Add(1) }

// coldest returns up to max nodes from the cold end that were not used
// in this epoch or the two before, nor handed back in the last
// askAgain epochs (the kernel forgets a node a while after, or keeps
// it while it is open). They stay listed until the kernel forgets them.
func (k *knownNodes) coldest(max int) []*node {
	e := k.epoch.Load()
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*node
	for n := k.head.known.next; n != &k.head && len(out) < max; n = n.known.next {
		if e-n.known.used.Load() <= 2 {
			break
		}
		if a := n.known.asked.Load(); a != 0 && e-a < askAgain {
			continue
		}
		n.known.asked.Store(e)
		out = append(out, n)
	}
	return out
}

// askAgain is how many epochs a node handed back is not handed back
// again.
const askAgain = 8

// pruneBatch bounds one notification (8 bytes a node).
const pruneBatch = 512

// prune hands up to max of the coldest nodes back to the kernel.
func (k *knownNodes) prune(max int) {
	nodes := k.coldest(max)
	// A notification goes to the connection of the node: group them
	// by file system (the main one and each store connection).
	byFS := map[*FS][]*gofs.Inode{}
	for _, n := range nodes {
		byFS[n.fsys] = append(byFS[n.fsys], n.EmbeddedInode())
	}
	for _, ins := range byFS {
		for len(ins) > 0 {
			batch := ins[:min(len(ins), pruneBatch)]
			ins = ins[len(batch):]
			if errno := batch[0].NotifyPrune(batch); errno != 0 {
				// An older kernel: drop the names instead.
				for _, in := range batch {
					if name, parent := in.Parent(); parent != nil {
						parent.NotifyEntry(name)
					}
				}
			}
		}
	}
	k.pruned.Add(int64(len(nodes)))
}
