package engine

import (
	"bytes"
	"encoding/json"
	"syscall"
)

// Derived views (/.arrayfs/views of the mount): files and directories a
// format makes of its items, readable by any program (a .npy of an
// array, one row's bytes, a document's text). A format describes them
// with ViewDir and ViewFile; the file system serves any tree of them,
// knowing no format. Views are looked up afresh at each request: an item
// that disappears takes its views with it, one that changes shows the
// new content.

// A ViewNode is a ViewDir or a ViewFile.
type ViewNode interface{ isViewNode() }

// A ViewDir is a directory of views.
type ViewDir interface {
	ViewNode
	// List names the entries a listing shows; some names (row ranges)
	// are reachable by Lookup only.
	List() ([]ViewEntry, error)
	// Lookup returns the entry name; nil when there is none.
	Lookup(name string) (ViewNode, error)
}

// A ViewEntry is one listed name of a ViewDir.
type ViewEntry struct {
	Name string
	Dir  bool
}

// A ViewFile is a file of views.
type ViewFile interface {
	ViewNode
	// Stat says what the file is now.
	Stat() (ViewStat, error)
	// Open returns the content as it is now, referenced until its
	// Release. write asks for a WritableContent, refused with EROFS by
	// files that cannot be written.
	Open(write bool) (Content, error)
}

// ViewStat is what a view file shows of itself.
type ViewStat struct {
	Size     int64
	Mtime    int64 // ns: its item's
	Writable bool
}

// A Content is the bytes of a view file: its size and pinned views of
// it, zero-copy where they fall in a mapped source.
type Content interface {
	Size() int64
	// View returns bytes [off, off+n), fewer at the end, pinned until
	// released.
	View(off int64, n int) (View, error)
	Release()
}

// A WritableContent takes writes. Array views take them in place,
// within their size; a document's field takes any, and its document is
// re-encoded at Commit.
type WritableContent interface {
	Content
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	// Commit makes what was written its item's (at the last close); a
	// refusal leaves the item as it was.
	Commit() error
	// Sync makes the item durable (fsync).
	Sync() error
	// Target is the dataset-relative path of the file the writes change
	// (the array's data file, the document), whose cached pages the file
	// system drops after a write.
	Target() string
}

// InPlaceWriter is a WritableContent whose writes change its target at
// once (an array's views), not at Commit: TargetRange is the part of the
// target a write of n bytes at off changes, [start, end), so that the
// file system drops the kernel's pages of it before the write is
// answered.
type InPlaceWriter interface {
	TargetRange(off, n int64) (start, end int64)
}

// ViewDirBase and ViewFileBase mark an implementation as a ViewNode.
type (
	ViewDirBase  struct{}
	ViewFileBase struct{}
)

func (ViewDirBase) isViewNode()  {}
func (ViewFileBase) isViewNode() {}

// BytesContent is content held in memory.
type BytesContent []byte

// Size is the length.
func (b BytesContent) Size() int64 { return int64(len(b)) }

// View is a slice of the bytes; nothing is pinned.
func (b BytesContent) View(off int64, n int) (View, error) {
	if off < 0 || off >= int64(len(b)) || n <= 0 {
		return View{}, nil
	}
	end := min(off+int64(n), int64(len(b)))
	return View{Bytes: b[off:end:end]}, nil
}

// Release: nothing to release.
func (BytesContent) Release() {}

// A ViewSource is bytes served as pinned views of a mapping.
type ViewSource interface {
	View(off int64, n int) View
}

// HeadedContent is a header made in memory followed by a range of a
// ViewSource: a .npy of mapped data. Reads past the header are slices of
// the mapping (no copy); one that straddles the header and the data is
// copied.
type HeadedContent struct {
	Head    []byte
	Src     ViewSource
	SrcOff  int64
	SrcLen  int64
	release func()
}

// NewHeadedContent serves head then [off, off+n) of src; release is
// called once, by Release.
func NewHeadedContent(head []byte, src ViewSource, off, n int64, release func()) *HeadedContent {
	return &HeadedContent{Head: head, Src: src, SrcOff: off, SrcLen: n, release: release}
}

// Size is the header's and the range's.
func (c *HeadedContent) Size() int64 { return int64(len(c.Head)) + c.SrcLen }

// View serves [off, off+n) of the header and the range.
func (c *HeadedContent) View(off int64, n int) (View, error) {
	size := c.Size()
	if off < 0 || off >= size || n <= 0 {
		return View{}, nil
	}
	end := min(off+int64(n), size)
	h := int64(len(c.Head))
	switch {
	case off >= h:
		return c.Src.View(c.SrcOff+off-h, int(end-off)), nil
	case end <= h:
		return View{Bytes: c.Head[off:end:end]}, nil
	}
	buf := make([]byte, end-off)
	k := copy(buf, c.Head[off:])
	v := c.Src.View(c.SrcOff, int(end-h))
	copy(buf[k:], v.Bytes)
	v.Release()
	return View{Bytes: buf}, nil
}

// Release calls the release function given.
func (c *HeadedContent) Release() {
	if c.release != nil {
		c.release()
		c.release = nil
	}
}

// ErrReadOnlyView is the answer to a write to a view that cannot be
// written.
func ErrReadOnlyView(path string) error {
	return Refuse(path, "open", syscall.EROFS, "refused: this view is read-only")
}

// A Viewer is a format whose items have views.
type Viewer interface {
	// ViewItems names the items of directory dirRel, whose sorted names
	// are given, that have a view directory (not yet validated).
	ViewItems(dirRel string, names []string) []string
	// ViewItem is the view directory of item name of directory dirRel;
	// nil when there is no such item.
	ViewItem(dirRel, name string) (ViewDir, error)
}

// JSON is v as indented JSON and a newline, the way every .json view is
// written (no HTML escaping: "<f4" stays "<f4").
func JSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return []byte("{}\n")
	}
	return b.Bytes()
}

// An Xattr is an extended attribute a format shows on a canonical file
// (user.arrayfs.dtype of an array's data file, user.arrayfs.id of a
// document): derived from the item, read-only.
type Xattr struct {
	Name  string
	Value string
}

// XattrPrefix starts the name of every derived attribute.
const XattrPrefix = "user.arrayfs."
