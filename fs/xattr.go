package fs

import (
	"bytes"
	"context"
	"strings"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Derived extended attributes (user.arrayfs.*) of canonical files: what a
// format says of an item, shown beside the file's own attributes.
// They are read-only: setting one to the value it has (rsync -X
// restoring a backup) is a no-op; any other change is refused (EPERM).

// getDerived answers a getxattr of attr from xs; ok is false when attr
// is none of them.
func getDerived(xs []engine.Xattr, attr string, dest []byte) (sz uint32, errno syscall.Errno, ok bool) {
	for _, x := range xs {
		if x.Name != attr {
			continue
		}
		if len(dest) == 0 {
			return uint32(len(x.Value)), 0, true
		}
		if len(dest) < len(x.Value) {
			return 0, syscall.ERANGE, true
		}
		return uint32(copy(dest, x.Value)), 0, true
	}
	return 0, 0, false
}

// listWithDerived answers a listxattr: own (the file's own names, NUL
// terminated) and the derived names.
func listWithDerived(own []byte, xs []engine.Xattr, dest []byte) (uint32, syscall.Errno) {
	var b bytes.Buffer
	for _, name := range bytes.SplitAfter(own, []byte{0}) {
		// One stored under arrayfs's names (by an older arrayfs)
		// would show twice.
		if len(name) > 0 && !bytes.HasPrefix(name, []byte(engine.XattrPrefix)) {
			b.Write(name)
		}
	}
	for _, x := range xs {
		b.WriteString(x.Name)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), 0
	}
	if len(dest) < b.Len() {
		return 0, syscall.ERANGE
	}
	return uint32(copy(dest, b.Bytes())), 0
}

// setDerived answers a setxattr or (data nil) removexattr of a name
// under user.arrayfs.; ok is false for other names. Such names are never
// stored on a backing file: a derived one can be set only to the value
// it has; one the file does not derive (yet: rsync -X restores an
// array's attributes before the yaml that makes it an array) is taken
// and not kept, as what the format says of the file will be shown.
func setDerived(xs []engine.Xattr, attr string, data []byte) (errno syscall.Errno, ok bool) {
	if !strings.HasPrefix(attr, engine.XattrPrefix) {
		return 0, false
	}
	for _, x := range xs {
		if x.Name == attr {
			if data != nil && string(data) == x.Value {
				return 0, true
			}
			return syscall.EPERM, true
		}
	}
	if data == nil {
		return syscall.ENODATA, true
	}
	return 0, true
}

// A document has no backing file to keep attributes in: it shows the
// ones derived from it, and setting any other is "not supported", which
// makes cp -p and rsync fall back to plain modes instead of failing.

func (n *docNode) xattrs() ([]engine.Xattr, syscall.Errno) {
	s, name, errno := n.locate()
	if errno != 0 {
		return nil, errno
	}
	xs, err := s.Xattrs(name)
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	return xs, 0
}

func (n *docNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !strings.HasPrefix(attr, engine.XattrPrefix) {
		// Only derived names exist, and no other can be set (ENOTSUP,
		// below): "not supported", not "none", which also tells ls -l
		// to stop asking every document of the listing for its
		// security label and ACL (coreutils caches an unsupported
		// device), two round trips each.
		return 0, syscall.ENOTSUP
	}
	xs, errno := n.xattrs()
	if errno != 0 {
		return 0, errno
	}
	if sz, errno, ok := getDerived(xs, attr, dest); ok {
		return sz, errno
	}
	return 0, syscall.ENODATA
}

func (n *docNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	xs, errno := n.xattrs()
	if errno != 0 {
		return 0, errno
	}
	return listWithDerived(nil, xs, dest)
}

func (n *docNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.changeXattr(attr, data)
}

func (n *docNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.changeXattr(attr, nil)
}

// changeXattr sets (or, data nil, removes) an attribute of a document.
func (n *docNode) changeXattr(attr string, data []byte) syscall.Errno {
	xs, errno := n.xattrs()
	if errno != 0 {
		return errno
	}
	if errno, ok := setDerived(xs, attr, data); ok {
		return errno
	}
	return syscall.ENOTSUP
}
