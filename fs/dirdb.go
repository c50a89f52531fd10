package fs

import (
	"context"
	"os"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/dirdb"
	"github.com/arrayfs/arrayfs/store/engine"
)

// dirdb entries (store/dirdb) change behind the mount's back: Python
// processes rewrite them in place. So their files are opened with
// DIRECT_IO and without KEEP_CACHE: every read of a handle is served
// from that handle's snapshot, a version copied under dirdb's lock at
// open, and never from page cache filled by another open of another
// version (the page cache is per inode, not per handle: mixing two
// versions in it is exactly a torn read). DIRECT_IO also frees reads
// from the kernel's idea of the size, which a Python rewrite changes.
// Shared mappings still work (CAP_DIRECT_IO_ALLOW_MMAP, fs.go).

// openDirdb opens a member of a dirdb entry; it owns f's reference.
func (n *fileNode) openDirdb(ctx context.Context, f *dirdb.File, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	defer f.Release()
	if errno := n.dirdbOwn(); errno != 0 {
		return nil, 0, errno
	}
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) == 0 && flags&syscall.O_TRUNC == 0 {
		snap, err := f.Snapshot(ctx)
		if err != nil {
			return nil, 0, n.fsys.errno(err)
		}
		return &dirdbReadHandle{viewHandle[*dirdb.Snapshot]{snap}, n.fsys, f.Rel()}, fuse.FOPEN_DIRECT_IO, 0
	}
	w, err := f.NewWriter(ctx, flags&syscall.O_TRUNC != 0, flags&syscall.O_APPEND != 0)
	if err != nil {
		return nil, 0, n.fsys.errno(err)
	}
	h := &dirdbWriteHandle{fsys: n.fsys, node: n, w: w}
	h.writers.wrote(ctx) // its opener is its writer (closer.go)
	n.fresh.add(ctx, h)
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// createDirdb creates NAME.pickle (or NAME.json in a database): staged,
// it appears on disk when first published. ok is false for other names.
func (n *dirNode) createDirdb(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno, bool) {
	uid, gid := -1, -1
	if caller, ok := fuse.FromContext(ctx); ok && os.Geteuid() == 0 && (caller.Uid != 0 || caller.Gid != 0) {
		uid, gid = int(caller.Uid), int(caller.Gid)
	}
	w, st, ok, err := n.fsys.ds.Dirdb().Create(ctx, n.childRel(name), int(flags), mode, uid, gid)
	if !ok {
		return nil, nil, 0, 0, false
	}
	if err != nil {
		return nil, nil, 0, n.fsys.errno(err), true
	}
	out.Attr.FromStat(&st.Stat_t)
	out.Attr.Ino = n.fsys.ino(&st.Stat_t)
	ch := n.fsys.childInode(ctx, n.EmbeddedInode(), name, &fileNode{node: node{fsys: n.fsys}}, n.fsys.stable(&st))
	fn, ok := ch.Operations().(*fileNode)
	if !ok {
		w.Release(ctx)
		return nil, nil, 0, syscall.EIO, true
	}
	h := &dirdbWriteHandle{fsys: n.fsys, node: fn, w: w}
	h.writers.wrote(ctx) // its creator is its writer (closer.go)
	return ch, h, fuse.FOPEN_DIRECT_IO, 0, true
}

// pendingDirdb fills st for name when it is a member being created (not
// on disk yet); Lookup shows it.
func (n *dirNode) pendingDirdb(name string, st *engine.Stat) bool {
	s, _, ok, err := n.fsys.ds.Dirdb().Stat(n.childRel(name))
	if !ok || err != nil {
		return false
	}
	*st = s
	return true
}

// appendPendingDirdb adds the members being created to a listing.
func (n *dirNode) appendPendingDirdb(entries []fuse.DirEntry) []fuse.DirEntry {
	for name, st := range n.fsys.ds.Dirdb().Pending(n.rel()) {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: st.Mode, Ino: n.fsys.ino(&st.Stat_t)})
	}
	return entries
}

// dirdbSiblingsChanged tells the kernel that an unlink or rename of name
// (NAME.pickle) also removed or moved NAME.json. Asynchronous: the
// kernel holds the directory's lock until the operation returns.
func (n *dirNode) dirdbSiblingsChanged(name string) {
	if meta, ok := dirdb.MetaName(name); ok {
		go n.NotifyEntry(meta)
	}
}

// getattrDirdb answers GETATTR for a dirdb member: through a handle, the
// version that handle sees; else the pending version or the backing
// file. The inode number is the node's: a publication replaces the
// backing file (a new inode) and the kernel is told to look it up again.
func (n *fileNode) getattrDirdb(f gofs.FileHandle, out *fuse.AttrOut) (syscall.Errno, bool) {
	var st syscall.Stat_t
	var err error
	switch h := f.(type) {
	case *dirdbReadHandle:
		// go-fuse hands a path's GETATTR to an open handle too (the
		// kernel sends no handle for stat(2)): while the name still
		// leads to the file the snapshot was taken of, its attributes
		// now are the answer (a utimes since the open shows), the
		// snapshot's only once the name leads elsewhere.
		st = h.src.Stat()
		if _, parent := n.Parent(); parent == nil {
			st.Nlink = 0 // unlinked, or renamed over: no name leads to it
		} else if cur, _, ok, err := n.fsys.ds.Dirdb().Stat(n.rel()); ok && err == nil && cur.Ino == st.Ino && cur.Dev == st.Dev {
			st = cur.Stat_t
		}
	case *dirdbWriteHandle:
		st, err = h.w.Stat()
	default:
		s, _, ok, serr := n.fsys.ds.Dirdb().Stat(n.rel())
		if !ok {
			return 0, false
		}
		if serr == nil {
			if errno := n.dirdbOwn(); errno != 0 {
				return errno, true
			}
		}
		st, err = s.Stat_t, serr
	}
	if err != nil {
		return gofs.ToErrno(err), true
	}
	out.FromStat(&st)
	out.Ino = 0
	return 0, true
}

// dirdbOwn checks that node n still stands for its member's file: the
// published one, or the pending version (a file being created is its
// stage until its first publication). Otherwise a publication (a new
// inode) replaced it, and its number may already be another file's:
// ESTALE makes the kernel look the name up again.
func (n *fileNode) dirdbOwn() syscall.Errno {
	file, hasFile, stage, pending, ok := n.fsys.ds.Dirdb().Versions(n.rel())
	switch {
	case !ok:
		return 0
	case hasFile && n.isOwn(&file), pending && n.isOwn(&stage):
		return 0
	case !hasFile && !pending:
		return syscall.ENOENT
	}
	return syscall.ESTALE
}

// setattrDirdb applies a SETATTR to a dirdb member: a size change is a
// write (staged, and published at once when made by path), other
// attributes go to the pending version if there is one, else to the
// backing file.
func (n *fileNode) setattrDirdb(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) (syscall.Errno, bool) {
	var df *dirdb.File
	var w *dirdb.Writer
	switch h := f.(type) {
	case *dirdbWriteHandle:
		w = h.w
		df = w.File()
	}
	if df == nil {
		item, err := n.fsys.ds.Classify(n.rel())
		if err != nil {
			return n.fsys.errno(err), true
		}
		var ok bool
		if df, ok = item.(*dirdb.File); !ok {
			if item != nil {
				item.Release()
			}
			return 0, false
		}
		defer df.Release()
	}
	size, truncated := in.GetSize()
	if truncated {
		if h, ok := f.(*dirdbWriteHandle); ok {
			h.writers.wrote(ctx)
		}
		if errno := n.truncateDirdb(ctx, df, w, int64(size)); errno != 0 {
			return errno, true
		}
	}
	_, hasMode := in.GetMode()
	_, hasUID := in.GetUID()
	_, hasGID := in.GetGID()
	_, hasM := in.GetMTime()
	_, hasA := in.GetATime()
	if hasMode || hasUID || hasGID || hasM || hasA {
		staged, err := df.SetattrStaged(func(file *os.File) error { return setattrFile(file, in) })
		if err != nil {
			return gofs.ToErrno(err), true
		}
		if !staged {
			if errno := setattrRel(n.fsys.back, df.Rel(), in); errno != 0 {
				return errno, true
			}
		}
	}
	if truncated && w == nil {
		// truncate(2) by path published a new file, which the node no
		// longer stands for (the kernel is told to look it up again):
		// answer with what the name holds now.
		st, _, ok, err := n.fsys.ds.Dirdb().Stat(n.rel())
		if !ok {
			return syscall.ENOENT, true
		}
		if err != nil {
			return gofs.ToErrno(err), true
		}
		out.FromStat(&st.Stat_t)
		out.Ino = 0
		return 0, true
	}
	errno, _ := n.getattrDirdb(f, out)
	return errno, true
}

func (n *fileNode) truncateDirdb(ctx context.Context, df *dirdb.File, w *dirdb.Writer, size int64) syscall.Errno {
	if w != nil {
		return n.fsys.errno(w.Truncate(ctx, size))
	}
	// truncate(2) by path: a whole write of its own, published now.
	tw, err := df.NewWriter(ctx, false, false)
	if err != nil {
		return n.fsys.errno(err)
	}
	err = tw.Truncate(ctx, size)
	if err == nil {
		_, err = tw.Flush(ctx)
	}
	if rerr := tw.Release(ctx); err == nil {
		err = rerr
	}
	if err == nil {
		n.replaced()
	}
	return n.fsys.errno(err)
}

// pendingXattr runs an extended attribute call on the pending version of
// a dirdb member being created or rewritten (what becomes the file);
// ok is false when there is none.
func (n *fileNode) pendingXattr(call func(fd int) (int, error)) (uint32, syscall.Errno, bool) {
	var sz int
	ok, err := n.fsys.ds.Dirdb().PendingFile(n.rel(), func(f *os.File) error {
		var err error
		sz, err = call(int(f.Fd()))
		return err
	})
	return uint32(sz), gofs.ToErrno(err), ok
}

// replaced tells the kernel that the backing file of n was replaced
// (a publication renames a new inode over it, or another program did),
// so that the next lookup shows the new inode. Asynchronous, as the
// kernel may hold locks of the directory while the current operation
// runs.
func (n *node) replaced() {
	if name, parent := n.Parent(); parent != nil {
		go parent.NotifyEntry(name)
	}
}

// replacedNow is replaced, done before the current request returns: for
// a commit in FLUSH or FSYNC, during which the kernel holds no lock of
// the directory. Then every open that starts after the writer's close(2)
// returned looks the name up again and finds the new file; only opens
// already under way meet the old node, answer ESTALE once and are
// retried by the kernel.
func (n *node) replacedNow() {
	if name, parent := n.Parent(); parent != nil {
		parent.NotifyEntry(name)
	}
}

// dirdbReadHandle is a member opened for reading: its snapshot.
type dirdbReadHandle struct {
	viewHandle[*dirdb.Snapshot]
	fsys *FS
	rel  string
}

var (
	_ gofs.FileReader   = (*dirdbReadHandle)(nil)
	_ gofs.FileReleaser = (*dirdbReadHandle)(nil)
	_ gofs.FileFsyncer  = (*dirdbReadHandle)(nil)
)

// Fsync through a descriptor open for reading makes durable what it
// reads: a version published at a close is renamed in at once but made
// durable later (engine/dirsync.go), as ext4 does with a close.
func (h *dirdbReadHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.fsys.errno(h.fsys.ds.Dirdb().SyncPublished(h.rel))
}

// dirdbWriteHandle is a member opened for writing: reads and writes go
// to its pending version, published at the close of its last writer or
// at fsync.
type dirdbWriteHandle struct {
	fsys    *FS
	node    *fileNode
	w       *dirdb.Writer
	writers writerSet // processes that wrote (closer.go)
}

var (
	_ gofs.FileReader   = (*dirdbWriteHandle)(nil)
	_ gofs.FileWriter   = (*dirdbWriteHandle)(nil)
	_ gofs.FileFlusher  = (*dirdbWriteHandle)(nil)
	_ gofs.FileFsyncer  = (*dirdbWriteHandle)(nil)
	_ gofs.FileReleaser = (*dirdbWriteHandle)(nil)
)

func (h *dirdbWriteHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.w.ReadAt(ctx, dest, off)
	if err != nil {
		return nil, h.fsys.errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// truncateOpen is the truncation of the open(O_TRUNC) that made h.
func (h *dirdbWriteHandle) truncateOpen(ctx context.Context, size int64) syscall.Errno {
	h.node.fresh.drop(h)
	h.writers.wrote(ctx)
	return h.fsys.errno(h.w.Truncate(ctx, size))
}

func (h *dirdbWriteHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.fresh.drop(h)
	h.writers.wrote(ctx)
	n, err := h.w.WriteAt(ctx, data, off)
	return uint32(n), h.fsys.errno(err)
}

// Flush is close(2): the last writer's close publishes.
func (h *dirdbWriteHandle) Flush(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if !h.writers.isWriter(ctx) {
		return 0 // a fork's copy of the descriptor closed (closer.go)
	}
	published, err := h.w.Flush(ctx)
	return h.after(published, err)
}

func (h *dirdbWriteHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	published, err := h.w.Sync(ctx)
	return h.after(published, err)
}

// after tells the kernel what a FLUSH or FSYNC did: a publication
// before close(2) or fsync(2) returns, so that a stat or open after it
// finds the new file (even while a reader holds the old one open).
func (h *dirdbWriteHandle) after(published bool, err error) syscall.Errno {
	if published {
		h.node.replacedNow()
	}
	if err != nil {
		// The kernel's attributes follow the refused writes; the
		// file is as it was.
		go h.node.NotifyContent(0, 0)
	}
	return h.fsys.errno(err)
}

func (h *dirdbWriteHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if err := h.w.Release(ctx); err != nil {
		h.fsys.errno(err)
	}
	return 0
}
