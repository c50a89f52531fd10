package docarray

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The on-disk format of a DocumentArrayMemmap store (docarray 0.0.1),
// byte for byte as ../shared/formats/docarray-memmap.md describes it.
const (
	HeaderName = "header.bin"
	BodyName   = "body.bin"
	// MarkerName is the virtual file of a store directory in the mount.
	MarkerName = ".docarray"
	// MetaName is arrayfs's own sidecar in a store directory: per
	// document mtime, mode, owner and inode number, which docarray has no
	// place for. docarray ignores files it does not know.
	MetaName = ".arrayfs-docmeta.jsonl"

	DefaultKeyLength = 36
	MaxKeyLength     = 4096

	// MaxDocumentSize bounds a document (and a marker) written through
	// the mount, which is held in memory until its commit: a write or a
	// truncation past it is refused with EFBIG, as a file system refuses
	// one past its largest file.
	MaxDocumentSize = 1 << 30

	// docPageSize is the G arrayfs splits a start offset with (Linux's
	// mmap.ALLOCATIONGRANULARITY). Readers use p+r and never assume it.
	docPageSize = 4096
)

func docRecordSize(k int) int { return 4*k + 24 }

// docLoc is a document's bytes in body.bin: body[start : start+size].
type docLoc struct {
	start int64
	size  int64
}

func (l docLoc) end() int64 { return l.start + l.size }

// rawRecord is the (p, r, end) triple of a header record.
type rawRecord struct{ p, r, end int64 }

var tombstoneRecord = rawRecord{-1, -1, -1}

func (rr rawRecord) tombstone() bool { return rr == tombstoneRecord }

func (rr rawRecord) loc() docLoc { return docLoc{start: rr.p + rr.r, size: rr.end - rr.r} }

// recordFor splits start the way the original does: p is start rounded
// down to a page, r the rest.
func recordFor(l docLoc) rawRecord {
	p := l.start / docPageSize * docPageSize
	r := l.start - p
	return rawRecord{p: p, r: r, end: r + l.size}
}

func readRawRecord(rec []byte, k int) rawRecord {
	o := 4 * k
	return rawRecord{
		p:   int64(binary.LittleEndian.Uint64(rec[o:])),
		r:   int64(binary.LittleEndian.Uint64(rec[o+8:])),
		end: int64(binary.LittleEndian.Uint64(rec[o+16:])),
	}
}

// keyProblem says why the key field of a record is not a key, or "".
// A key is UTF-32LE code points right-padded with zeros (numpy's str
// dtype, which strips trailing zeros on read); a zero inside the key is
// kept as a character.
func keyProblem(rec []byte, k int) string {
	for i := 0; i < k; i++ {
		c := binary.LittleEndian.Uint32(rec[4*i:])
		if c > utf8.MaxRune || (c >= 0xD800 && c <= 0xDFFF) {
			return fmt.Sprintf("key is not valid UTF-32 (code unit %#x at character %d)", c, i)
		}
	}
	return ""
}

// appendKey appends the key of rec as UTF-8 to dst. rec must have no
// keyProblem.
func appendKey(dst, rec []byte, k int) []byte {
	n := keyLen(rec, k)
	dst, i := appendASCII(slices.Grow(dst, n), rec, n)
	for ; i < n; i++ {
		dst = utf8.AppendRune(dst, rune(binary.LittleEndian.Uint32(rec[4*i:])))
	}
	return dst
}

// appendValidKey is appendKey and keyProblem in one pass: the key of rec
// as UTF-8, and whether it is valid UTF-32.
func appendValidKey(dst, rec []byte, k int) ([]byte, bool) {
	n := keyLen(rec, k)
	dst, i := appendASCII(slices.Grow(dst, n), rec, n)
	for ; i < n; i++ {
		c := binary.LittleEndian.Uint32(rec[4*i:])
		switch {
		case c < utf8.RuneSelf:
			dst = append(dst, byte(c))
		case c > utf8.MaxRune || (c >= 0xD800 && c <= 0xDFFF):
			return dst, false
		default:
			dst = utf8.AppendRune(dst, rune(c))
		}
	}
	return dst, true
}

// Parsing a big header is mostly the decoding of keys: keyLen takes the
// zero padding four code points at a time, and appendASCII ASCII eight
// at a time (the keys docarray makes); a 1,000,000-record header is
// indexed in 92-106 ms against 120 one code point at a time
// (BenchmarkDocStoreOpen1M, 2026-12-02, two at a time); eight at a time
// take key decoding from 64 to 46 ms of CPU per million 32-character
// keys (2026-12-07). What is left is mostly waiting for the header's
// bytes to arrive from memory.

// keyLen is the number of code points of rec's key: k less the zero
// padding at its end.
func keyLen(rec []byte, k int) int {
	n := k
	for n >= 4 && binary.LittleEndian.Uint64(rec[4*(n-4):])|binary.LittleEndian.Uint64(rec[4*(n-2):]) == 0 {
		n -= 4
	}
	for n > 0 && binary.LittleEndian.Uint32(rec[4*(n-1):]) == 0 {
		n--
	}
	return n
}

// asciiPairs tests two code points of a little-endian word for ASCII.
const asciiPairs = 0xffffff80_ffffff80

// appendASCII appends the first code points of rec's key of n while they
// are ASCII, and says how many it took.
func appendASCII(dst, rec []byte, n int) ([]byte, int) {
	le := binary.LittleEndian
	i := 0
	for ; i+8 <= n; i += 8 {
		w0, w1, w2, w3 := le.Uint64(rec[4*i:]), le.Uint64(rec[4*i+8:]), le.Uint64(rec[4*i+16:]), le.Uint64(rec[4*i+24:])
		if (w0|w1|w2|w3)&asciiPairs != 0 {
			break
		}
		// A word holds two code points below 0x80, in its bytes 0
		// and 4: w | w>>24 brings them to bytes 0 and 1.
		pair := func(w uint64) uint64 { return (w | w>>24) & 0xffff }
		dst = le.AppendUint64(dst, pair(w0)|pair(w1)<<16|pair(w2)<<32|pair(w3)<<48)
	}
	for ; i+2 <= n; i += 2 {
		w := le.Uint64(rec[4*i:])
		if w&asciiPairs != 0 {
			break
		}
		dst = append(dst, byte(w), byte(w>>32))
	}
	return dst, i
}

// encodeRecord writes a whole record into dst (docRecordSize(k) bytes):
// the key's first k code points, zero-padded, then p, r, end.
func encodeRecord(dst []byte, key string, k int, rr rawRecord) {
	clear(dst[:4*k])
	i := 0
	for _, c := range key {
		if i == k {
			break
		}
		binary.LittleEndian.PutUint32(dst[4*i:], uint32(c))
		i++
	}
	binary.LittleEndian.PutUint64(dst[4*k:], uint64(rr.p))
	binary.LittleEndian.PutUint64(dst[4*k+8:], uint64(rr.r))
	binary.LittleEndian.PutUint64(dst[4*k+16:], uint64(rr.end))
}

// truncateKey cuts key to its first k code points, as the original does
// with ids longer than its key length.
func truncateKey(key string, k int) string {
	n := 0
	for i := range key {
		if n == k {
			return key[:i]
		}
		n++
	}
	return key
}

// paddingProblem says whether a zero code point is followed by another
// character: numpy pads keys with zeros at the end only. A key with a
// zero inside is legal (numpy keeps it) but so rare that detection of
// the key length treats it as a misfit, which is what tells apart a K
// that puts the zero high halves of offsets inside a key.
func paddingProblem(rec []byte, k int) bool {
	zero := false
	for i := 0; i < k; i++ {
		c := binary.LittleEndian.Uint32(rec[4*i:])
		if c == 0 {
			zero = true
		} else if zero {
			return true
		}
	}
	return false
}

// misfit tells detection that a record does not look like one written
// with key length k. Besides what makes a record unservable, it counts
// what docarray never writes but a wrong K produces all the time, since
// zero padding and small offsets are everywhere: a zero inside a key,
// an empty document (every Document has an id), a key seen before.
func misfit(rec []byte, k int, bodySize int64, seen map[string]bool) bool {
	if recordProblem(rec, k, bodySize) != "" || paddingProblem(rec, k) {
		return true
	}
	rr := readRawRecord(rec, k)
	if rr.tombstone() {
		return false
	}
	if rr.end == rr.r {
		return true
	}
	key := string(appendKey(nil, rec, k))
	if seen[key] {
		return true
	}
	seen[key] = true
	return false
}

// plausibleK is the cheap test a K must pass before its records are
// checked: the (p, r, end) of its first, middle or last record looks
// like one, a tombstone or a non-empty document inside body.bin at a page-aligned
// p (4096 on Linux, 65536 on Windows, the original's G). A wrong K reads
// key characters there and fails; only 24 bytes are read per record.
func plausibleK(k int, n, bodySize int64, read func(p []byte, off int64) error) bool {
	rs := int64(docRecordSize(k))
	var tail [24]byte
	for _, i := range []int64{0, n / 2, n - 1} {
		if read(tail[:], i*rs+int64(4*k)) != nil {
			continue
		}
		rr := rawRecord{
			p:   int64(binary.LittleEndian.Uint64(tail[0:])),
			r:   int64(binary.LittleEndian.Uint64(tail[8:])),
			end: int64(binary.LittleEndian.Uint64(tail[16:])),
		}
		if rr.tombstone() || rr.p >= 0 && rr.p%docPageSize == 0 && rr.r >= 0 && rr.r < 1<<16 &&
			rr.end > rr.r && rr.p <= bodySize && rr.end <= bodySize-rr.p {
			return true
		}
	}
	return false
}

// recordProblem says why a record cannot be served, or "" when it is a
// tombstone or a document inside body.bin.
func recordProblem(rec []byte, k int, bodySize int64) string {
	if p := keyProblem(rec, k); p != "" {
		return p
	}
	return offsetProblem(rec, k, bodySize)
}

// offsetProblem is recordProblem of a record whose key is valid.
func offsetProblem(rec []byte, k int, bodySize int64) string {
	rr := readRawRecord(rec, k)
	switch {
	case rr.tombstone():
		return ""
	case rr.p < 0 || rr.r < 0 || rr.end < 0:
		return fmt.Sprintf("negative offset (p=%d r=%d end=%d) in a record that is not a tombstone", rr.p, rr.r, rr.end)
	case rr.end < rr.r:
		return fmt.Sprintf("end %d before start %d (p=%d)", rr.end, rr.r, rr.p)
	case rr.p > bodySize || rr.end > bodySize-rr.p:
		return fmt.Sprintf("past the end of %s (bytes %d..%d, the file has %d)", BodyName, rr.p+rr.r, rr.p+rr.end, bodySize)
	}
	return ""
}

// keyLengthChoice is the outcome of detecting a store's key length.
type keyLengthChoice struct {
	k      int
	reason string // when k == 0: why no key length was chosen
}

// detectKeyLength finds the K for which header.bin (headerSize bytes, read
// through read) is a run of records with valid keys and sane offsets. It
// samples the first and last records, which is enough to tell the Ks
// apart: a wrong K puts offsets in the key field and key characters in
// the offsets, and fails on nearly every record.
//
// A K need not divide the size: the original's crash in the middle of an
// append leaves a torn last record, which is then ignored. Nor must every
// record fit: a store with a bad record among good ones is served without
// it. The K chosen is the one under which most sampled records fit, if
// they are a majority; on a tie, one that divides the size, then 36
// (docarray's default). Several Ks that fit every record and divide the
// size are ambiguous unless 36 is one: the store is reported, not
// guessed. The caller reports the records that do not fit.
func detectKeyLength(headerSize, bodySize int64, read func(p []byte, off int64) error) keyLengthChoice {
	if headerSize == 0 {
		return keyLengthChoice{k: DefaultKeyLength}
	}
	// A perfect fit of docarray's default settles it: no K can fit
	// more of the sample, and ties go to it. Most stores are that, and
	// the other Ks need not be sampled at all.
	if c, ok := sampleKeyLength(DefaultKeyLength, headerSize, bodySize, read); ok && c.bad == 0 && c.exact {
		return keyLengthChoice{k: DefaultKeyLength}
	}
	var cands []keyLengthCand
	for k := 1; k <= MaxKeyLength; k++ {
		if headerSize/int64(docRecordSize(k)) == 0 {
			break // larger K leave not even one record
		}
		if c, ok := sampleKeyLength(k, headerSize, bodySize, read); ok && 2*c.bad < c.all {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return keyLengthChoice{reason: fmt.Sprintf("no key length fits %s (%d bytes): under every K, most records have invalid keys or offsets; give -o key_length=N", HeaderName, headerSize)}
	}
	// better: more of the sample fits, then a whole number of records,
	// then docarray's default.
	better := func(a, b keyLengthCand) bool {
		if fa, fb := (a.all-a.bad)*b.all, (b.all-b.bad)*a.all; fa != fb {
			return fa > fb
		}
		if a.exact != b.exact {
			return a.exact
		}
		return a.k == DefaultKeyLength && b.k != DefaultKeyLength
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if better(c, best) {
			best = c
		}
	}
	if best.bad == 0 && best.exact && best.k != DefaultKeyLength {
		var ks []int
		for _, c := range cands {
			if c.bad == 0 && c.exact {
				ks = append(ks, c.k)
			}
		}
		if len(ks) > 1 {
			return keyLengthChoice{reason: fmt.Sprintf("several key lengths %v fit %s; give -o key_length=N", ks, HeaderName)}
		}
	}
	return keyLengthChoice{k: best.k}
}

// keyLengthCand is how a sample of the header's records fits key
// length k: bad of all sampled records do not; exact: the size is a
// whole number of records.
type keyLengthCand struct {
	k        int
	bad, all int
	exact    bool
}

// sampleKeyLength samples the first and last records of the header
// under key length k; ok is false when k is given up (it cannot fit a
// majority, or the records cannot be read).
func sampleKeyLength(k int, headerSize, bodySize int64, read func(p []byte, off int64) error) (keyLengthCand, bool) {
	const sample = 512
	rs := int64(docRecordSize(k))
	n := headerSize / rs
	if n == 0 || !plausibleK(k, n, bodySize, read) {
		return keyLengthCand{}, false
	}
	c := keyLengthCand{k: k, exact: headerSize%rs == 0}
	limit := int(min(n, 2*sample))
	seen := map[string]bool{}
	// Records are read a few at a time: a wrong K fails on nearly
	// every record, and is given up as soon as it cannot have a
	// majority, after reading a handful.
	check := func(from, to int64) bool {
		var buf []byte
		for at, chunk := from, int64(4); at < to; at, chunk = at+chunk, min(2*chunk, 64) {
			m := min(chunk, to-at)
			if int64(len(buf)) < m*rs {
				buf = make([]byte, m*rs)
			}
			b := buf[:m*rs]
			if read(b, at*rs) != nil {
				c.bad += int(to - at)
				c.all += int(to - at)
				return false
			}
			for i := int64(0); i < m; i++ {
				c.all++
				if misfit(b[i*rs:(i+1)*rs], k, bodySize, seen) {
					c.bad++
				}
			}
			if 2*c.bad >= limit || c.bad == c.all || c.all >= 16 && 2*c.bad > c.all {
				return false
			}
		}
		return true
	}
	if !check(0, min(n, sample)) {
		return c, false
	}
	if n > sample && !check(max(sample, n-sample), n) {
		return c, false
	}
	return c, true
}

// WriteStore writes a new store in dir (which must not hold one) the
// way docarray appends documents: body.bin back to back, one header
// record each, with key length k.
func WriteStore(dir string, k int, keys []string, docs [][]byte) error {
	var header, body []byte
	rec := make([]byte, docRecordSize(k))
	for i, d := range docs {
		encodeRecord(rec, keys[i], k, recordFor(docLoc{start: int64(len(body)), size: int64(len(d))}))
		header = append(header, rec...)
		body = append(body, d...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, BodyName), body, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, HeaderName), header, 0o644)
}

// TextDocument is a DocumentProto with an id and a text (mime_type
// text/plain), as docarray's Document(id=..., text=...) serializes.
func TextDocument(id, text string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 10, protowire.BytesType)
	b = protowire.AppendString(b, "text/plain")
	b = protowire.AppendTag(b, 13, protowire.BytesType)
	b = protowire.AppendString(b, text)
	return b
}
