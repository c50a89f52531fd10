package fs

import (
	"context"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/engine"
)

// /.arrayfs/views: the derived views of the dataset's items, as the
// formats describe them (engine.ViewDir, engine.ViewFile). Two node
// types serve any tree of them. Nothing is cached: every lookup and
// every open asks the format again, so an item that goes away takes its
// views with it and one that changes shows its new content (view files
// are DIRECT_IO: the kernel keeps no pages of them).

const viewsName = "views"

// viewTimeout is how long the kernel may keep a view's name and
// attributes: not at all. (go-fuse takes a timeout of 0 for "unset" and
// puts the mount's in its place; a nanosecond is as good as none.)
const viewTimeout = time.Nanosecond

// viewIno is the inode number of the view at path: a hash, in a range of
// its own (top bits set) far from backing files' numbers.
func viewIno(path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(path))
	return 3<<62 | h.Sum64()>>2
}

// viewDirNode is a directory of views.
type viewDirNode struct {
	node
	dir  engine.ViewDir
	path string // under /.arrayfs/views, for inode numbers
}

var (
	_ gofs.NodeLookuper  = (*viewDirNode)(nil)
	_ gofs.NodeReaddirer = (*viewDirNode)(nil)
	_ gofs.NodeGetattrer = (*viewDirNode)(nil)
)

func (f *FS) viewsRoot(ctx context.Context, parent *gofs.Inode, out *fuse.EntryOut) *gofs.Inode {
	n := &viewDirNode{node: node{fsys: f}, dir: f.ds.Views(), path: "/"}
	return n.newInode(ctx, parent, out)
}

func (n *viewDirNode) newInode(ctx context.Context, parent *gofs.Inode, out *fuse.EntryOut) *gofs.Inode {
	n.fill(&out.Attr)
	out.SetEntryTimeout(viewTimeout)
	out.SetAttrTimeout(viewTimeout)
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: viewIno(n.path)})
}

func (n *viewDirNode) fill(a *fuse.Attr) { fillOwnDir(a, n.fsys.started) }

func (n *viewDirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	out.SetTimeout(viewTimeout)
	return 0
}

func (n *viewDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	child, err := n.dir.Lookup(name)
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	path := n.path + name
	switch c := child.(type) {
	case engine.ViewDir:
		d := &viewDirNode{node: node{fsys: n.fsys}, dir: c, path: path + "/"}
		return d.newInode(ctx, n.EmbeddedInode(), out), 0
	case engine.ViewFile:
		st, err := c.Stat()
		if err != nil {
			return nil, n.fsys.errno(err)
		}
		f := &viewFileNode{node: node{fsys: n.fsys}, file: c}
		f.fill(&out.Attr, st)
		out.SetEntryTimeout(viewTimeout)
		out.SetAttrTimeout(viewTimeout)
		return n.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: viewIno(path)}), 0
	}
	return nil, syscall.ENOENT
}

func (n *viewDirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	entries, err := n.dir.List()
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(entries))
	for _, e := range entries {
		mode := uint32(syscall.S_IFREG)
		suffix := ""
		if e.Dir {
			mode, suffix = syscall.S_IFDIR, "/"
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Mode: mode, Ino: viewIno(n.path + e.Name + suffix)})
	}
	return gofs.NewListDirStream(out), 0
}

// viewFileNode is a file of views.
type viewFileNode struct {
	node
	file engine.ViewFile
}

var (
	_ gofs.NodeOpener    = (*viewFileNode)(nil)
	_ gofs.NodeGetattrer = (*viewFileNode)(nil)
	_ gofs.NodeSetattrer = (*viewFileNode)(nil)
)

func (n *viewFileNode) fill(a *fuse.Attr, st engine.ViewStat) {
	a.Mode = syscall.S_IFREG | 0o444
	if st.Writable {
		a.Mode |= 0o200
	}
	a.Nlink = 1
	a.Size = uint64(st.Size)
	a.Blocks = (a.Size + 511) / 512
	a.Owner = fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	t := time.Unix(0, st.Mtime)
	a.SetTimes(&t, &t, &t)
}

func (n *viewFileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := n.file.Stat()
	if err != nil {
		return n.fsys.errno(err)
	}
	if h, ok := f.(*viewFileHandle); ok && h.w != nil {
		st.Size = h.c.Size() // what the writer holds, not yet the item's
	}
	n.fill(&out.Attr, st)
	out.SetTimeout(viewTimeout)
	return 0
}

func (n *viewFileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if t := n.openTruncation(ctx, f, in); t != nil {
		size, _ := in.GetSize()
		if errno := t.truncateOpen(ctx, int64(size)); errno != 0 {
			return errno
		}
		return n.Getattr(ctx, t, out)
	}
	if size, ok := in.GetSize(); ok {
		h, _ := f.(*viewFileHandle)
		if h == nil || h.w == nil {
			// truncate(2) by path: open, truncate, commit.
			c, err := n.file.Open(true)
			if err != nil {
				return n.fsys.errno(err)
			}
			defer c.Release()
			w := c.(engine.WritableContent)
			if err := w.Truncate(int64(size)); err != nil {
				return n.fsys.errno(err)
			}
			if err := w.Commit(); err != nil {
				return n.fsys.errno(err)
			}
			n.fsys.viewWrote(w)
		} else {
			if errno := h.truncate(int64(size)); errno != 0 {
				return errno
			}
		}
	}
	return n.Getattr(ctx, f, out)
}

func (n *viewFileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0
	if write && n.fsys.readOnly() {
		return nil, 0, syscall.EROFS
	}
	c, err := n.file.Open(write)
	if err != nil {
		return nil, 0, n.fsys.errno(err)
	}
	h := &viewFileHandle{fsys: n.fsys, node: n, c: c}
	if write {
		h.w = c.(engine.WritableContent)
		n.fresh.add(ctx, h)
		if flags&syscall.O_TRUNC != 0 {
			if errno := h.truncate(0); errno != 0 {
				c.Release()
				return nil, 0, errno
			}
		}
	}
	// DIRECT_IO: every read is the daemon's, so a view never shows
	// pages cached from before its item changed, and large reads go in
	// one request each (as fast as FUSE reads go). Mappings still work
	// (CAP_DIRECT_IO_ALLOW_MMAP): np.load(mmap_mode='r') of a data.npy.
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// viewFileHandle is an open view file.
type viewFileHandle struct {
	fsys *FS
	node *viewFileNode
	c    engine.Content
	w    engine.WritableContent // when open for writing

	// mu: reads share it (contents serve concurrent reads), writes,
	// truncations and commits hold it.
	mu sync.RWMutex
	// dirty: changed since the last commit; wroteData: by a write. A
	// close commits what was written (and fails if it is refused); a
	// truncation alone waits for the last close, since a shell's
	// redirection closes a duplicate of the descriptor before it writes.
	dirty, wroteData bool
}

var (
	_ gofs.FileReader   = (*viewFileHandle)(nil)
	_ gofs.FileWriter   = (*viewFileHandle)(nil)
	_ gofs.FileFsyncer  = (*viewFileHandle)(nil)
	_ gofs.FileFlusher  = (*viewFileHandle)(nil)
	_ gofs.FileReleaser = (*viewFileHandle)(nil)
)

func (h *viewFileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.fsys.reads.view.Add(1)
	h.mu.RLock()
	defer h.mu.RUnlock()
	// A slice of the mapping, not a splice from the file: splicing a
	// page-cache file copies it into the pipe first (Linux 6.x), and
	// measured slower here (2.9-3.3 GB/s against 3.2-3.5 for 1 MiB reads).
	v, err := h.c.View(off, len(dest))
	if err != nil {
		return nil, h.fsys.errno(err)
	}
	return viewResult{v}, 0
}

func (h *viewFileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.w == nil {
		return 0, syscall.EBADF
	}
	h.node.fresh.drop(h)
	h.mu.Lock()
	defer h.mu.Unlock()
	n, err := h.w.WriteAt(data, off)
	if n > 0 {
		h.dirty, h.wroteData = true, true
		if r, ok := h.w.(engine.InPlaceWriter); ok {
			// The array changed now: what the kernel keeps of it goes
			// before the write is answered, so a reader or a mapping of
			// the canonical file never sees the old bytes after it.
			h.fsys.dropTargetPages(h.w.Target(), r, off, int64(n))
		}
	}
	return uint32(n), h.fsys.errno(err)
}

func (h *viewFileHandle) truncate(size int64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.w.Truncate(size); err != nil {
		return h.fsys.errno(err)
	}
	h.dirty = true
	return 0
}

// commit hands what was written to the item, once per batch of
// changes; dataOnly leaves a truncation alone for a later commit.
func (h *viewFileHandle) commit(dataOnly bool) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w == nil || !h.dirty || (dataOnly && !h.wroteData) {
		return 0
	}
	h.dirty, h.wroteData = false, false
	err := h.w.Commit()
	h.fsys.viewWrote(h.w)
	return h.fsys.errno(err)
}

// Flush (each close) commits: a refused write (a document's text that is
// not UTF-8) fails the close, and the item keeps its old content.
func (h *viewFileHandle) Flush(ctx context.Context) syscall.Errno { return h.commit(true) }

func (h *viewFileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := h.commit(false); errno != 0 {
		return errno
	}
	if h.w == nil {
		return 0
	}
	return h.fsys.errno(h.w.Sync())
}

// truncateOpen is the truncation of the open(O_TRUNC) that made h.
func (h *viewFileHandle) truncateOpen(ctx context.Context, size int64) syscall.Errno {
	return h.truncate(size)
}

func (h *viewFileHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	h.commit(false)
	h.c.Release()
	return 0
}

// viewWrote drops the kernel's cached pages of the canonical file a view
// wrote into, so that reading it through its own name shows the write:
// before the commit (a close, an fsync, a truncation) is answered. The
// request being served holds the view's inode, not the target's.
func (f *FS) viewWrote(w engine.WritableContent) {
	rel := w.Target()
	if rel == "" {
		return
	}
	if in := f.cachedInode(splitRel(rel)); in != nil {
		in.NotifyContent(0, 0)
	}
}

// dropTargetPages drops the kernel's pages of the part of rel a view's
// write of n bytes at off changed. The WRITE being served holds the
// view's inode, not the target's.
func (f *FS) dropTargetPages(rel string, r engine.InPlaceWriter, off, n int64) {
	start, end := r.TargetRange(off, n)
	if end <= start {
		return
	}
	if in := f.cachedInode(splitRel(rel)); in != nil {
		in.NotifyContent(start, end-start)
	}
}

// cachedInode is the inode at the path of names from the root, if the
// kernel knows every name on the way (only those are in the tree).
func (f *FS) cachedInode(names []string) *gofs.Inode {
	in := f.root.EmbeddedInode()
	for _, name := range names {
		if in = in.GetChild(name); in == nil {
			return nil
		}
	}
	return in
}

// splitRel is the names of a dataset-relative path.
func splitRel(rel string) []string {
	rel = filepath.Clean(rel)
	if rel == "." {
		return nil
	}
	return strings.Split(rel, "/")
}

// viewsChanged drops the kernel's names under /.arrayfs/views/<dirRel>:
// an item of that directory went away or was renamed, and the kernel
// may keep a view's name for up to a clock tick past its (nanosecond)
// timeout. Only names the kernel has looked up are in the tree.
func (f *FS) viewsChanged(dirRel string) {
	in := f.cachedInode(append([]string{reservedDir, viewsName}, splitRel(dirRel)...))
	if in == nil {
		return
	}
	for name := range in.Children() {
		go in.NotifyEntry(name)
	}
}
