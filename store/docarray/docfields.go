package docarray

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Decoding a DocumentProto into the fields its views show (the schema is
// in proto.go and ../shared/formats/docarray-memmap.md). Scalars follow
// proto3: the last occurrence wins; repeated fields accumulate.

// docFields are the fields of one document.
type docFields struct {
	id, uri, mimeType, parentID, modality string
	text                                  string
	hasText, hasBuffer                    bool
	buffer                                []byte
	weight, offset                        float32
	granularity, adjacency                uint64
	location                              []float32
	tags                                  []byte // a google.protobuf.Struct
	hasTags                               bool
	blob, embedding                       []byte // NdArrayProto
	hasBlob, hasEmbedding                 bool
	chunks, matches                       [][]byte
	scores, evaluations                   [][]byte // map entries
	content                               string   // the oneof set last: text, buffer, blob
}

// parseDoc decodes b, which must be a valid DocumentProto.
func parseDoc(b []byte) (*docFields, error) {
	if err := ValidateDocument(b); err != nil {
		return nil, err
	}
	return decodeDoc(b)
}

// decodeDoc decodes b without validating it first (the whole-store
// views, over every document of a store, which the store checked when it
// took them): a malformed field ends the decoding with an error.
func decodeDoc(b []byte) (*docFields, error) {
	d := &docFields{}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		str := func() string { s, _ := protowire.ConsumeBytes(v); return string(s) }
		byt := func() []byte { s, _ := protowire.ConsumeBytes(v); return s }
		f32 := func() float32 { x, _ := protowire.ConsumeFixed32(v); return math.Float32frombits(x) }
		vr := func() uint64 { x, _ := protowire.ConsumeVarint(v); return x }
		switch num {
		case 1:
			d.id = str()
		case 3:
			d.buffer, d.hasBuffer, d.content = byt(), true, "buffer"
		case 4:
			d.chunks = append(d.chunks, byt())
		case 5:
			d.weight = f32()
		case 8:
			d.matches = append(d.matches, byt())
		case 9:
			d.uri = str()
		case 10:
			d.mimeType = str()
		case 11:
			d.tags, d.hasTags = byt(), true
		case 12:
			d.blob, d.hasBlob, d.content = byt(), true, "blob"
		case 13:
			d.text, d.hasText, d.content = str(), true, "text"
		case 14:
			d.granularity = vr()
		case 16:
			d.parentID = str()
		case 17:
			if typ == protowire.Fixed32Type {
				d.location = append(d.location, f32())
				break
			}
			p := byt()
			for len(p) >= 4 {
				d.location = append(d.location, math.Float32frombits(binary.LittleEndian.Uint32(p)))
				p = p[4:]
			}
		case 18:
			d.offset = f32()
		case 19:
			d.embedding, d.hasEmbedding = byt(), true
		case 21:
			d.modality = str()
		case 22:
			d.adjacency = vr()
		case 28:
			d.scores = append(d.scores, byt())
		case 29:
			d.evaluations = append(d.evaluations, byt())
		}
	})
	return d, err
}

// eachField calls fn with every field of message b: its number, wire
// type and value (with its length prefix, for bytes).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		vlen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vlen < 0 {
			return protowire.ParseError(vlen)
		}
		fn(num, typ, b[n:n+vlen])
		b = b[n+vlen:]
	}
	return nil
}

// ndArray is a DenseNdArrayProto: what a .npy of it needs.
type ndArray struct {
	buffer []byte
	shape  []int64
	dtype  string // numpy's dtype.str
}

// parseNdArray decodes an NdArrayProto. ok is false when it is not a
// dense array whose buffer is as long as its shape and dtype say (a
// sparse one, or an inconsistent one): it then has no .npy, and why
// says why.
func parseNdArray(b []byte) (a ndArray, why string) {
	var dense []byte
	var has bool
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch num {
		case 1:
			dense, _ = protowire.ConsumeBytes(v)
			has = true
		case 2:
			has = false
		}
	})
	if !has {
		return a, "not a dense array"
	}
	eachField(dense, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch num {
		case 1:
			a.buffer, _ = protowire.ConsumeBytes(v)
		case 2:
			if typ == protowire.VarintType {
				x, _ := protowire.ConsumeVarint(v)
				a.shape = append(a.shape, int64(x))
				break
			}
			p, _ := protowire.ConsumeBytes(v)
			for len(p) > 0 {
				x, n := protowire.ConsumeVarint(p)
				if n < 0 {
					break
				}
				a.shape = append(a.shape, int64(x))
				p = p[n:]
			}
		case 3:
			s, _ := protowire.ConsumeBytes(v)
			a.dtype = string(s)
		}
	})
	size, ok := dtypeItemSize(a.dtype)
	if !ok {
		return a, fmt.Sprintf("dtype %q is not one a .npy can hold", a.dtype)
	}
	n := size
	for _, d := range a.shape {
		n *= d
	}
	if n != int64(len(a.buffer)) {
		return a, fmt.Sprintf("its buffer is %d bytes, dtype %s and shape %v make %d", len(a.buffer), a.dtype, a.shape, n)
	}
	return a, ""
}

// dtypeItemSize is the item size numpy's dtype.str names ("<f4": 4,
// "<U3": 12); ok is false for one that is not a plain array type.
func dtypeItemSize(s string) (int64, bool) {
	if len(s) < 3 || (s[0] != '<' && s[0] != '>' && s[0] != '|' && s[0] != '=') {
		return 0, false
	}
	n, err := strconv.ParseInt(s[2:], 10, 32)
	if err != nil || n <= 0 {
		return 0, false
	}
	switch s[1] {
	case 'b', 'i', 'u', 'f', 'c', 'S', 'V', 'm', 'M':
		return n, true
	case 'U':
		return 4 * n, true
	}
	return 0, false
}

// structJSON decodes a google.protobuf.Struct into what encoding/json
// writes as the same object (numbers are doubles, as in the Struct).
func structJSON(b []byte) map[string]any {
	out := map[string]any{}
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != 1 {
			return
		}
		entry, _ := protowire.ConsumeBytes(v)
		var key string
		var val any
		eachField(entry, func(num protowire.Number, typ protowire.Type, v []byte) {
			switch num {
			case 1:
				s, _ := protowire.ConsumeBytes(v)
				key = string(s)
			case 2:
				s, _ := protowire.ConsumeBytes(v)
				val = valueJSON(s)
			}
		})
		out[key] = val
	})
	return out
}

// valueJSON decodes a google.protobuf.Value.
func valueJSON(b []byte) any {
	var val any
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch num {
		case 1:
			val = nil
		case 2:
			x, _ := protowire.ConsumeFixed64(v)
			val = jsonNumber(math.Float64frombits(x))
		case 3:
			s, _ := protowire.ConsumeBytes(v)
			val = string(s)
		case 4:
			x, _ := protowire.ConsumeVarint(v)
			val = x != 0
		case 5:
			s, _ := protowire.ConsumeBytes(v)
			val = structJSON(s)
		case 6:
			s, _ := protowire.ConsumeBytes(v)
			list := []any{}
			eachField(s, func(num protowire.Number, typ protowire.Type, v []byte) {
				if num == 1 {
					e, _ := protowire.ConsumeBytes(v)
					list = append(list, valueJSON(e))
				}
			})
			val = list
		}
	})
	return val
}

// jsonNumber keeps a double JSON can hold; NaN and infinities (which
// JSON cannot) become their names as strings.
func jsonNumber(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return f
}

// encodeStruct encodes a JSON object as a google.protobuf.Struct, keys
// sorted (protobuf leaves map order free).
func encodeStruct(obj map[string]any) []byte {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendBytes(e, encodeValue(obj[k]))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func encodeValue(v any) []byte {
	var b []byte
	switch x := v.(type) {
	case nil:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 0)
	case json.Number:
		f, _ := x.Float64()
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(f))
	case float64:
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(x))
	case string:
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, x)
	case bool:
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(x))
	case map[string]any:
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeStruct(x))
	case []any:
		var l []byte
		for _, e := range x {
			l = protowire.AppendTag(l, 1, protowire.BytesType)
			l = protowire.AppendBytes(l, encodeValue(e))
		}
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, l)
	}
	return b
}

// replaceFields re-encodes document b with every occurrence of the
// fields drop removed and, unless num is 0, field num, bytes value v,
// appended; every other field keeps its bytes.
func replaceFields(b []byte, drop []protowire.Number, num protowire.Number, v []byte) []byte {
	out := make([]byte, 0, len(b)+len(v)+8)
	for len(b) > 0 {
		n0, typ, n := protowire.ConsumeTag(b)
		vlen := protowire.ConsumeFieldValue(n0, typ, b[n:])
		if n < 0 || vlen < 0 {
			break // b was validated: not reached
		}
		keep := true
		for _, d := range drop {
			if n0 == d {
				keep = false
			}
		}
		if keep {
			out = append(out, b[:n+vlen]...)
		}
		b = b[n+vlen:]
	}
	if num == 0 {
		return out
	}
	out = protowire.AppendTag(out, num, protowire.BytesType)
	return protowire.AppendBytes(out, v)
}

// scoreNames are NamedScoreProto's string fields.
var scoreNames = map[protowire.Number]string{2: "op_name", 3: "description", 5: "ref_id"}

// score is a NamedScoreProto as JSON.
func scoreJSON(b []byte) map[string]any {
	out := map[string]any{}
	var operands []any
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch num {
		case 1:
			x, _ := protowire.ConsumeFixed32(v)
			out["value"] = jsonNumber(float64(math.Float32frombits(x)))
		case 2, 3, 5:
			s, _ := protowire.ConsumeBytes(v)
			out[scoreNames[num]] = string(s)
		case 4:
			s, _ := protowire.ConsumeBytes(v)
			operands = append(operands, scoreJSON(s))
		}
	})
	if operands != nil {
		out["operands"] = operands
	}
	return out
}

// scoresJSON decodes map<string, NamedScoreProto> entries.
func scoresJSON(entries [][]byte) map[string]any {
	out := map[string]any{}
	for _, e := range entries {
		var key string
		var val map[string]any
		eachField(e, func(num protowire.Number, typ protowire.Type, v []byte) {
			s, _ := protowire.ConsumeBytes(v)
			switch num {
			case 1:
				key = string(s)
			case 2:
				val = scoreJSON(s)
			}
		})
		out[key] = val
	}
	return out
}

// docJSON is doc.json of a document.
func (d *docFields) docJSON() map[string]any {
	nd := func(has bool, b []byte) (any, any) {
		if !has {
			return nil, nil
		}
		a, why := parseNdArray(b)
		if why != "" && a.dtype == "" {
			return nil, nil
		}
		return a.shape, a.dtype
	}
	bs, bd := nd(d.hasBlob, d.blob)
	es, ed := nd(d.hasEmbedding, d.embedding)
	out := map[string]any{
		"id": d.id, "mime_type": d.mimeType, "uri": d.uri, "weight": jsonNumber(float64(d.weight)),
		"modality": d.modality, "granularity": d.granularity, "adjacency": d.adjacency, "parent_id": d.parentID,
		"offset": jsonNumber(float64(d.offset)), "location": d.location,
		"blob_shape": bs, "blob_dtype": bd, "embedding_shape": es, "embedding_dtype": ed,
		"tags": nil, "scores": scoresJSON(d.scores), "evaluations": scoresJSON(d.evaluations),
		"n_chunks": len(d.chunks), "n_matches": len(d.matches), "content": nil,
	}
	if d.location == nil {
		out["location"] = []float32{}
	}
	if d.hasTags {
		out["tags"] = structJSON(d.tags)
	}
	if d.content != "" {
		out["content"] = d.content
	}
	if d.hasBuffer {
		out["buffer_len"] = len(d.buffer)
	}
	return out
}

// validText: a document's text must be UTF-8 (proto3 strings are).
func validText(b []byte) bool { return utf8.Valid(b) }

// embeddingBuffer is the raw bytes of the dense embedding of document b,
// found without decoding the rest of it.
func embeddingBuffer(b []byte) []byte {
	var emb, dense, buf []byte
	eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == 19 && typ == protowire.BytesType {
			emb, _ = protowire.ConsumeBytes(v)
		}
	})
	eachField(emb, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == 1 && typ == protowire.BytesType {
			dense, _ = protowire.ConsumeBytes(v)
		}
	})
	eachField(dense, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == 1 && typ == protowire.BytesType {
			buf, _ = protowire.ConsumeBytes(v)
		}
	})
	return buf
}
