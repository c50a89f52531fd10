package fs

import (
	"context"
	"os"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/docarray"
)

// dirHandle is an open directory: its listing (made at the first
// readdir, and again at a rewind, as rewinddir(3) promises) and the
// backing directory itself, held open so that fstat answers for the
// directory the handle opened whatever its name leads to now (renamed
// over, removed), as on any file system.
type dirHandle struct {
	node *dirNode
	dir  *os.File
	ds   gofs.DirStream
}

var (
	_ gofs.NodeOpendirHandler = (*dirNode)(nil)
	_ gofs.FileReaddirenter   = (*dirHandle)(nil)
	_ gofs.FileSeekdirer      = (*dirHandle)(nil)
	_ gofs.FileReleasedirer   = (*dirHandle)(nil)
	_ gofs.FileGetattrer      = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer     = (*dirHandle)(nil)
)

func (n *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	dir, err := n.fsys.back.OpenDir(n.rel())
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return &dirHandle{node: n, dir: dir}, n.listingCache(), 0
}

// The kernel keeps a store directory's listing (FOPEN_CACHE_DIR), so
// that ls -l or rsync of a store listed before costs no READDIRPLUS: at
// each open the daemon keeps the kernel's copy (FOPEN_KEEP_CACHE) while
// the store's listing is the version the last open without it saw, and
// drops it otherwise; the kernel then lists anew and keeps that.
//
// Why the copy is never stale: a listing is made at the first readdir of
// an open, after the version was recorded, so it is that version or a
// later one, and a later one differs at the next open, which drops the
// kernel's copy. Changes made through this connection also reset it
// (a directory change moves its i_version), and so does a reload of
// changes behind arrayfs's back (docsChanged), for a directory already
// open and rewound. Other directories are listed at every open:
// their backing files change with no one telling arrayfs.

// listedMark is the store and listing version of a directory's last
// open that did not keep the kernel's listing.
type listedMark struct {
	mu sync.Mutex
	s  *docarray.Store
	v  docarray.ListingVersion
}

// listingCache answers the open flags for the kernel's copy of n's
// listing.
func (n *dirNode) listingCache() uint32 {
	s := n.docStore()
	if s == nil {
		return 0
	}
	v := s.ListingVersion()
	m := &n.listed
	m.mu.Lock()
	keep := m.s == s && m.v == v
	m.s, m.v = s, v
	m.mu.Unlock()
	if keep {
		return fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	// An open without FOPEN_KEEP_CACHE does not drop the kernel's copy
	// (it checks only the directory's mtime and i_version, which a
	// change behind arrayfs's back leaves alone): drop it before the
	// answer. OPENDIR holds no lock the invalidation needs.
	n.NotifyContent(0, 0)
	return fuse.FOPEN_CACHE_DIR
}

// listing makes the listing if there is none (the first readdir, or the
// first after a rewind).
func (h *dirHandle) listing(ctx context.Context) syscall.Errno {
	if h.ds == nil {
		ds, errno := h.node.Readdir(ctx)
		if errno != 0 {
			return errno
		}
		h.ds = ds
	}
	return 0
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := h.listing(ctx); errno != 0 {
		return nil, errno
	}
	if !h.ds.HasNext() {
		return nil, 0
	}
	e, errno := h.ds.Next()
	return &e, errno
}

// Seekdir to 0 is a rewind: the next readdir lists the directory anew.
// Other offsets are positions in the listing made before (telldir).
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 && h.ds != nil {
		h.ds.Close()
		h.ds = nil
	}
	if errno := h.listing(ctx); errno != 0 {
		return errno
	}
	if sd, ok := h.ds.(gofs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (h *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	if h.ds != nil {
		h.ds.Close()
	}
	h.dir.Close()
}

// Getattr is fstat of the open directory.
func (h *dirHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(h.dir.Fd()), &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Ino = 0 // the node's own number
	return 0
}

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return h.node.Fsync(ctx, h, flags)
}
