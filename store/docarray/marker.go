package docarray

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"unicode/utf8"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// The .docarray marker: a virtual file in every store directory,
//
//	key_length: 36
//	order:
//	- "doc-000"
//	- …
//
// so that a copy of the directory (cp -r, rsync) says what it was.
// Writing one into an empty directory of the mount makes a store there;
// writing one with an order into a store makes the store adopt it.

type markerSpec struct {
	k     int // 0: not given
	order []string
}

// parseMarker reads a marker. Empty content is a marker with defaults.
func parseMarker(data []byte) (*markerSpec, error) {
	var m struct {
		KeyLength *int     `yaml:"key_length"`
		Order     []string `yaml:"order"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return &markerSpec{}, nil
		}
		return nil, fmt.Errorf("not a %s marker (YAML with key_length and order): %v", MarkerName, err)
	}
	spec := &markerSpec{order: m.Order}
	if m.KeyLength != nil {
		if *m.KeyLength < 1 || *m.KeyLength > MaxKeyLength {
			return nil, fmt.Errorf("key_length %d is not between 1 and %d", *m.KeyLength, MaxKeyLength)
		}
		spec.k = *m.KeyLength
	}
	return spec, nil
}

// normalizeOrder truncates the keys to k code points and drops repeats
// (the first place of a key wins).
func normalizeOrder(order []string, k int) ([]string, error) {
	seen := make(map[string]bool, len(order))
	out := make([]string, 0, len(order))
	for _, key := range order {
		if !utf8.ValidString(key) {
			return nil, fmt.Errorf("order lists a key that is not UTF-8: %q", key)
		}
		key = truncateKey(key, k)
		if !seen[key] {
			seen[key] = true
			out = append(out, key)
		}
	}
	return out, nil
}

// renderMarker writes the marker of a store with key length k and the
// given keys, each as a double-quoted YAML string.
func renderMarker(k int, keys []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "key_length: %d\n", k)
	if len(keys) == 0 {
		b.WriteString("order: []\n")
		return b.Bytes()
	}
	b.WriteString("order:\n")
	for _, key := range keys {
		b.WriteString("- ")
		appendYAMLQuoted(&b, key)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func appendYAMLQuoted(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == 0:
			b.WriteString(`\0`)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(b, `\x%02x`, r)
		case r == 0x85 || r == 0x2028 || r == 0x2029 || r == 0xFEFF || (r >= 0x80 && r < 0xA0):
			// Line breaks and invisible characters YAML would not keep.
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// setOrder adopts order (nil: none).
func (s *Store) setOrder(order []string) {
	s.orderDirty = true
	if len(order) == 0 {
		s.order, s.orderRank, s.orderFilled = nil, nil, 0
		return
	}
	s.order = order
	s.orderRank = make(map[string]int32, len(order))
	for i, k := range order {
		s.orderRank[k] = int32(i)
	}
	s.orderFilled = 0
	for i := 0; i < len(order) && i < len(s.slots); i++ {
		if s.slots[i].flags&fLive != 0 && s.keyOf(int32(i)) == order[i] {
			s.orderFilled++
		}
	}
}

type liveDoc struct {
	slot int32
	key  string
}

// liveDocs lists the live documents in store order.
func (s *Store) liveDocs() []liveDoc {
	out := make([]liveDoc, 0, s.live)
	var kbuf []byte
	_ = s.scanRecords(0, min(s.nrec, len(s.slots)), func(i int, rec []byte) {
		if f := s.slots[i].flags; f&fLive != 0 {
			if f&fKeyDisk != 0 {
				kbuf = appendKey(kbuf[:0], rec, s.k)
				out = append(out, liveDoc{int32(i), string(kbuf)})
			} else {
				out = append(out, liveDoc{int32(i), s.ext[int32(i)].key})
			}
		}
	})
	for i := s.nrec; i < len(s.slots); i++ {
		if s.slots[i].flags&fLive != 0 {
			out = append(out, liveDoc{int32(i), s.ext[int32(i)].key})
		}
	}
	return out
}

// inOrder reports whether every live document is where the adopted
// order wants it.
func (s *Store) inOrder(docs []liveDoc) bool {
	for _, d := range docs {
		r, listed := s.orderRank[d.key]
		if listed && r != d.slot || !listed && int(d.slot) < len(s.order) {
			return false
		}
	}
	return true
}

// relocate moves every document to where the adopted order wants it:
// listed keys at their rank, the others after, in their present order.
// The whole header is rewritten at the next write-back; duplicates and
// bad records are not carried over.
func (s *Store) relocate(docs []liveDoc) {
	n := len(s.order)
	for _, d := range docs {
		if _, listed := s.orderRank[d.key]; !listed {
			n++
		}
	}
	slots := make([]slot, max(n, s.nrec))
	ext := make(map[int32]*docExtra, len(s.ext))
	next := int32(len(s.order))
	for _, d := range docs {
		to, listed := s.orderRank[d.key]
		if !listed {
			to = next
			next++
		}
		old := s.slots[d.slot]
		x := s.ext[d.slot]
		if x == nil {
			x = &docExtra{}
		}
		x.slot, x.key = to, d.key
		slots[to] = slot{start: old.start, size: old.size, flags: old.flags&(fLive|fWritten) | fExt}
		ext[to] = x
	}
	s.slots, s.ext = slots, ext
	s.byHash = newKeyTable(len(docs))
	s.collide, s.hashed, s.inoOwner = map[string]int32{}, map[string]string{}, map[uint64]int32{}
	s.dups = map[int32][]int32{}
	clear(s.recDirty)
	for i, x := range ext {
		s.indexKey(x.key, i)
		if x.ino != 0 {
			s.inoOwner[x.ino] = i
		}
	}
	s.rewrite = true
	s.setOrder(s.order)
	s.orderChanged()
}

// Marker renders the store's marker and returns it with its attributes.
func (s *Store) Marker() ([]byte, Meta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renderMarkerLocked()
	s.settleMarkerLocked()
	return s.markerText, s.marker
}

func (s *Store) renderMarkerLocked() {
	if s.markerText == nil || s.markerGen != s.orderGen {
		docs := s.liveDocs()
		keys := make([]string, len(docs))
		for i, d := range docs {
			keys[i] = d.key
		}
		s.markerText, s.markerGen = renderMarker(s.k, keys), s.orderGen
	}
}

// expectMarkerLocked notes text, just written to the marker with the
// marker's current mtime, for settleMarkerLocked.
func (s *Store) expectMarkerLocked(text []byte) {
	s.markerWritten, s.markerWrittenMtime = bytes.Clone(text), s.marker.Mtime
}

// settleMarkerLocked: a marker written with documents still to come (a
// restore writes .docarray first, then the documents it lists) takes
// back the mtime it was written with once the store holds what it
// lists, whatever the documents' arrival did to it meanwhile; as rsync,
// cp -a and tar expect of a file whose content they wrote.
func (s *Store) settleMarkerLocked() {
	if s.markerWritten == nil {
		return
	}
	s.renderMarkerLocked()
	if bytes.Equal(s.markerText, s.markerWritten) {
		if s.marker.Mtime != s.markerWrittenMtime {
			s.marker.Mtime = s.markerWrittenMtime
			s.markerDirty = true
		}
		s.markerWritten = nil
	} else if len(s.order) == 0 {
		// Everything it listed is here, and the text still differs
		// (written by hand, in another layout): its mtime is the last
		// change's.
		s.markerWritten = nil
	}
}

// SetMarkerAttr changes the marker's mode, owner or mtime.
func (s *Store) SetMarkerAttr(c AttrChange) (Meta, error) {
	if err := s.checkWritable(MarkerName, "setattr"); err != nil {
		return Meta{}, err
	}
	s.mu.Lock()
	c.apply(&s.marker)
	if c.Mtime != nil {
		s.markerWrittenMtime = *c.Mtime
	}
	s.markerDirty = true
	m := s.marker
	s.mu.Unlock()
	return m, s.markHeaderDirty()
}

// WriteMarker applies a marker written into the store: its key length
// must be the store's; its order, if any, is adopted.
func (s *Store) WriteMarker(data []byte, meta *Meta) error {
	if err := s.checkWritable(MarkerName, "write"); err != nil {
		return err
	}
	path := filepath.Join(s.Rel(), MarkerName)
	spec, err := parseMarker(data)
	if err != nil {
		return engine.Refuse(path, "close", syscall.EINVAL, "refused: %v", err)
	}
	if spec.k != 0 && spec.k != s.k {
		return engine.Refuse(path, "close", syscall.EINVAL, "refused: key_length %d, the store's is %d (a store's key length cannot change)", spec.k, s.k)
	}
	order, err := normalizeOrder(spec.order, s.k)
	if err != nil {
		return engine.Refuse(path, "close", syscall.EINVAL, "refused: %v", err)
	}
	s.mutMu.RLock()
	s.mu.Lock()
	s.adoptLocked(order)
	s.journalOp(docOp{kind: opAdopt, order: order})
	if meta != nil {
		s.marker = *meta
	}
	s.expectMarkerLocked(data)
	s.markerDirty = true
	s.mu.Unlock()
	s.mutMu.RUnlock()
	return s.markHeaderDirty()
}

func (s *Store) adoptLocked(order []string) {
	if len(order) == 0 {
		if s.order != nil {
			s.setOrder(nil)
		}
		return
	}
	s.setOrder(order)
	if docs := s.liveDocs(); !s.inOrder(docs) {
		s.relocate(docs)
	}
	if s.orderFilled == len(s.order) {
		s.setOrder(nil)
	}
}

// AdoptScratch renames the marker held under the temporary name from
// onto .docarray (rsync's last step when it copies the marker).
func (s *Store) AdoptScratch(from string) error {
	s.mu.Lock()
	key, err := s.resolve(from)
	var nd *newDoc
	if err == nil {
		nd = s.creating[key]
	}
	s.mu.Unlock()
	if nd == nil || !nd.isScratch {
		if err == nil {
			err = engine.Refuse(filepath.Join(s.Rel(), from), "rename", syscall.EINVAL, "only a marker can be renamed onto %s", MarkerName)
		}
		return err
	}
	meta := nd.meta
	if err := s.WriteMarker(nd.scratch, &meta); err != nil {
		return err
	}
	s.mu.Lock()
	if s.creating[key] == nd {
		delete(s.creating, key)
	}
	s.mu.Unlock()
	return nil
}

// Create makes directory dirRel, a plain directory, a new store
// from a marker written there (by name, or renamed onto .docarray from
// the plain file skip). Files already in the directory must all be
// documents: they are moved into the store (made durable first, then
// removed) and their names returned; anything else refuses the marker
// with ENOTEMPTY and changes nothing.
func (d *Stores) Create(dirRel string, marker []byte, meta Meta, skip string) (*Store, []string, error) {
	path := filepath.Join(dirRel, MarkerName)
	if d.readOnly {
		return nil, nil, engine.Refuse(path, "create", syscall.EROFS, "read-only mount")
	}
	spec, err := parseMarker(marker)
	if err != nil {
		return nil, nil, engine.Refuse(path, "close", syscall.EINVAL, "refused: %v", err)
	}
	k := spec.k
	if k == 0 {
		k = DefaultKeyLength
	}
	order, err := normalizeOrder(spec.order, k)
	if err != nil {
		return nil, nil, engine.Refuse(path, "close", syscall.EINVAL, "refused: %v", err)
	}
	d.openMu.Lock()
	defer d.openMu.Unlock()
	names, err := engine.ReadDirSorted(d.back, dirRel)
	if err != nil {
		return nil, nil, err
	}
	type imported struct {
		name string
		data []byte
		meta Meta
	}
	var docs []imported
	for _, name := range names {
		if name == skip || engine.IsStageName(name) || name == MetaName || name == IndexName {
			continue
		}
		st, err := d.back.Lstat(filepath.Join(dirRel, name))
		if err != nil {
			return nil, nil, err
		}
		why := ""
		var data []byte
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			why = "not a regular file"
		} else if key, ok := KeyOfName(name); !ok || name == HeaderName || name == BodyName || key != truncateKey(key, k) {
			why = "not a document name (too long for the key length, or not escaped as a store escapes names)"
		} else if data, err = d.back.ReadFile(filepath.Join(dirRel, name)); err != nil {
			return nil, nil, err
		} else if verr := ValidateDocument(data); verr != nil {
			why = fmt.Sprintf("not a DocumentProto (%v)", verr)
		}
		if why != "" {
			return nil, nil, engine.Refuse(path, "create", syscall.ENOTEMPTY,
				"refused: a store can only be made in an empty directory or one holding documents; %s is %s", name, why)
		}
		docs = append(docs, imported{name, data, Meta{Mtime: st.Mtim.Nano(), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Ctime: now()}})
	}

	// The sidecar first, then body.bin, then header.bin: the store
	// exists once both are there, and then it is complete.
	dirf, err := d.back.OpenDir(dirRel)
	if err != nil {
		return nil, nil, err
	}
	defer dirf.Close()
	dfd := int(dirf.Fd())
	base := now()
	side := encodeStoreLine(newStoreID(), k, base)
	side = append(side, encodeMarkerLine(meta)...)
	if len(order) > 0 {
		side = append(side, encodeOrderLine(order)...)
	}
	if err := writeFileAt(dfd, MetaName, side, 0o644); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dirRel, MetaName), err)
	}
	for _, name := range []string{BodyName, HeaderName} {
		if err := writeFileAt(dfd, name, nil, 0o644); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dirRel, name), err)
		}
	}
	if os.Geteuid() == 0 && (meta.UID != 0 || meta.GID != 0) {
		// The store belongs to whoever made it (a mount serving others
		// as root), as files created through the mount do.
		for _, name := range []string{MetaName, BodyName, HeaderName} {
			if err := unix.Fchownat(dfd, name, int(meta.UID), int(meta.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dirRel, name), err)
			}
		}
	}
	s, err := d.openStoreLocked(dirRel)
	if err != nil || s == nil {
		return nil, nil, fmt.Errorf("%s: the new store does not open: %v", dirRel, err)
	}
	s.mu.Lock()
	s.expectMarkerLocked(marker)
	s.mu.Unlock()
	var moved []string
	for _, doc := range docs {
		if err := s.insert(doc.name, doc.data, doc.meta, 0, true); err != nil {
			return s, moved, err
		}
	}
	if len(docs) > 0 {
		if err := s.Sync(); err != nil {
			return s, moved, err
		}
		for _, doc := range docs {
			if err := unix.Unlinkat(dfd, doc.name, 0); err != nil {
				return s, moved, err
			}
			moved = append(moved, doc.name)
		}
	}
	return s, moved, nil
}

// MarkerIno is the inode number of a store directory's marker: derived
// from the directory's, so that it is the same before and after the
// marker makes the directory a store.
func MarkerIno(dirIno uint64) uint64 {
	return docIno(dirIno, "\x00"+MarkerName)
}
