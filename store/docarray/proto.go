package docarray

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Validation of document bytes as a DocumentProto (docarray's proto3
// schema, the fields listed in the format spec). A document written
// through the mount must be one, or docarray could not read the store.
//
// The check is structural: every tag and length is well formed and in
// bounds, the known fields have the wire types the schema gives them,
// strings are UTF-8 (proto3 parsers reject others), and known nested
// messages are checked the same way. Unknown fields are allowed (a newer
// docarray may write them) as long as they are well formed.

// fieldKind is what the schema says a field holds.
type fieldKind int

const (
	kString fieldKind = iota
	kBytes
	kVarint    // uint32, bool, enum
	kFloat     // fixed32
	kDouble    // fixed64
	kPackedF32 // repeated float: packed (bytes) or one fixed32 per element
	kPackedVar // repeated uint32: packed (bytes) or one varint per element
	kMessage
)

type protoField struct {
	kind fieldKind
	msg  *protoSchema // for kMessage
}

type protoSchema struct {
	name   string
	fields map[protowire.Number]protoField
}

var (
	docSchema         = &protoSchema{name: "DocumentProto"}
	ndArraySchema     = &protoSchema{name: "NdArrayProto"}
	denseSchema       = &protoSchema{name: "DenseNdArrayProto"}
	sparseSchema      = &protoSchema{name: "SparseNdArrayProto"}
	namedScoreSchema  = &protoSchema{name: "NamedScoreProto"}
	structSchema      = &protoSchema{name: "google.protobuf.Struct"}
	valueSchema       = &protoSchema{name: "google.protobuf.Value"}
	listValueSchema   = &protoSchema{name: "google.protobuf.ListValue"}
	structEntrySchema = &protoSchema{name: "Struct.FieldsEntry"}
	scoreEntrySchema  = &protoSchema{name: "DocumentProto.ScoresEntry"}
)

func msg(s *protoSchema) protoField { return protoField{kind: kMessage, msg: s} }

func init() {
	str, byt, vr, f32, f64 := protoField{kind: kString}, protoField{kind: kBytes}, protoField{kind: kVarint}, protoField{kind: kFloat}, protoField{kind: kDouble}
	docSchema.fields = map[protowire.Number]protoField{
		1: str, 3: byt, 4: msg(docSchema), 5: f32, 8: msg(docSchema), 9: str, 10: str,
		11: msg(structSchema), 12: msg(ndArraySchema), 13: str, 14: vr, 16: str,
		17: {kind: kPackedF32}, 18: f32, 19: msg(ndArraySchema), 21: str, 22: vr,
		28: msg(scoreEntrySchema), 29: msg(scoreEntrySchema),
	}
	ndArraySchema.fields = map[protowire.Number]protoField{
		1: msg(denseSchema), 2: msg(sparseSchema), 3: str, 4: msg(structSchema),
	}
	denseSchema.fields = map[protowire.Number]protoField{1: byt, 2: {kind: kPackedVar}, 3: str}
	sparseSchema.fields = map[protowire.Number]protoField{1: msg(denseSchema), 2: msg(denseSchema), 3: {kind: kPackedVar}}
	namedScoreSchema.fields = map[protowire.Number]protoField{1: f32, 2: str, 3: str, 4: msg(namedScoreSchema), 5: str}
	scoreEntrySchema.fields = map[protowire.Number]protoField{1: str, 2: msg(namedScoreSchema)}
	structSchema.fields = map[protowire.Number]protoField{1: msg(structEntrySchema)}
	structEntrySchema.fields = map[protowire.Number]protoField{1: str, 2: msg(valueSchema)}
	valueSchema.fields = map[protowire.Number]protoField{1: vr, 2: f64, 3: str, 4: vr, 5: msg(structSchema), 6: msg(listValueSchema)}
	listValueSchema.fields = map[protowire.Number]protoField{1: msg(valueSchema)}
}

// maxProtoDepth bounds nesting (chunks of chunks...), as protobuf
// parsers do, so that a crafted document cannot exhaust the stack.
const maxProtoDepth = 100

// ValidateDocument checks that b is a well-formed DocumentProto and says
// what is wrong if not.
func ValidateDocument(b []byte) error {
	return validateMessage(b, docSchema, 0)
}

// protoError is a validation failure with the path of fields down to it,
// built as the error returns (validation of a good document allocates
// nothing).
type protoError struct {
	path   []string // innermost last once reversed
	reason string
}

func (e *protoError) Error() string {
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		b.WriteString(e.path[i])
		if i > 0 {
			b.WriteString(" > ")
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.reason)
	return b.String()
}

func protoErrorf(format string, args ...any) *protoError {
	return &protoError{reason: fmt.Sprintf(format, args...)}
}

func validateMessage(b []byte, s *protoSchema, depth int) error {
	if depth > maxProtoDepth {
		return protoErrorf("nested more than %d levels deep", maxProtoDepth)
	}
	off := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protoErrorf("bad tag at byte %d of %s: %v", off, s.name, protowire.ParseError(n))
		}
		vlen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vlen < 0 {
			return protoErrorf("field %d (wire type %d) at byte %d of %s: %v", num, typ, off, s.name, protowire.ParseError(vlen))
		}
		if f, known := s.fields[num]; known {
			if err := checkField(f, typ, b[n:n+vlen], depth); err != nil {
				err.path = append(err.path, fmt.Sprintf("%s.%d", s.name, num))
				return err
			}
		}
		b = b[n+vlen:]
		off += n + vlen
	}
	return nil
}

var wireTypeOf = [...]protowire.Type{
	kString: protowire.BytesType, kBytes: protowire.BytesType, kMessage: protowire.BytesType,
	kVarint: protowire.VarintType, kFloat: protowire.Fixed32Type, kDouble: protowire.Fixed64Type,
	kPackedF32: protowire.BytesType, kPackedVar: protowire.BytesType,
}

func checkField(f protoField, typ protowire.Type, v []byte, depth int) *protoError {
	// Repeated scalars may also come unpacked, one element per field.
	switch {
	case f.kind == kPackedF32 && typ == protowire.Fixed32Type,
		f.kind == kPackedVar && typ == protowire.VarintType:
		return nil
	}
	if want := wireTypeOf[f.kind]; typ != want {
		return protoErrorf("wire type %d, the schema says %d", typ, want)
	}
	if typ != protowire.BytesType {
		return nil
	}
	payload, _ := protowire.ConsumeBytes(v)
	switch f.kind {
	case kString:
		if !utf8.Valid(payload) {
			return protoErrorf("string is not UTF-8")
		}
	case kMessage:
		if err := validateMessage(payload, f.msg, depth+1); err != nil {
			return err.(*protoError)
		}
	case kPackedF32:
		if len(payload)%4 != 0 {
			return protoErrorf("packed floats of %d bytes (not a multiple of 4)", len(payload))
		}
	case kPackedVar:
		for len(payload) > 0 {
			_, n := protowire.ConsumeVarint(payload)
			if n < 0 {
				return protoErrorf("packed varints: %v", protowire.ParseError(n))
			}
			payload = payload[n:]
		}
	}
	return nil
}

// DocumentID returns field 1 (id) of a DocumentProto, if it has one.
func DocumentID(b []byte) (string, bool) {
	var id string
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return id, found
		}
		vlen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vlen < 0 {
			return id, found
		}
		if num == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n : n+vlen])
			id, found = string(v), true // the last one wins, as in protobuf
		}
		b = b[n+vlen:]
	}
	return id, found
}
