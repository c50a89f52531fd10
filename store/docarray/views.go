package docarray

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
	"google.golang.org/protobuf/encoding/protowire"
)

// Views of a store (/.arrayfs/views/<store>/): one directory per
// document with its fields as files (text, buffer, blob.npy,
// embedding.npy, tags.json, doc.json, chunks/<i>/, matches/<i>/), and
// files of the whole store (ids.txt, docs.jsonl, texts.jsonl,
// embeddings.npy, info.json; wholeviews.go). A document's text and
// tags.json are writable: the document is re-encoded with the new field
// and written like any document.

var _ engine.Viewer = (*Stores)(nil)

// ViewItems names the stores among the subdirectories of dirRel.
func (d *Stores) ViewItems(dirRel string, names []string) []string {
	var out []string
	for _, n := range names {
		rel := filepath.Join(dirRel, n)
		if d.back.IsRegular(filepath.Join(rel, HeaderName)) && d.back.IsRegular(filepath.Join(rel, BodyName)) {
			out = append(out, n)
		}
	}
	return out
}

// ViewItem is the view directory of store name of dirRel; nil when it
// is no store arrayfs serves.
func (d *Stores) ViewItem(dirRel, name string) (engine.ViewDir, error) {
	rel := filepath.Join(dirRel, name)
	s, err := d.StoreErr(rel)
	if s == nil {
		return nil, err
	}
	return &storeDir{d: d, rel: rel}, nil
}

// storeDir is the views of one store.
type storeDir struct {
	engine.ViewDirBase
	d   *Stores
	rel string
}

func (v *storeDir) store() (*Store, error) {
	s, err := v.d.StoreErr(v.rel)
	if s == nil && err == nil {
		err = syscall.ENOENT
	}
	return s, err
}

// wholeNames are the files of a whole store; a document of one of these
// names has no view directory (its canonical file is still there).
var wholeNames = []string{"docs.jsonl", "embeddings.npy", "ids.txt", "info.json", "texts.jsonl"}

func isWholeName(n string) bool { return slices.Contains(wholeNames, n) }

func (v *storeDir) List() ([]engine.ViewEntry, error) {
	s, err := v.store()
	if err != nil {
		return nil, err
	}
	var out []engine.ViewEntry
	w, err := v.d.whole(s)
	if err != nil {
		return nil, err
	}
	for _, n := range wholeNames {
		if n == "embeddings.npy" && !w.embeddingsOK() {
			continue
		}
		out = append(out, engine.ViewEntry{Name: n})
	}
	for _, e := range s.List() {
		if !e.Scratch && !isWholeName(e.Name) {
			out = append(out, engine.ViewEntry{Name: e.Name, Dir: true})
		}
	}
	return out, nil
}

func (v *storeDir) Lookup(name string) (engine.ViewNode, error) {
	s, err := v.store()
	if err != nil {
		return nil, err
	}
	if isWholeName(name) {
		if name == "embeddings.npy" {
			w, err := v.d.whole(s)
			if err != nil || !w.embeddingsOK() {
				return nil, err
			}
		}
		return &wholeFile{d: v.d, rel: v.rel, name: name}, nil
	}
	e, err := s.Lookup(name)
	if err != nil || e.Scratch {
		return nil, nil
	}
	return &docDir{d: v.d, rel: v.rel, name: e.Name}, nil
}

// docStep is one step down a document's tree: chunk or match i.
type docStep struct {
	matches bool
	i       int
}

// docDir is the views of one document (or of a chunk or match of one).
type docDir struct {
	engine.ViewDirBase
	d    *Stores
	rel  string // the store
	name string // the document's file name
	path []docStep
}

// fields decodes the document as it is now and walks down its path.
func (v *docDir) fields() (*docFields, Entry, *Store, error) {
	s, err := v.d.StoreErr(v.rel)
	if s == nil {
		if err == nil {
			err = syscall.ENOENT
		}
		return nil, Entry{}, nil, err
	}
	r, e, err := s.Open(v.name)
	if err != nil {
		return nil, e, nil, err
	}
	b, err := r.Bytes()
	r.Release()
	if err != nil {
		return nil, e, nil, err
	}
	f, err := parseDoc(b)
	if err != nil {
		return nil, e, nil, engine.Refuse(filepath.Join(v.rel, v.name), "read", syscall.EIO, "not a DocumentProto: %v", err)
	}
	for _, st := range v.path {
		list := f.chunks
		if st.matches {
			list = f.matches
		}
		if st.i >= len(list) {
			return nil, e, nil, syscall.ENOENT
		}
		if f, err = parseDoc(list[st.i]); err != nil {
			return nil, e, nil, syscall.ENOENT
		}
	}
	return f, e, s, nil
}

// docFieldNames are the files a document can have, in listing order.
var docFieldNames = []string{"blob.npy", "buffer", "doc.json", "embedding.npy", "tags.json", "text"}

// has reports whether the document has the field file name.
func (f *docFields) has(name string) bool {
	switch name {
	case "text":
		return f.hasText
	case "buffer":
		return f.hasBuffer
	case "blob.npy":
		_, why := parseNdArray(f.blob)
		return f.hasBlob && why == ""
	case "embedding.npy":
		_, why := parseNdArray(f.embedding)
		return f.hasEmbedding && why == ""
	case "tags.json":
		return f.hasTags
	case "doc.json":
		return true
	}
	return false
}

// field is the content of field file name.
func (f *docFields) field(name string) []byte {
	switch name {
	case "text":
		return []byte(f.text)
	case "buffer":
		return f.buffer
	case "blob.npy", "embedding.npy":
		b := f.blob
		if name == "embedding.npy" {
			b = f.embedding
		}
		a, _ := parseNdArray(b)
		return append(engine.NpyHeader(a.dtype, false, a.shape), a.buffer...)
	case "tags.json":
		return engine.JSON(structJSON(f.tags))
	case "doc.json":
		return engine.JSON(f.docJSON())
	}
	return nil
}

func (v *docDir) List() ([]engine.ViewEntry, error) {
	f, _, _, err := v.fields()
	if err != nil {
		return nil, err
	}
	var out []engine.ViewEntry
	for _, n := range docFieldNames {
		if f.has(n) {
			out = append(out, engine.ViewEntry{Name: n})
		}
	}
	if len(f.chunks) > 0 {
		out = append(out, engine.ViewEntry{Name: "chunks", Dir: true})
	}
	if len(f.matches) > 0 {
		out = append(out, engine.ViewEntry{Name: "matches", Dir: true})
	}
	return out, nil
}

func (v *docDir) Lookup(name string) (engine.ViewNode, error) {
	f, _, _, err := v.fields()
	if err != nil {
		return nil, err
	}
	switch {
	case name == "chunks" && len(f.chunks) > 0:
		return &docList{parent: v}, nil
	case name == "matches" && len(f.matches) > 0:
		return &docList{parent: v, matches: true}, nil
	case f.has(name):
		return &docFile{dir: v, name: name}, nil
	}
	return nil, nil
}

// docList is chunks/ or matches/ of a document: one directory each.
type docList struct {
	engine.ViewDirBase
	parent  *docDir
	matches bool
}

func (v *docList) count() (int, error) {
	f, _, _, err := v.parent.fields()
	if err != nil {
		return 0, err
	}
	if v.matches {
		return len(f.matches), nil
	}
	return len(f.chunks), nil
}

func (v *docList) List() ([]engine.ViewEntry, error) {
	n, err := v.count()
	if err != nil {
		return nil, err
	}
	out := make([]engine.ViewEntry, n)
	for i := range out {
		out[i] = engine.ViewEntry{Name: strconv.Itoa(i), Dir: true}
	}
	return out, nil
}

func (v *docList) Lookup(name string) (engine.ViewNode, error) {
	n, err := v.count()
	if err != nil {
		return nil, err
	}
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || i >= n || strconv.Itoa(i) != name {
		return nil, nil
	}
	p := v.parent
	path := append(append([]docStep(nil), p.path...), docStep{matches: v.matches, i: i})
	return &docDir{d: p.d, rel: p.rel, name: p.name, path: path}, nil
}

// docFile is one field of a document.
type docFile struct {
	engine.ViewFileBase
	dir  *docDir
	name string
}

// writable: a top-level document's text and tags.json.
func (v *docFile) writable() bool {
	return !v.dir.d.readOnly && len(v.dir.path) == 0 && (v.name == "text" || v.name == "tags.json")
}

func (v *docFile) Stat() (engine.ViewStat, error) {
	f, e, _, err := v.dir.fields()
	if err != nil {
		return engine.ViewStat{}, err
	}
	return engine.ViewStat{Size: int64(len(f.field(v.name))), Mtime: e.Meta.Mtime, Writable: v.writable()}, nil
}

func (v *docFile) Open(write bool) (engine.Content, error) {
	f, _, _, err := v.dir.fields()
	if err != nil {
		return nil, err
	}
	data := f.field(v.name)
	if !write {
		return engine.BytesContent(data), nil
	}
	if !v.writable() {
		if v.dir.d.readOnly {
			return nil, engine.Refuse(v.rel(), "open", syscall.EROFS, "read-only mount")
		}
		return nil, engine.ErrReadOnlyView(v.rel())
	}
	return &fieldWrite{v: v, data: data}, nil
}

func (v *docFile) rel() string {
	return filepath.Join(".arrayfs/views", v.dir.rel, v.dir.name, v.name)
}

// fieldWrite is a document's text or tags.json open for writing: the
// new value is kept until Commit re-encodes the document with it.
type fieldWrite struct {
	v    *docFile
	data []byte
}

func (w *fieldWrite) Size() int64 { return int64(len(w.data)) }

func (w *fieldWrite) View(off int64, n int) (engine.View, error) {
	return engine.BytesContent(w.data).View(off, n)
}

func (w *fieldWrite) Release() {}

func (w *fieldWrite) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > 1<<30 {
		return 0, engine.Refuse(w.v.rel(), "write", syscall.EFBIG, "refused: a field of a document stays under 1 GiB")
	}
	if end := off + int64(len(p)); end > int64(len(w.data)) {
		w.data = append(w.data, make([]byte, end-int64(len(w.data)))...)
	}
	copy(w.data[off:], p)
	return len(p), nil
}

func (w *fieldWrite) Truncate(size int64) error {
	if size < 0 || size > 1<<30 {
		return engine.Refuse(w.v.rel(), "truncate", syscall.EFBIG, "refused: a field of a document stays under 1 GiB")
	}
	if size <= int64(len(w.data)) {
		w.data = w.data[:size]
	} else {
		w.data = append(w.data, make([]byte, size-int64(len(w.data)))...)
	}
	return nil
}

// Commit re-encodes the document with the new field, as it is now (a
// change made meanwhile by another writer is kept), and commits it.
// Text that is not UTF-8, or tags that are not a JSON object, are
// refused with EINVAL and change nothing.
func (w *fieldWrite) Commit() error {
	var drop []protowire.Number
	var num protowire.Number
	var val []byte
	switch w.v.name {
	case "text":
		if !validText(w.data) {
			return engine.Refuse(w.v.rel(), "close", syscall.EINVAL, "refused: the text is not UTF-8; the document is unchanged")
		}
		// text, buffer and blob are one oneof: the text replaces them.
		drop, num, val = []protowire.Number{3, 12, 13}, 13, w.data
	case "tags.json":
		dec := json.NewDecoder(bytes.NewReader(w.data))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
			why := "not one JSON object"
			if err != nil {
				why = err.Error()
			}
			return engine.Refuse(w.v.rel(), "close", syscall.EINVAL, "refused: tags.json: %s; the document is unchanged", why)
		}
		drop, num, val = []protowire.Number{11}, 11, encodeStruct(obj)
	}
	dir := w.v.dir
	s, err := dir.d.StoreErr(dir.rel)
	if s == nil {
		if err == nil {
			err = syscall.ENOENT
		}
		return err
	}
	r, e, err := s.Open(dir.name)
	if err != nil {
		return err
	}
	doc, err := r.Bytes()
	r.Release()
	if err != nil {
		return err
	}
	if w.v.name == "text" && len(w.data) == 0 {
		num = 0 // no text: no field
	}
	next := replaceFields(doc, drop, num, val)
	if err := s.Commit(e.Name, e.Ino, next); err != nil {
		return err
	}
	s.SyncSoon()
	return nil
}

func (w *fieldWrite) Sync() error {
	s, err := w.v.dir.d.StoreErr(w.v.dir.rel)
	if s == nil {
		return err
	}
	return s.Sync()
}

func (w *fieldWrite) Target() string { return filepath.Join(w.v.dir.rel, w.v.dir.name) }

// Xattrs are the derived attributes of document name: its full id (the
// file name may be a truncation of it) and its mime type.
func (s *Store) Xattrs(name string) ([]engine.Xattr, error) {
	r, _, err := s.Open(name)
	if err != nil {
		return nil, err
	}
	b, err := r.Bytes()
	r.Release()
	if err != nil {
		return nil, err
	}
	f, err := parseDoc(b)
	if err != nil {
		return nil, nil // not a DocumentProto: nothing to derive
	}
	var out []engine.Xattr
	if f.id != "" {
		out = append(out, engine.Xattr{Name: engine.XattrPrefix + "id", Value: f.id})
	}
	if f.mimeType != "" {
		out = append(out, engine.Xattr{Name: engine.XattrPrefix + "mime_type", Value: f.mimeType})
	}
	return out, nil
}
