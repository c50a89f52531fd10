package fs

import (
	"context"
	"errors"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store"
)

// setattrPath applies chmod, chown and utimes of a SETATTR to a backing
// path. Size is not its business: every node type decides what a
// truncate means for it.
func setattrPath(p string, in *fuse.SetAttrIn) syscall.Errno {
	if m, ok := in.GetMode(); ok {
		if err := syscall.Chmod(p, m); err != nil {
			return gofs.ToErrno(err)
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
		if err := unix.Fchownat(unix.AT_FDCWD, p, suid, sgid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return gofs.ToErrno(err)
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
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return gofs.ToErrno(err)
		}
	}
	return 0
}

func lstatOut(p string, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Ino = 0 // the node's own number, as in fileNode.Getattr
	return 0
}

func getxattr(p, attr string, dest []byte) (uint32, syscall.Errno) {
	sz, err := unix.Lgetxattr(p, attr, dest)
	return uint32(sz), gofs.ToErrno(err)
}

func listxattr(p string, dest []byte) (uint32, syscall.Errno) {
	sz, err := unix.Llistxattr(p, dest)
	return uint32(sz), gofs.ToErrno(err)
}

func asStoreError(err error, target **store.Error) bool { return errors.As(err, target) }

// noXattrs is embedded by nodes without a backing file of their own
// (documents, markers): docarray has nowhere to keep extended attributes.
// Setting one is "not supported", which is what makes cp -p and rsync
// fall back to plain modes instead of failing.
type noXattrs struct{}

func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (noXattrs) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) { return 0, 0 }

func (noXattrs) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.ENOTSUP }
