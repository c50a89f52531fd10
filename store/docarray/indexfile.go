package docarray

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"
	"golang.org/x/sys/unix"
)

// The saved index: the in-memory index of header.bin (index.go), kept
// beside the store as IndexName so that the next open of an unchanged
// store reads it instead of parsing every record (a million records: a
// few tens of milliseconds instead of a third of a second).
//
// It is a cache and nothing else: used only while header.bin is the file
// it was made from (same device, inode, size, mtime and ctime, to the
// nanosecond), body.bin has the size it had and the key length is the
// same, and its checksum holds; otherwise the records are parsed again
// and a new one is saved. docarray ignores the file, and the mount
// never shows it. It is written (staged, then renamed into place) right
// after a parse, on a read-write mount only; a store that arrayfs itself
// writes to is parsed again at its next open.

// IndexName is the saved index in a store directory.
const IndexName = ".arrayfs-docindex"

const indexMagic = "ARRAYFS-DOCINDEX\x01"

// indexSig is what the saved index is valid for.
type indexSig struct {
	dev, ino           uint64
	size, mtime, ctime int64
	bodySize           int64
	k                  int64
}

func (s *Store) indexSig() (indexSig, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.header.Fd()), &st); err != nil {
		return indexSig{}, err
	}
	return indexSig{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
		bodySize: s.bodySize, k: int64(s.k)}, nil
}

// savedIndex is a copy of the index just parsed, for saveIndex to
// encode in the background while the store serves (and changes).
type savedIndex struct {
	sig       indexSig
	seed      uint64
	slots     []slot
	table     keyTable
	collide   map[string]int32
	dups      map[int32][]int32
	hashed    map[string]string
	live, bad int
	badMsgs   []string
}

func (s *Store) snapshotIndex(sig indexSig) *savedIndex {
	dups := make(map[int32][]int32, len(s.dups))
	for j, d := range s.dups {
		dups[j] = slices.Clone(d)
	}
	t := *s.byHash
	t.hs, t.slots = slices.Clone(t.hs), slices.Clone(t.slots)
	return &savedIndex{sig: sig, seed: s.seed, slots: slices.Clone(s.slots), table: t,
		collide: maps.Clone(s.collide), dups: dups, hashed: maps.Clone(s.hashed),
		live: s.live, bad: s.indexBad, badMsgs: slices.Clone(s.indexBadMsgs)}
}

// encode is the saved index file.
func (x *savedIndex) encode() []byte {
	s, sig := x, x.sig
	n := len(s.slots)
	b := make([]byte, 0, 256+n*20+len(s.table.hs)*12+len(s.collide)*64+len(s.dups)*32+len(s.hashed)*256)
	u64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	i64 := func(v int64) { u64(uint64(v)) }
	str := func(v string) { u64(uint64(len(v))); b = append(b, v...) }
	b = append(b, indexMagic...)
	for _, v := range []int64{int64(sig.dev), int64(sig.ino), sig.size, sig.mtime, sig.ctime, sig.bodySize, sig.k} {
		i64(v)
	}
	u64(s.seed)
	i64(int64(n))
	i64(int64(s.live))
	i64(int64(s.bad))
	u64(uint64(len(s.badMsgs)))
	for _, m := range s.badMsgs {
		str(m)
	}
	for i := range s.slots {
		i64(s.slots[i].start)
		i64(s.slots[i].size)
		b = binary.LittleEndian.AppendUint32(b, uint32(s.slots[i].flags))
	}
	t := &s.table
	u64(uint64(len(t.hs)))
	u64(uint64(t.n))
	for _, h := range t.hs {
		u64(h)
	}
	for _, i := range t.slots {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
	}
	u64(uint64(len(s.collide)))
	for k, i := range s.collide {
		str(k)
		i64(int64(i))
	}
	u64(uint64(len(s.dups)))
	for j, ds := range s.dups {
		i64(int64(j))
		u64(uint64(len(ds)))
		for _, d := range ds {
			i64(int64(d))
		}
	}
	u64(uint64(len(s.hashed)))
	for name, key := range s.hashed {
		str(name)
		str(key)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errIndexStale = errors.New("not this header.bin's")

// indexReader decodes a saved index, failing at the first thing out of
// place.
type indexReader struct {
	b   []byte
	err error
}

// take returns the next n bytes, or nil once anything is missing.
func (r *indexReader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *indexReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *indexReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// count reads a length that each of its items needs at least min bytes
// for, so that a corrupt count cannot make it allocate past the file.
func (r *indexReader) count(min int) int {
	n := r.u64()
	if r.err == nil && (min > 0 && n > uint64(len(r.b)/min) || n > 1<<40) {
		r.err = io.ErrUnexpectedEOF
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func (r *indexReader) str() string {
	return string(r.take(r.count(1)))
}

// loadSavedIndex reads the saved index into s, if it is valid for the
// store's files as they are; false means parse the records.
func (s *Store) loadSavedIndex(sig indexSig) bool {
	data, err := readFileAt(s.dirFd(), IndexName)
	if err != nil || len(data) < len(indexMagic)+4 || !bytes.HasPrefix(data, []byte(indexMagic)) {
		return false
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return false
	}
	r := &indexReader{b: body[len(indexMagic):]}
	var got indexSig
	got.dev, got.ino = r.u64(), r.u64()
	got.size, got.mtime, got.ctime = int64(r.u64()), int64(r.u64()), int64(r.u64())
	got.bodySize, got.k = int64(r.u64()), int64(r.u64())
	if r.err != nil || got != sig {
		return false
	}
	seed := r.u64()
	n := r.count(20)
	if n != int(s.sigs[0].Size/int64(s.rs)) {
		return false
	}
	live, nbad := int(r.u64()), int(r.u64())
	msgs := make([]string, r.count(8))
	for i := range msgs {
		msgs[i] = r.str()
	}
	slots := make([]slot, n)
	for i := range slots {
		slots[i].start, slots[i].size = int64(r.u64()), int64(r.u64())
		slots[i].flags = slotFlags(r.u32())
	}
	cells := r.count(12)
	t := &keyTable{}
	if cells == 0 || cells&(cells-1) != 0 {
		return false
	}
	t.init(cells)
	t.n = int(r.u64())
	for c := range t.hs {
		t.hs[c] = r.u64()
	}
	for c := range t.slots {
		t.slots[c] = int32(r.u32())
	}
	collide := map[string]int32{}
	for range r.count(16) {
		k := r.str()
		collide[k] = int32(r.u64())
	}
	dups := map[int32][]int32{}
	for range r.count(16) {
		j := int32(r.u64())
		ds := make([]int32, r.count(8))
		for i := range ds {
			ds[i] = int32(r.u64())
		}
		dups[j] = ds
	}
	hashed := map[string]string{}
	for range r.count(16) {
		name := r.str()
		hashed[name] = r.str()
	}
	if r.err != nil || len(r.b) != 0 || len(t.hs) != len(t.slots) {
		return false
	}
	// Every slot the table names must be a record of this header.
	for c, h := range t.hs {
		if h != 0 && (t.slots[c] < 0 || int(t.slots[c]) >= n) {
			return false
		}
	}
	s.initIndex(n)
	s.seed, s.slots, s.byHash, s.collide, s.dups, s.hashed, s.live = seed, slots, t, collide, dups, hashed, live
	s.indexBad, s.indexBadMsgs = nbad, msgs
	s.indexLoaded = true
	return true
}

// saveIndex writes the saved index of the index just parsed: staged
// beside the store and renamed into place, in the background (a failure
// only means that the next open parses the records again).
func (s *Store) saveIndex(sig indexSig) {
	x := s.snapshotIndex(sig)
	dfd, err := unix.Dup(s.dirFd())
	if err != nil {
		return
	}
	s.ds.saves.Add(1)
	go func() {
		defer s.ds.saves.Done()
		defer unix.Close(dfd)
		data := x.encode()
		fd, name, err := engine.CreateStageFile(dfd, IndexName, 0o644)
		if err != nil {
			return
		}
		f := os.NewFile(uintptr(fd), name)
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Renameat(dfd, name, dfd, IndexName)
		}
		if err != nil {
			unix.Unlinkat(dfd, name, 0)
		}
	}()
}

// readFileAt reads file name of directory dirFd, not through a link.
func readFileAt(dirFd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > 1<<40 {
		return nil, errIndexStale
	}
	b := make([]byte, st.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// openIndex reads the saved index if it is valid, else parses the
// records and saves the index they make. An index is saved only of a
// header.bin last changed more than racyWindow ago: a change after it
// then has a later timestamp, whatever the file system's clock tick.
func (s *Store) openIndex() error {
	sig, sigErr := s.indexSig()
	if sigErr == nil && s.loadSavedIndex(sig) {
		s.reportIndex()
		return nil
	}
	if err := s.loadIndex(); err != nil {
		return err
	}
	if sigErr == nil && !s.readOnly && time.Now().UnixNano()-max(sig.mtime, sig.ctime) > int64(indexRacyWindow) {
		s.saveIndex(sig)
	}
	return nil
}

// indexRacyWindow: a header.bin changed this recently may change again
// without its timestamps changing.
var indexRacyWindow = 2 * time.Second
