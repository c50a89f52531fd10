package engine

import "sort"

// Text views made of numbered lines (Matrix Market entries, one JSON
// object per document) are generated on the fly, never held whole: one
// pass sizes the text and records where every LineStep-th line starts;
// a read regenerates the lines it covers from the checkpoint before it.

// LineStep is how many lines a checkpoint of a LineIndex stands for.
const LineStep = 1024

// A LineGen formats lines from number from on, in order, calling fn with
// each line's number and bytes (valid during the call) until fn returns
// false or the lines end.
type LineGen func(from int64, fn func(k int64, line []byte) bool) error

// A LineIndex is the sizing pass of one version of a text: a header,
// then the lines of a LineGen.
type LineIndex struct {
	Head  []byte
	size  int64
	ck    []int64 // offset of line k*LineStep
	fixed int64   // the size of every line, if they are all one size
}

// IndexLines sizes head and the lines gen makes.
func IndexLines(head []byte, gen LineGen) (*LineIndex, error) {
	ix := &LineIndex{Head: head}
	off := int64(len(head))
	err := gen(0, func(k int64, line []byte) bool {
		if k%LineStep == 0 {
			ix.ck = append(ix.ck, off)
		}
		off += int64(len(line))
		return true
	})
	ix.size = off
	return ix, err
}

// FixedLines is the index of head and n lines of size bytes each, made
// without a pass over them.
func FixedLines(head []byte, n, size int64) *LineIndex {
	ix := &LineIndex{Head: head, size: int64(len(head)) + n*size, fixed: size}
	for k := int64(0); k < n; k += LineStep {
		ix.ck = append(ix.ck, int64(len(head))+k*size)
	}
	return ix
}

// Size is the text's size.
func (ix *LineIndex) Size() int64 { return ix.size }

// Read returns bytes [off, off+n) of the text gen makes, which must be
// the version ix sized.
func (ix *LineIndex) Read(gen LineGen, off int64, n int) ([]byte, error) {
	if off < 0 || off >= ix.size || n <= 0 {
		return nil, nil
	}
	end := min(off+int64(n), ix.size)
	out := make([]byte, 0, end-off)
	h := int64(len(ix.Head))
	if off < h {
		out = append(out, ix.Head[off:min(h, end)]...)
	}
	if end <= h || len(ix.ck) == 0 {
		return out, nil
	}
	c := sort.Search(len(ix.ck), func(i int) bool { return ix.ck[i] > max(off, h) }) - 1
	first, pos := int64(c)*LineStep, ix.ck[c]
	if ix.fixed > 0 {
		// Lines of one size: the first one wanted is arithmetic.
		first = (max(off, h) - h) / ix.fixed
		pos = h + first*ix.fixed
	}
	err := gen(first, func(k int64, line []byte) bool {
		lo, hi := max(off, pos), min(end, pos+int64(len(line)))
		if lo < hi {
			out = append(out, line[lo-pos:hi-pos]...)
		}
		pos += int64(len(line))
		return pos < end
	})
	return out, err
}

// LineContent serves an open text of lines. Reads may run at once: each
// makes its own LineGen.
type LineContent struct {
	Index   *LineIndex
	NewGen  func() LineGen
	release func()
}

// NewLineContent serves ix's text from the LineGens newGen makes;
// release is called by Release.
func NewLineContent(ix *LineIndex, newGen func() LineGen, release func()) *LineContent {
	return &LineContent{Index: ix, NewGen: newGen, release: release}
}

// Size is the text's size.
func (c *LineContent) Size() int64 { return c.Index.Size() }

// View regenerates bytes [off, off+n).
func (c *LineContent) View(off int64, n int) (View, error) {
	b, err := c.Index.Read(c.NewGen(), off, n)
	return View{Bytes: b}, err
}

// Release calls the release function given.
func (c *LineContent) Release() {
	if c.release != nil {
		c.release()
		c.release = nil
	}
}
