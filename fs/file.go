package fs

import (
	"context"
	"fmt"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/dirdb"
	"github.com/arrayfs/arrayfs/store/engine"
)

// backed is a node with a backing file of its own.
type backed interface {
	rel() string
	lstatOwn() (engine.Stat, syscall.Errno)
}

// fileNode is a regular file of the dataset. What serves its content is
// decided at each open, because what a file is depends on its neighbours
// (a NAME.array becomes an array the moment a valid NAME.yaml appears):
// a plain file is passed through to the kernel, a data file of a valid
// array is served by the engine.
type fileNode struct {
	node
	modes   ioModes     // its open handles' I/O modes (iomode.go)
	unnamed unnamedFile // while it is an O_TMPFILE not linked yet (tmpfile.go)
}

var (
	_ gofs.NodeOpener        = (*fileNode)(nil)
	_ gofs.NodeGetattrer     = (*fileNode)(nil)
	_ gofs.NodeSetattrer     = (*fileNode)(nil)
	_ gofs.NodeGetxattrer    = (*fileNode)(nil)
	_ gofs.NodeSetxattrer    = (*fileNode)(nil)
	_ gofs.NodeListxattrer   = (*fileNode)(nil)
	_ gofs.NodeRemovexattrer = (*fileNode)(nil)
)

func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.fsys.known.use(&n.node)
	writing := flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 || flags&syscall.O_TRUNC != 0
	if writing && n.fsys.readOnly() {
		return nil, 0, syscall.EROFS
	}
	item, err := n.fsys.ds.Classify(n.rel())
	if err != nil {
		return nil, 0, n.fsys.errno(err)
	}
	if df, ok := item.(*dirdb.File); ok {
		return n.openDirdb(ctx, df, flags)
	}
	if a, ok := item.(*daf.ArrayFile); ok {
		if st, err := a.Stat(); err != nil || !n.isOwn(&st) {
			// The name leads to a replacement of the node's file. An
			// open for reading that raced with it reads the node's own
			// version, still open for a moment; any other looks the
			// name up again.
			a.Release()
			if writing {
				return nil, 0, syscall.ESTALE
			}
			if a = n.fsys.ds.Arrays().Retired(n.rel(), n.isOwn); a == nil {
				return nil, 0, syscall.ESTALE
			}
		}
		h := &arrayHandle{fsys: n.fsys, node: n, a: a}
		if writing && n.fsys.opts.ArrayPassthrough {
			if !n.modes.openWriter(ctx) {
				a.Release()
				return nil, 0, n.fsys.errno(&engine.Error{Path: n.rel(), Op: "open", Errno: syscall.ETXTBSY,
					Reason: fmt.Sprintf("refused: open for reading in passthrough (mount option array_passthrough) for more than %v; close its readers first", writerWait)})
			}
			h.writer = true
		}
		if writing {
			h.writers.wrote(ctx) // its opener is its writer (closer.go)
			// DIRECT_IO: what this handle writes (a replacement's new
			// content above all) never enters the page cache that
			// readers share. Shared mappings still work.
			n.fresh.add(ctx, h)
			return h, fuse.FOPEN_DIRECT_IO, 0
		}
		// On a read-only mount a reader is passed through to the data
		// file (the kernel reads it itself: arrayPassthrough). On a
		// read-write one only with array_passthrough: while an inode is
		// open in passthrough, the kernel refuses any open of it that
		// is not (fs/fuse/iomode.c), and a writer must not pass through
		// (its writes are the pool's, held to the yaml's size), so
		// writers then wait for such readers (iomode.go).
		if (n.fsys.readOnly() || n.fsys.opts.ArrayPassthrough) && n.modes.openPlain() {
			return &arrayPassthrough{h}, 0, 0
		}
		// Otherwise the page cache: arrayfs is the only writer, so
		// cached pages stay valid across opens; a replacement is a new
		// inode, looked up anew. (DIRECT_IO while the node has a
		// passthrough handle open.)
		if !n.modes.openCached() {
			return h, fuse.FOPEN_DIRECT_IO, 0
		}
		h.cached = true
		return h, fuse.FOPEN_KEEP_CACHE, 0
	}
	fd, err := n.fsys.back.Open(n.rel(), int(flags&^(syscall.O_APPEND|fuse.FMODE_EXEC)), 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	st, err := engine.Fstat(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, 0, gofs.ToErrno(err)
	}
	if !n.isOwn(&st) {
		// The name was replaced since the kernel looked it up. An open
		// is of the name: it gets the file the name leads to now, as on
		// ext4, rather than ESTALE (which the kernel retries once, and a
		// name replaced again meanwhile fails). Its I/O goes to that
		// file through the daemon (DIRECT_IO: none of the node's pages
		// or size apply), and the kernel is told to look the name up
		// again for the next open.
		if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			syscall.Close(fd)
			return nil, 0, syscall.ESTALE
		}
		n.replaced()
		return newReplacedFile(fd), fuse.FOPEN_DIRECT_IO, 0
	}
	return newPlainFile(fd, &n.modes), 0, 0
}

func (n *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(gofs.FileGetattrer); ok {
		// fstat of a plain file: the open file, whatever its name leads
		// to now (and without a path: it may have none).
		return h.Getattr(ctx, out)
	}
	if errno, ok := n.getattrDirdb(f, out); ok {
		return errno
	}
	if h, ok := f.(*arrayHandle); ok {
		return h.getattr(out)
	}
	st, errno := n.lstatOwn()
	if errno != 0 {
		return errno
	}
	out.FromStat(&st.Stat_t)
	return 0
}

// Setattr answers with the attributes after the change, which the
// kernel may keep as long as a GETATTR's (go-fuse leaves a SETATTR's
// answer without a lifetime, and the kernel then asks again at once: a
// GETATTR after every open(O_TRUNC), chmod and utimes).
func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	errno := n.setattr(ctx, f, in, out)
	if errno == 0 && out.Timeout() == 0 {
		out.SetTimeout(attrTimeout)
	}
	return errno
}

func (n *fileNode) setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if h := n.openTruncation(ctx, f, in); h != nil {
		f = h.(gofs.FileHandle) // the truncation of an open(O_TRUNC)
	}
	if errno, ok := n.setattrDirdb(ctx, f, in, out); ok {
		return errno
	}
	if h, ok := f.(gofs.FileSetattrer); ok {
		// ftruncate, fchmod, futimens of a plain file: the open file,
		// whatever its name leads to now.
		return h.Setattr(ctx, in, out)
	}
	if size, ok := in.GetSize(); ok {
		if h, ok := f.(*arrayHandle); ok {
			h.writers.wrote(ctx)
		}
		if errno := n.truncate(f, int64(size)); errno != 0 {
			return errno
		}
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	if errno := setattrRel(n.fsys.back, n.rel(), in); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, f, out)
}

// truncate changes the size: of the staged replacement through its own
// handle, refused for an array's data file unless it is the yaml's size,
// passed through otherwise.
func (n *fileNode) truncate(f gofs.FileHandle, size int64) syscall.Errno {
	if h, ok := f.(*arrayHandle); ok {
		return h.truncate(size)
	}
	item, err := n.fsys.ds.Classify(n.rel())
	if err != nil {
		return n.fsys.errno(err)
	}
	if item != nil {
		defer item.Release()
	}
	if a, ok := item.(*daf.ArrayFile); ok {
		return n.fsys.errno(a.CheckTruncate(size))
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	return gofs.ToErrno(n.fsys.back.Truncate(n.rel(), size))
}

func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if strings.HasPrefix(attr, engine.XattrPrefix) {
		if sz, errno, ok := getDerived(n.fsys.ds.Arrays().Xattrs(n.rel()), attr, dest); ok {
			return sz, errno
		}
	}
	if sz, errno, ok := n.pendingXattr(func(fd int) (int, error) { return unix.Fgetxattr(fd, attr, dest) }); ok {
		return sz, errno
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return 0, errno
	}
	return getxattr(n.fsys.back, n.rel(), attr, dest)
}

func (n *fileNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno, ok := n.setDerived(attr, data); ok {
		return errno
	}
	if _, errno, ok := n.pendingXattr(func(fd int) (int, error) { return 0, unix.Fsetxattr(fd, attr, data, int(flags)) }); ok {
		return errno
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	return gofs.ToErrno(n.fsys.back.Setxattr(n.rel(), attr, data, int(flags)))
}

func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if sz, errno, ok := n.pendingXattr(func(fd int) (int, error) { return unix.Flistxattr(fd, dest) }); ok {
		return sz, errno
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return 0, errno
	}
	if xs := n.fsys.ds.Arrays().Xattrs(n.rel()); len(xs) > 0 {
		own, err := n.fsys.back.ListxattrAll(n.rel())
		if err != nil {
			return 0, gofs.ToErrno(err)
		}
		return listWithDerived(own, xs, dest)
	}
	return listxattr(n.fsys.back, n.rel(), dest)
}

func (n *fileNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno, ok := n.setDerived(attr, nil); ok {
		return errno
	}
	if _, errno, ok := n.pendingXattr(func(fd int) (int, error) { return 0, unix.Fremovexattr(fd, attr) }); ok {
		return errno
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	return gofs.ToErrno(n.fsys.back.Removexattr(n.rel(), attr))
}

// linkNode is a symbolic link, passed through.
type linkNode struct {
	node
}

var (
	_ gofs.NodeReadlinker = (*linkNode)(nil)
	_ gofs.NodeGetattrer  = (*linkNode)(nil)
	_ gofs.NodeSetattrer  = (*linkNode)(nil)
)

// Readlink reads the link the name leads to now, as a path walk that
// raced with a replacement reads it on ext4 (a name that is no longer a
// link: EINVAL, as readlink(2) answers), rather than ESTALE, which the
// kernel retries only once; a replaced link makes the kernel look the
// name up again for the next walk.
func (n *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if _, errno := n.lstatOwn(); errno == syscall.ESTALE {
		n.replaced()
	}
	target, err := n.fsys.back.Readlink(n.rel())
	return target, gofs.ToErrno(err)
}

func (n *linkNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return lstatOut(&n.node, out)
}

func (n *linkNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	if errno := setattrRel(n.fsys.back, n.rel(), in); errno != 0 {
		return errno
	}
	return lstatOut(&n.node, out)
}

// specialNode is a fifo, socket or device node: only its attributes are
// served (a FUSE file system cannot hand out the backing node itself).
type specialNode struct {
	node
}

var (
	_ gofs.NodeGetattrer = (*specialNode)(nil)
	_ gofs.NodeSetattrer = (*specialNode)(nil)
)

func (n *specialNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return lstatOut(&n.node, out)
}

func (n *specialNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if _, errno := n.lstatOwn(); errno != 0 {
		return errno
	}
	if errno := setattrRel(n.fsys.back, n.rel(), in); errno != 0 {
		return errno
	}
	return lstatOut(&n.node, out)
}

// setDerived is setDerived of an array's data file; the array's
// attributes are read only for a name arrayfs derives.
func (n *fileNode) setDerived(attr string, data []byte) (syscall.Errno, bool) {
	if !strings.HasPrefix(attr, engine.XattrPrefix) {
		return 0, false
	}
	return setDerived(n.fsys.ds.Arrays().Xattrs(n.rel()), attr, data)
}
