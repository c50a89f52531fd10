package docarray

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// checkDocStores checks the store of directory dirRel, if it is one,
// with key length k (0: the sidecar's, else detected).
func checkDocStores(back *engine.Backing, dirRel string, names []string, k int) []engine.Problem {
	i := sort.SearchStrings(names, BodyName)
	j := sort.SearchStrings(names, HeaderName)
	if i == len(names) || names[i] != BodyName || j == len(names) || names[j] != HeaderName {
		return nil
	}
	dir, err := back.OpenDir(dirRel)
	if err != nil {
		return []engine.Problem{{Path: dirRel, Reason: engine.UnwrapPath(err).Error()}}
	}
	defer dir.Close()
	return checkDocStore(int(dir.Fd()), dirRel, k)
}

// maxPerKind bounds how many problems of one kind are listed per store.
const maxPerKind = 20

// checkDocStore validates the store in directory dirFd (shown as rel)
// with key length k (0: the sidecar's, else detected). It only reads.
func checkDocStore(dirFd int, rel string, k int) []engine.Problem {
	var out []engine.Problem
	add := func(path, format string, args ...any) {
		out = append(out, engine.Problem{Path: path, Reason: fmt.Sprintf(format, args...)})
	}
	open := func(name string) (*os.File, error) {
		fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		if err := checkRegular(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
	hf, err := open(HeaderName)
	if err != nil {
		add(filepath.Join(rel, HeaderName), "%v", err)
		return out
	}
	defer hf.Close()
	bf, err := open(BodyName)
	if err != nil {
		add(filepath.Join(rel, BodyName), "%v", err)
		return out
	}
	defer bf.Close()
	hst, err1 := hf.Stat()
	bst, err2 := bf.Stat()
	if err1 != nil || err2 != nil {
		add(rel, "stat: %v %v", err1, err2)
		return out
	}
	hsize, bsize := hst.Size(), bst.Size()
	if k == 0 {
		if sc, err := readSidecar(dirFd); err == nil && sc.k > 0 && hsize%int64(docRecordSize(sc.k)) == 0 {
			k = sc.k
		}
	}
	if k == 0 {
		c := detectKeyLength(hsize, bsize, func(p []byte, off int64) error {
			_, err := hf.ReadAt(p, off)
			return err
		})
		if c.k == 0 {
			add(rel, "%s", c.reason)
			return out
		}
		k = c.k
	}
	rs := int64(docRecordSize(k))
	if hsize%rs != 0 {
		add(filepath.Join(rel, HeaderName), "%d bytes is not a whole number of %d-byte records (key_length %d): %d trailing bytes", hsize, rs, k, hsize%rs)
	}
	var doc []byte
	counts := map[string]int{}
	kinds := map[string]string{}
	report := func(kind, format string, args ...any) {
		counts[kind]++
		if counts[kind] <= maxPerKind {
			add(filepath.Join(rel, HeaderName), format, args...)
		}
		kinds[kind] = kind
	}
	first := map[string]int64{}
	n := hsize / rs
	buf := make([]byte, rs*4096)
	var kbuf []byte
	for base := int64(0); base < n; base += 4096 {
		m := min(4096, n-base)
		if _, err := hf.ReadAt(buf[:m*rs], base*rs); err != nil {
			add(filepath.Join(rel, HeaderName), "read: %v", err)
			return out
		}
		for j := int64(0); j < m; j++ {
			idx := base + j
			rec := buf[j*rs : (j+1)*rs]
			if p := keyProblem(rec, k); p != "" {
				report("key", "record %d: %s", idx, p)
				continue
			}
			rr := readRawRecord(rec, k)
			if rr.tombstone() {
				continue
			}
			kbuf = appendKey(kbuf[:0], rec, k)
			key := string(kbuf)
			switch p := recordProblem(rec, k, bsize); {
			case rr.p < 0 || rr.r < 0 || rr.end < 0 || rr.end < rr.r:
				report("offsets", "record %d (key %q): %s", idx, key, p)
				continue
			case p != "":
				report("eof", "record %d (key %q): %s", idx, key, p)
				continue
			}
			if f, dup := first[key]; dup {
				report("dup", "record %d: duplicate key %q (also record %d); docarray serves the later record at the earlier position", idx, key, f)
			} else {
				first[key] = idx
			}
			l := rr.loc()
			if int64(cap(doc)) < l.size {
				doc = make([]byte, l.size)
			}
			if _, err := bf.ReadAt(doc[:l.size], l.start); err != nil {
				report("read", "record %d (key %q): reading its bytes: %v", idx, key, err)
			} else if err := ValidateDocument(doc[:l.size]); err != nil {
				report("parse", "record %d (key %q): the document does not parse as a DocumentProto: %v", idx, key, err)
			}
		}
	}
	for kind, c := range counts {
		if c > maxPerKind {
			add(filepath.Join(rel, HeaderName), "... and %d more problems like the above (%s)", c-maxPerKind, kinds[kind])
		}
	}
	return out
}
