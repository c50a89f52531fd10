package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// backed is a node with a backing file of its own.
type backed interface {
	path() string
}

// fileNode is a regular file of the dataset. What serves its content is
// decided at each open, because what a file is depends on its neighbours
// (a NAME.array becomes an array the moment a valid NAME.yaml appears):
// a plain file is passed through to the kernel, a data file of a valid
// array is served by the engine.
type fileNode struct {
	node

	// staging is the open whole-file replacement of this file, if any:
	// its size is the file's size until it is committed or dropped.
	mu      sync.Mutex
	staging *stagedArrayHandle
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
	writing := flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 || flags&syscall.O_TRUNC != 0
	if writing && n.fsys.readOnly() {
		return nil, 0, syscall.EROFS
	}
	cls, err := n.fsys.ds.Classify(n.rel())
	if err != nil {
		return nil, 0, n.fsys.errno(err)
	}
	if cls.Dirdb != nil {
		return n.openDirdb(ctx, cls.Dirdb, flags)
	}
	if a := cls.Array; a != nil {
		if flags&syscall.O_TRUNC != 0 {
			h, err := n.stageArray(a)
			if err != nil {
				return nil, 0, n.fsys.errno(err)
			}
			return h, 0, 0
		}
		// arrayfs is the only writer, so cached pages stay valid
		// across opens; a replacement invalidates them explicitly.
		return &arrayHandle{fsys: n.fsys, a: a}, fuse.FOPEN_KEEP_CACHE, 0
	}
	fd, err := syscall.Open(n.path(), int(flags&^(syscall.O_APPEND|fuse.FMODE_EXEC))|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return gofs.NewLoopbackFile(fd), 0, 0
}

func (n *fileNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno, ok := n.getattrDirdb(f, out); ok {
		return errno
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(n.path(), &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	// A file replaced by a rename (an atomic save) has a new inode, but
	// this node keeps the number it was looked up with until the kernel
	// looks the name up again.
	out.Ino = 0
	n.mu.Lock()
	if n.staging != nil {
		if size, err := n.staging.stage.Size(); err == nil {
			out.Size = uint64(size)
		}
	}
	n.mu.Unlock()
	return 0
}

func (n *fileNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno, ok := n.setattrDirdb(ctx, f, in, out); ok {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		if errno := n.truncate(f, int64(size)); errno != 0 {
			return errno
		}
	}
	if errno := setattrPath(n.path(), in); errno != 0 {
		return errno
	}
	return n.Getattr(ctx, f, out)
}

// truncate changes the size: of the staged replacement when one is open,
// refused for an array's data file unless it is the yaml's size, passed
// through otherwise.
func (n *fileNode) truncate(f gofs.FileHandle, size int64) syscall.Errno {
	n.mu.Lock()
	staged := n.staging
	n.mu.Unlock()
	if staged != nil {
		return staged.truncate(size)
	}
	cls, err := n.fsys.ds.Classify(n.rel())
	if err != nil {
		return n.fsys.errno(err)
	}
	defer cls.Release()
	if a := cls.Array; a != nil {
		return n.fsys.errno(a.CheckTruncate(size))
	}
	return gofs.ToErrno(syscall.Truncate(n.path(), size))
}

func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if sz, errno, ok := n.pendingXattr(func(fd int) (int, error) { return unix.Fgetxattr(fd, attr, dest) }); ok {
		return sz, errno
	}
	return getxattr(n.path(), attr, dest)
}

func (n *fileNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if _, errno, ok := n.pendingXattr(func(fd int) (int, error) { return 0, unix.Fsetxattr(fd, attr, data, int(flags)) }); ok {
		return errno
	}
	return gofs.ToErrno(unix.Lsetxattr(n.path(), attr, data, int(flags)))
}

func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if sz, errno, ok := n.pendingXattr(func(fd int) (int, error) { return unix.Flistxattr(fd, dest) }); ok {
		return sz, errno
	}
	return listxattr(n.path(), dest)
}

func (n *fileNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if _, errno, ok := n.pendingXattr(func(fd int) (int, error) { return 0, unix.Fremovexattr(fd, attr) }); ok {
		return errno
	}
	return gofs.ToErrno(unix.Lremovexattr(n.path(), attr))
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

func (n *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	buf := make([]byte, 4096)
	for {
		sz, err := syscall.Readlink(n.path(), buf)
		if err != nil {
			return nil, gofs.ToErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
		buf = make([]byte, 2*len(buf))
	}
}

func (n *linkNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return lstatOut(n.path(), out)
}

func (n *linkNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno := setattrPath(n.path(), in); errno != 0 {
		return errno
	}
	return lstatOut(n.path(), out)
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
	return lstatOut(n.path(), out)
}

func (n *specialNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if errno := setattrPath(n.path(), in); errno != 0 {
		return errno
	}
	return lstatOut(n.path(), out)
}
