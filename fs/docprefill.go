package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/arrayfs/arrayfs/store/docarray"
)

// A document's first read, one round trip early: on a store connection
// at the IOCTL its open sends, elsewhere at its first OPEN
// (prefillAtOpen).
//
// A store connection never sees an OPEN (storeconn.go), so the first
// request the kernel sends after most programs open a document is an
// IOCTL: isatty's TCGETS, which Python's builtin open() and C's stdio
// ask before buffering a file. The daemon answers it (ENOTTY, as
// before) after putting the whole document into the kernel's page cache
// (NOTIFY_STORE): the read that follows is served by the kernel, and the
// READ round trip of a first read is gone. A document is sent once per
// version; one larger than prefillMax is left to READ and readahead.
//
// Every later open sends the IOCTL too, so it must cost next to nothing
// (a store lookup per IOCTL made it 7 us slower, a quarter of its round
// trip): while the store's version is the one the node saw last, nothing
// of it changed, and the IOCTL is answered at once. Not sending is
// always safe: the kernel then reads what it has not got.
//
// Staleness: the bytes sent are the version the store has now. If the
// store reloads a change behind arrayfs's back between that lookup and
// the kernel taking the bytes, the invalidation the reload sends
// (docsChanged) may land first; so the version is looked up again after
// the store, and a changed one is invalidated here.

const prefillMax = 128 << 10

// prefillAtOpen is the same on a read-write mount, at the first OPEN of
// the node, which a reader always sends there: the document goes into
// the page cache before the OPEN is answered (with FOPEN_KEEP_CACHE, or
// the open would drop it), so its first read sends no READ, and the
// kernel, which marks a file's atime stale after every READ on a
// writable mount, sends no GETATTR at the next stat (Python's open()
// makes one) either. It reports whether the kernel holds version e now.
//
// n.mu is held throughout, so no other open of the node (a writer's
// included) is answered in between: no later open can be answered
// before the bytes land, and so read them though a newer version was
// committed meanwhile. The store cannot wait on a page lock of the
// node's: no open of it was answered before, so no READ or mapping of
// it is under way.
func (n *docNode) prefillAtOpen(s *docarray.Store, name string, r *docarray.Reader, e docarray.Entry) bool {
	// A version changed behind our back meanwhile is dropped by this
	// OPEN itself, answered without FOPEN_KEEP_CACHE.
	_, current := n.sendVersion(s, name, r, e)
	return current
}

// sendVersion puts version e, read through r, into the kernel's page
// cache (if it is small enough) and reports whether the kernel took it,
// and whether it took it and the store still has that version after.
func (n *docNode) sendVersion(s *docarray.Store, name string, r *docarray.Reader, e docarray.Entry) (sent, current bool) {
	if e.Size == 0 || e.Size > prefillMax {
		return false, false
	}
	v := r.View(0, int(e.Size))
	errno := n.WriteCache(0, v.Bytes)
	v.Release()
	if errno != 0 {
		return false, false // the kernel keeps nothing (ENOENT: it forgot the inode)
	}
	if now, err := s.Lookup(name); err != nil || now.Version != e.Version {
		return true, false
	}
	n.fsys.reads.prefilled.Add(1)
	return true, true
}

// prefillMark is a store and its version.
type prefillMark struct {
	s  *docarray.Store
	at docarray.StoreVersion
}

var _ gofs.NodeIoctler = (*docNode)(nil)

func (n *docNode) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	if f == nil && n.fsys.base != "" {
		n.prefill()
	}
	return 0, syscall.ENOTTY
}

// prefill puts the document's current version into the kernel's page
// cache, unless it was already sent.
func (n *docNode) prefill() {
	n.mu.Lock()
	mark := n.prefilled
	n.mu.Unlock()
	if mark.s != nil && mark.s.Version() == mark.at {
		return
	}
	s, name, errno := n.locate()
	if errno != 0 {
		return
	}
	mark = prefillMark{s, s.Version()}
	r, e, err := s.Open(name)
	if err != nil {
		return
	}
	defer r.Release()
	n.mu.Lock()
	already := n.hasCached && n.cached == e.Version
	n.prefilled = mark
	n.mu.Unlock()
	if already {
		return
	}
	switch sent, current := n.sendVersion(s, name, r, e); {
	case sent && !current:
		n.NotifyContent(0, 0)
	case current:
		n.mu.Lock()
		n.cached, n.hasCached = e.Version, true
		n.mu.Unlock()
	}
}
