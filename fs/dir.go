package fs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store/docarray"
	"github.com/arrayfs/arrayfs/store/engine"
)

// dirNode is a directory of the dataset, passed through: its listing is
// the backing directory's, less the names the store hides.
type dirNode struct {
	node
	listed listedMark // dirhandle.go
}

var (
	_ gofs.NodeLookuper      = (*dirNode)(nil)
	_ gofs.NodeReaddirer     = (*dirNode)(nil)
	_ gofs.NodeGetattrer     = (*dirNode)(nil)
	_ gofs.NodeSetattrer     = (*dirNode)(nil)
	_ gofs.NodeMkdirer       = (*dirNode)(nil)
	_ gofs.NodeRmdirer       = (*dirNode)(nil)
	_ gofs.NodeCreater       = (*dirNode)(nil)
	_ gofs.NodeUnlinker      = (*dirNode)(nil)
	_ gofs.NodeRenamer       = (*dirNode)(nil)
	_ gofs.NodeSymlinker     = (*dirNode)(nil)
	_ gofs.NodeLinker        = (*dirNode)(nil)
	_ gofs.NodeMknoder       = (*dirNode)(nil)
	_ gofs.NodeFsyncer       = (*dirNode)(nil)
	_ gofs.NodeStatfser      = (*dirNode)(nil)
	_ gofs.NodeGetxattrer    = (*dirNode)(nil)
	_ gofs.NodeSetxattrer    = (*dirNode)(nil)
	_ gofs.NodeListxattrer   = (*dirNode)(nil)
	_ gofs.NodeRemovexattrer = (*dirNode)(nil)
)

// isRoot reports whether n is the dataset's root (not a store
// connection's).
func (n *dirNode) isRoot() bool { return n.fsys.root == n && n.fsys.base == "" }

// hidden reports whether name is never shown in this directory.
func (n *dirNode) hidden(name string) bool {
	if n.isRoot() && name == reservedDir {
		return true
	}
	return n.fsys.ds.Hidden(n.rel(), name)
}

func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	if n.isRoot() && name == reservedDir {
		return n.lookupReserved(ctx, out)
	}
	s, errno := n.docStoreErr()
	if errno != 0 {
		return nil, errno
	}
	if s != nil {
		return n.storeLookup(ctx, s, name, out)
	}
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	st, err := n.fsys.back.Lstat(n.childRel(name))
	if err != nil && !n.pendingDirdb(name, &st) {
		return nil, gofs.ToErrno(err)
	}
	out.Attr.FromStat(&st.Stat_t)
	return n.fsys.newChild(ctx, n.EmbeddedInode(), name, &st), 0
}

func (n *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	s, errno := n.docStoreErr()
	if errno != 0 {
		return nil, errno
	}
	if s != nil {
		return n.storeReaddir(s)
	}
	dirRel := n.rel()
	names, err := n.fsys.back.ReadDirNames(dirRel)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	entries := make([]fuse.DirEntry, 0, len(names)+1)
	if n.isRoot() && n.fsys.opts.Views == viewsVisible {
		entries = append(entries, fuse.DirEntry{Name: reservedDir, Mode: syscall.S_IFDIR, Ino: reservedIno})
	}
	for _, name := range names {
		if n.isRoot() && name == reservedDir {
			continue
		}
		if n.fsys.ds.Hidden(dirRel, name) {
			n.fsys.ds.Tidy(dirRel, name)
			continue
		}
		if n.fsys.ds.Unlisted(dirRel, name) {
			continue
		}
		st, err := n.fsys.back.Lstat(n.childRel(name))
		if err != nil {
			continue // gone since the listing
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: st.Mode, Ino: n.fsys.ino(&st.Stat_t)})
	}
	entries = n.appendPendingDirdb(entries)
	return gofs.NewListDirStream(entries), 0
}

// Getattr of a directory follows its name: a directory has no content
// of arrayfs's to mix up, and a store swapped in by a prune is the same
// directory to its users.
func (n *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*dirHandle); ok {
		return h.Getattr(ctx, out)
	}
	st, err := n.fsys.back.Lstat(n.rel())
	if err != nil {
		return gofs.ToErrno(err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return syscall.ESTALE // no longer a directory: look it up again
	}
	out.FromStat(&st.Stat_t)
	out.Ino = 0 // the node's own number, as in fileNode.Getattr
	return 0
}

func (n *dirNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno := setattrRel(n.fsys.back, n.rel(), in); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, f, out)
}

func (n *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.checkNewOther(name); errno != 0 {
		return nil, errno
	}
	rel := n.childRel(name)
	if err := n.fsys.back.Mkdir(rel, mode); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.adopt(ctx, rel, out, func() { n.fsys.back.Rmdir(rel) })
}

func (n *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if n.hidden(name) {
		return syscall.ENOENT
	}
	if errno := n.rmStore(name); errno != 0 {
		return errno
	}
	defer n.fsys.viewsChanged(n.rel())
	n.fsys.ds.Dirdb().BeforeRmdir(n.childRel(name))
	return gofs.ToErrno(n.fsys.back.Rmdir(n.childRel(name)))
}

func (n *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.checkNew(name); errno != 0 {
		return nil, nil, 0, errno
	}
	if s := n.docStore(); s != nil {
		return n.storeCreate(ctx, s, name, flags, mode, out)
	}
	if name == docarray.MarkerName {
		return n.createMarker(ctx, flags, mode, out)
	}
	if ch, fh, fl, errno, ok := n.createDirdb(ctx, name, flags, mode, out); ok {
		return ch, fh, fl, errno
	}
	rel := n.childRel(name)
	fd, err := n.fsys.back.Open(rel, int(flags&^(syscall.O_APPEND|fuse.FMODE_EXEC))|syscall.O_CREAT, mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	st, err := adoptFd(ctx, fd)
	if err != nil {
		syscall.Close(fd)
		n.fsys.back.Unlink(rel)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	out.Attr.FromStat(&st.Stat_t)
	ch := n.fsys.newChild(ctx, n.EmbeddedInode(), name, &st)
	if fn, ok := ch.Operations().(*fileNode); ok {
		return ch, newPlainFile(fd, &fn.modes), 0, 0
	}
	return ch, gofs.NewLoopbackFile(fd), 0, 0
}

func (n *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.checkNewOther(name); errno != 0 {
		return nil, errno
	}
	rel := n.childRel(name)
	if err := n.fsys.back.Mknod(rel, mode, int(dev)); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.adopt(ctx, rel, out, func() { n.fsys.back.Unlink(rel) })
}

func (n *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.checkNewOther(name); errno != 0 {
		return nil, errno
	}
	rel := n.childRel(name)
	if err := n.fsys.back.Symlink(target, rel); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.adopt(ctx, rel, out, func() { n.fsys.back.Unlink(rel) })
}

func (n *dirNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.checkNewOther(name); errno != 0 {
		return nil, errno
	}
	src, ok := target.(backed)
	if !ok {
		return nil, syscall.EXDEV
	}
	rel := n.childRel(name)
	if fn, ok := target.(*fileNode); ok {
		if linked, err := fn.unnamed.link(n.fsys.back, rel); linked {
			if err != nil {
				return nil, gofs.ToErrno(err)
			}
			return n.linked(ctx, rel, out)
		}
	}
	// The link is to the file the node stands for, not to another
	// file its name has come to lead to.
	if _, errno := src.lstatOwn(); errno != 0 {
		return nil, errno
	}
	if err := n.fsys.back.Link(src.rel(), rel); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.linked(ctx, rel, out)
}

// linked answers a link made at rel.
func (n *dirNode) linked(ctx context.Context, rel string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	st, err := n.fsys.back.Lstat(rel)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	out.Attr.FromStat(&st.Stat_t)
	return n.fsys.newChild(ctx, n.EmbeddedInode(), filepath.Base(rel), &st), 0
}

func (n *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if n.hidden(name) {
		return syscall.ENOENT
	}
	defer n.fsys.viewsChanged(n.rel())
	if s := n.docStore(); s != nil {
		return n.storeUnlink(s, name)
	}
	errno := n.fsys.errno(n.fsys.ds.Unlink(n.childRel(name)))
	if errno == 0 {
		n.dirdbSiblingsChanged(name)
	}
	return errno
}

func (n *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	dst, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	if len(newName) > nameMax {
		return syscall.ENAMETOOLONG
	}
	if n.hidden(name) || dst.hidden(newName) {
		return syscall.ENOENT
	}
	defer n.fsys.viewsChanged(n.rel())
	defer n.fsys.viewsChanged(dst.rel())
	src, dstS := n.docStore(), dst.docStore()
	if src != nil || dstS != nil || newName == docarray.MarkerName {
		return n.storeRename(src, name, dst, dstS, newName, flags)
	}
	errno := n.fsys.errno(n.fsys.ds.Rename(n.childRel(name), dst.childRel(newName), uint(flags)))
	if errno == 0 {
		n.dirdbSiblingsChanged(name)
		dst.dirdbSiblingsChanged(newName)
	}
	return errno
}

// Fsync of a directory writes back everything the pool holds, so that
// `sync`-like tools and `arrayfs umount` can wait for durability, then
// makes the directory's own entries durable.
func (n *dirNode) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if err := n.fsys.ds.Sync(); err != nil {
		return n.fsys.errno(err)
	}
	if err := n.fsys.back.SyncDir(n.rel()); err != nil {
		return gofs.ToErrno(err)
	}
	return 0
}

func (n *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s unix.Statfs_t
	if err := n.fsys.back.Statfs(&s); err != nil {
		return gofs.ToErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize = uint32(s.Bsize), uint32(s.Frsize)
	out.NameLen = min(uint32(s.Namelen), nameMax)
	return 0
}

func (n *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if s := n.docStore(); s != nil {
		if sz, errno, ok := n.storeGetxattr(s, attr, dest); ok {
			return sz, errno
		}
	}
	return getxattr(n.fsys.back, n.rel(), attr, dest)
}

func (n *dirNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if s := n.docStore(); s != nil {
		if errno, ok := n.storeSetxattr(s, attr); ok {
			return errno
		}
	}
	return gofs.ToErrno(n.fsys.back.Setxattr(n.rel(), attr, data, int(flags)))
}

func (n *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(n.fsys.back, n.rel(), dest)
}

func (n *dirNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	return gofs.ToErrno(n.fsys.back.Removexattr(n.rel(), attr))
}

// nameMax is NAME_MAX: no name in the tree is longer (a document's
// longer key has a shortened name, store/docarray/names.go), and the
// kernel leaves the check to the file system (FUSE's own limit is 1024).
const nameMax = 255

// checkNew refuses to create name: on a read-only mount, and for names
// the store keeps for itself.
func (n *dirNode) checkNew(name string) syscall.Errno {
	if len(name) > nameMax {
		return syscall.ENAMETOOLONG
	}
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if n.hidden(name) {
		return syscall.EPERM
	}
	return 0
}

// checkNewOther refuses to make anything but a document in a store.
func (n *dirNode) checkNewOther(name string) syscall.Errno {
	if errno := n.checkNew(name); errno != 0 {
		return errno
	}
	if n.docStore() != nil {
		return syscall.EPERM // a store holds documents only
	}
	return 0
}

// adoptFd gives the file just created as fd to the calling user (see
// adopt) and stats it: the descriptor is the file created, whatever its
// name leads to by now, and it is what names the node.
func adoptFd(ctx context.Context, fd int) (engine.Stat, error) {
	if uid, gid, ok := callerOwner(ctx); ok {
		if err := syscall.Fchown(fd, uid, gid); err != nil {
			return engine.Stat{}, err
		}
	}
	return engine.Fstat(fd)
}

// adopt gives a file just created at rel to the calling user (when the
// mount runs as root for others, as loopback file systems do) and makes
// its node. undo removes the file if that fails.
func (n *dirNode) adopt(ctx context.Context, rel string, out *fuse.EntryOut, undo func()) (*gofs.Inode, syscall.Errno) {
	if uid, gid, ok := callerOwner(ctx); ok {
		if err := n.fsys.back.Lchown(rel, uid, gid); err != nil {
			undo()
			return nil, gofs.ToErrno(err)
		}
	}
	st, err := n.fsys.back.Lstat(rel)
	if err != nil {
		undo()
		return nil, gofs.ToErrno(err)
	}
	out.Attr.FromStat(&st.Stat_t)
	return n.fsys.newChild(ctx, n.EmbeddedInode(), filepath.Base(rel), &st), 0
}

// callerOwner is the owner a file created for the caller gets: the
// caller's, when the mount runs as root for others (as loopback file
// systems do); ok is false when the daemon's own identity is right.
func callerOwner(ctx context.Context) (uid, gid int, ok bool) {
	caller, found := fuse.FromContext(ctx)
	if !found || os.Geteuid() != 0 || (caller.Uid == 0 && caller.Gid == 0) {
		return -1, -1, false
	}
	return int(caller.Uid), int(caller.Gid), true
}
