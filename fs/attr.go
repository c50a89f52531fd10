package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store/docarray"
	"github.com/arrayfs/arrayfs/store/engine"
)

// attrSetter is how one kind of target applies chmod, chown and utimes:
// by path, or by descriptor for a staged file that may have no name.
type attrSetter struct {
	chmod  func(mode uint32) error
	chown  func(uid, gid int) error
	utimes func(ts []unix.Timespec) error
}

// apply applies the mode, owner and times of a SETATTR. Size is not its
// business: every node type decides what a truncate means for it.
func (a attrSetter) apply(in *fuse.SetAttrIn) error {
	if m, ok := in.GetMode(); ok {
		if err := a.chmod(m); err != nil {
			return err
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := a.chown(suid, sgid); err != nil {
			return err
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		return a.utimes(ts)
	}
	return nil
}

// setattrRel applies chmod, chown and utimes of a SETATTR to the backing
// file rel itself (never to a symlink's target).
func setattrRel(back *engine.Backing, rel string, in *fuse.SetAttrIn) syscall.Errno {
	return gofs.ToErrno(attrSetter{
		chmod:  func(m uint32) error { return back.Chmod(rel, m) },
		chown:  func(uid, gid int) error { return back.Lchown(rel, uid, gid) },
		utimes: func(ts []unix.Timespec) error { return back.UtimesNano(rel, ts) },
	}.apply(in))
}

// setattrFile applies chmod, chown and utimes to an open file.
func setattrFile(f *os.File, in *fuse.SetAttrIn) error {
	fd := int(f.Fd())
	return attrSetter{
		chmod: func(m uint32) error { return syscall.Fchmod(fd, m&07777) },
		chown: func(uid, gid int) error { return syscall.Fchown(fd, uid, gid) },
		// The stage may have no name of its own by then; its
		// descriptor's /proc link reaches it whatever its name.
		utimes: func(ts []unix.Timespec) error {
			return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0)
		},
	}.apply(in)
}

// attrChangeOf is a SETATTR's mode, owner and mtime as the document
// store takes them.
func attrChangeOf(in *fuse.SetAttrIn) docarray.AttrChange {
	var c docarray.AttrChange
	if m, ok := in.GetMode(); ok {
		c.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		c.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		c.GID = &g
	}
	if t, ok := in.GetMTime(); ok {
		ns := t.UnixNano()
		c.Mtime = &ns
	}
	if t, ok := in.GetATime(); ok {
		ns := t.UnixNano()
		c.Atime = &ns
	}
	return c
}

// lstatOut answers GETATTR for a node that is its backing file's name.
func lstatOut(n *node, out *fuse.AttrOut) syscall.Errno {
	st, errno := n.lstatOwn()
	if errno != 0 {
		return errno
	}
	out.FromStat(&st.Stat_t)
	out.Ino = 0 // the node's own number
	return 0
}

func getxattr(back *engine.Backing, rel, attr string, dest []byte) (uint32, syscall.Errno) {
	sz, err := back.Getxattr(rel, attr, dest)
	return uint32(sz), gofs.ToErrno(err)
}

func listxattr(back *engine.Backing, rel string, dest []byte) (uint32, syscall.Errno) {
	sz, err := back.Listxattr(rel, dest)
	return uint32(sz), gofs.ToErrno(err)
}

func asStoreError(err error, target **engine.Error) bool { return errors.As(err, target) }

// noXattrs is embedded by nodes without a backing file of their own
// (documents, markers): docarray has nowhere to keep extended attributes.
// Setting one is "not supported", which is what makes cp -p and rsync
// fall back to plain modes instead of failing.
type noXattrs struct{}

// Getxattr: not supported, as setting one is (see docNode.Getxattr).
func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}

func (noXattrs) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) { return 0, 0 }

func (noXattrs) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.ENOTSUP }
