package docarray

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Files of a whole store, in store order: ids.txt, docs.jsonl,
// texts.jsonl, embeddings.npy and info.json. A store may hold millions
// of documents, so none of them is held: each is generated on the fly
// from the documents (engine.LineIndex), sized once per version of the
// store, with the slot of every engine.LineStep-th document kept to
// start a read near where it is wanted.

// A StoreVersion changes whenever any document of the store may have:
// the mount changed one, or another program's change was reloaded.
type StoreVersion struct{ changes, reloads, gen uint64 }

// Version is the store's version now.
func (s *Store) Version() StoreVersion {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.versionLocked()
}

func (s *Store) versionLocked() StoreVersion { return StoreVersion{s.changes, s.reloads, s.gen} }

// wholeViews are the whole-store views of one version of a store.
type wholeViews struct {
	s   *Store
	ver StoreVersion
	n   int64   // live documents
	ck  []int32 // slot of live document k*LineStep

	mu    sync.Mutex
	texts map[string]*engine.LineIndex // by file name, sized on demand
	emb   *embeddings
}

// embeddings is what embeddings.npy is made of, or why there is none.
type embeddings struct {
	dtype    string
	shape    []int64 // of one document's
	rowBytes int64
	why      string
}

// wholeCache keeps the whole-store views of each store, newest version.
type wholeCache struct {
	mu sync.Mutex
	m  map[string]*wholeViews // by store directory
}

// whole returns the whole-store views of s as it is now.
func (d *Stores) whole(s *Store) (*wholeViews, error) {
	ver := s.Version()
	rel := s.Rel()
	d.wholes.mu.Lock()
	w := d.wholes.m[rel]
	d.wholes.mu.Unlock()
	if w != nil && w.s == s && w.ver == ver {
		return w, nil
	}
	w = &wholeViews{s: s, ver: ver, texts: map[string]*engine.LineIndex{}}
	s.mu.RLock()
	for i := range s.slots {
		if s.slots[i].flags&fLive == 0 {
			continue
		}
		if w.n%engine.LineStep == 0 {
			w.ck = append(w.ck, int32(i))
		}
		w.n++
	}
	s.mu.RUnlock()
	d.wholes.mu.Lock()
	if d.wholes.m == nil {
		d.wholes.m = map[string]*wholeViews{}
	}
	d.wholes.m[rel] = w
	d.wholes.mu.Unlock()
	return w, nil
}

// eachDoc calls fn with every live document from number from on, in
// store order, until fn returns false; doc is valid during the call
// only. Documents are taken in batches: their bytes pinned (no copy)
// while the store is read-locked, then handed to fn unlocked.
func (w *wholeViews) eachDoc(from int64, fn func(k int64, key string, doc []byte) bool) error {
	return w.scanDocs(from, true, fn)
}

// eachDocBytes is eachDoc without the keys (embeddings.npy needs none,
// and decoding a key is most of the cost of a document).
func (w *wholeViews) eachDocBytes(from int64, fn func(k int64, doc []byte) bool) error {
	return w.scanDocs(from, false, func(k int64, _ string, doc []byte) bool { return fn(k, doc) })
}

func (w *wholeViews) scanDocs(from int64, keys bool, fn func(k int64, key string, doc []byte) bool) error {
	if from >= w.n {
		return nil
	}
	s := w.s
	slot := int(w.ck[from/engine.LineStep])
	k := from / engine.LineStep * engine.LineStep
	const batch = 256
	type doc struct {
		key  string
		r    *Reader
		view engine.View
	}
	docs := make([]doc, 0, batch)
	// Up to document from: live slots counted, nothing read.
	s.mu.RLock()
	for ; slot < len(s.slots) && k < from; slot++ {
		if s.slots[slot].flags&fLive != 0 {
			k++
		}
	}
	s.mu.RUnlock()
	for k < w.n {
		docs = docs[:0]
		s.mu.RLock()
		for ; slot < len(s.slots) && len(docs) < batch; slot++ {
			if s.slots[slot].flags&fLive == 0 {
				continue
			}
			r := s.readerLocked(int32(slot))
			d := doc{r: r, view: r.View(0, int(r.Size()))}
			if keys {
				d.key = s.keyOf(int32(slot))
			}
			docs = append(docs, d)
		}
		s.mu.RUnlock()
		if len(docs) == 0 {
			return nil // the store shrank since w was made
		}
		stop := false
		for _, d := range docs {
			if !stop && !fn(k, d.key, d.view.Bytes) {
				stop = true
			}
			d.view.Release()
			d.r.Release()
			k++
		}
		if stop {
			return nil
		}
	}
	return nil
}

// line makes the line of one document of a text file.
type lineFunc func(key string, f *docFields, buf []byte) []byte

var lineFuncs = map[string]lineFunc{
	"ids.txt": func(key string, f *docFields, buf []byte) []byte {
		id := f.id
		if id == "" {
			id = key
		}
		return append(append(buf, id...), '\n')
	},
	"docs.jsonl": func(key string, f *docFields, buf []byte) []byte {
		j := f.docJSON()
		j["key"], j["name"] = key, NameOfKey(key)
		return appendJSONLine(buf, j)
	},
	"texts.jsonl": func(key string, f *docFields, buf []byte) []byte {
		var text any
		if f.hasText {
			text = f.text
		}
		return appendJSONLine(buf, map[string]any{"id": f.id, "key": key, "text": text})
	},
}

func appendJSONLine(buf []byte, v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return append(buf, "{}\n"...)
	}
	return append(buf, b.Bytes()...) // Encode ends it with a newline
}

// gen is the LineGen of text file name: one line per document.
func (w *wholeViews) gen(name string) engine.LineGen {
	var buf []byte
	if name == "embeddings.npy" {
		return func(from int64, fn func(k int64, line []byte) bool) error {
			return w.eachDocBytes(from, func(k int64, doc []byte) bool {
				return fn(k, embeddingBuffer(doc))
			})
		}
	}
	line := lineFuncs[name]
	return func(from int64, fn func(k int64, line []byte) bool) error {
		return w.eachDoc(from, func(k int64, key string, doc []byte) bool {
			f, err := decodeDoc(doc)
			if err != nil {
				f = &docFields{}
			}
			buf = line(key, f, buf[:0])
			return fn(k, buf)
		})
	}
}

// embeddingsOf finds whether every document has a dense embedding of one
// dtype and shape (one pass, once per version).
func (w *wholeViews) embeddingsOf() *embeddings {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.emb != nil {
		return w.emb
	}
	e := &embeddings{}
	if w.n == 0 {
		e.why = "the store holds no documents"
	}
	w.eachDoc(0, func(k int64, key string, doc []byte) bool {
		f, err := parseDoc(doc)
		if err != nil {
			e.why = fmt.Sprintf("document %s is not a DocumentProto", NameOfKey(key))
			return false
		}
		if !f.hasEmbedding {
			e.why = fmt.Sprintf("document %s has no embedding", NameOfKey(key))
			return false
		}
		a, why := parseNdArray(f.embedding)
		if why != "" {
			e.why = fmt.Sprintf("the embedding of document %s: %s", NameOfKey(key), why)
			return false
		}
		if k == 0 {
			e.dtype, e.shape, e.rowBytes = a.dtype, a.shape, int64(len(a.buffer))
			return true
		}
		if a.dtype != e.dtype || !slices.Equal(a.shape, e.shape) {
			e.why = fmt.Sprintf("document %s's embedding is %s %v, the first one's %s %v", NameOfKey(key), a.dtype, a.shape, e.dtype, e.shape)
			return false
		}
		return true
	})
	w.emb = e
	return e
}

func (w *wholeViews) embeddingsOK() bool { return w.embeddingsOf().why == "" }

// index sizes text file name of this version.
func (w *wholeViews) index(name string) (*engine.LineIndex, error) {
	var head []byte
	if name == "embeddings.npy" {
		e := w.embeddingsOf()
		if e.why != "" {
			return nil, syscall.ENOENT
		}
		head = engine.NpyHeader(e.dtype, false, append([]int64{w.n}, e.shape...))
	}
	w.mu.Lock()
	ix := w.texts[name]
	w.mu.Unlock()
	if ix != nil {
		return ix, nil
	}
	var err error
	if name == "embeddings.npy" {
		// Rows of one size: where each starts is arithmetic.
		ix = engine.FixedLines(head, w.n, w.emb.rowBytes)
	} else {
		ix, err = engine.IndexLines(head, w.gen(name))
	}
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.texts[name] = ix
	w.mu.Unlock()
	return ix, nil
}

// info is info.json of the store.
func (w *wholeViews) info(rel string) []byte {
	info := map[string]any{"documents": w.n, "key_length": w.s.k, "path": rel}
	if e := w.embeddingsOf(); e.why == "" {
		info["embeddings"] = map[string]any{"dtype": e.dtype, "shape": append([]int64{w.n}, e.shape...)}
	} else {
		info["embeddings"] = nil
		info["embeddings_absent"] = e.why
	}
	return engine.JSON(info)
}

// wholeFile is one whole-store file.
type wholeFile struct {
	engine.ViewFileBase
	d    *Stores
	rel  string
	name string
}

func (v *wholeFile) views() (*wholeViews, error) {
	s, err := v.d.StoreErr(v.rel)
	if s == nil {
		if err == nil {
			err = syscall.ENOENT
		}
		return nil, err
	}
	return v.d.whole(s)
}

func (v *wholeFile) Stat() (engine.ViewStat, error) {
	w, err := v.views()
	if err != nil {
		return engine.ViewStat{}, err
	}
	st := engine.ViewStat{Mtime: w.s.base.Mtime}
	if v.name == "info.json" {
		st.Size = int64(len(w.info(v.rel)))
		return st, nil
	}
	ix, err := w.index(v.name)
	if err != nil {
		return st, err
	}
	st.Size = ix.Size()
	return st, nil
}

func (v *wholeFile) Open(write bool) (engine.Content, error) {
	if write {
		return nil, engine.ErrReadOnlyView(v.rel + "/" + v.name)
	}
	w, err := v.views()
	if err != nil {
		return nil, err
	}
	if v.name == "info.json" {
		return engine.BytesContent(w.info(v.rel)), nil
	}
	ix, err := w.index(v.name)
	if err != nil {
		return nil, err
	}
	return engine.NewLineContent(ix, func() engine.LineGen { return w.gen(v.name) }, nil), nil
}
