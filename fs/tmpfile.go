package fs

import (
	"context"
	"os"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store/engine"
)

// open(O_TMPFILE): a file with no name, in the backing directory of the
// directory it was asked in, which its opener may link into place
// (linkat of /proc/self/fd/N) unless it asked O_EXCL, as on ext4. Only
// in directories of plain files: a store holds documents only
// (EOPNOTSUPP there).
//
// Until it is linked, the node has no path to reach its backing file by,
// so it keeps a descriptor of it (unnamedFile) for Link; fstat, reads
// and writes go through the open handle as for any file.

var _ gofs.NodeTmpfiler = (*dirNode)(nil)

func (n *dirNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.readOnly() {
		return nil, nil, 0, syscall.EROFS
	}
	if s, errno := n.docStoreErr(); errno != 0 || s != nil {
		return nil, nil, 0, max(errno, syscall.EOPNOTSUPP)
	}
	open := unix.O_TMPFILE | int(flags&(syscall.O_ACCMODE|syscall.O_EXCL))
	fd, err := n.fsys.back.Openat2(n.rel(), open, mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	st, err := adoptFd(ctx, fd)
	if err != nil {
		syscall.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	keep, err := unix.Dup(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	out.Attr.FromStat(&st.Stat_t)
	ch := n.fsys.newChild(ctx, n.EmbeddedInode(), "", &st)
	fn, ok := ch.Operations().(*fileNode)
	if !ok {
		syscall.Close(fd)
		syscall.Close(keep)
		return nil, nil, 0, syscall.EIO
	}
	fn.unnamed.set(os.NewFile(uintptr(keep), "(O_TMPFILE)"))
	return ch, newPlainFile(fd, &fn.modes), 0, 0
}

// unnamedFile is the descriptor of a node's backing file while no name
// leads to it (an O_TMPFILE file not yet linked). The zero value holds
// none.
type unnamedFile struct {
	mu sync.Mutex
	f  *os.File
}

// set makes f the descriptor (nil: none), closing the one before.
func (u *unnamedFile) set(f *os.File) {
	u.mu.Lock()
	if u.f != nil {
		u.f.Close()
	}
	u.f = f
	u.mu.Unlock()
}

// link gives the file name rel; ok is false when the node has a name of
// its own already (link it by that).
func (u *unnamedFile) link(back *engine.Backing, rel string) (ok bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f == nil {
		return false, nil
	}
	if err := back.LinkFd(int(u.f.Fd()), rel); err != nil {
		return true, err
	}
	u.f.Close()
	u.f = nil
	return true, nil
}

var _ gofs.NodeOnForgetter = (*fileNode)(nil)

// OnForget: the kernel is done with the node; an unnamed file goes.
func (n *fileNode) OnForget() {
	n.unnamed.set(nil)
	n.node.OnForget()
}
