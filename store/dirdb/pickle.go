package dirdb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// validatePickle checks that r (size bytes) holds one pickle that
// Python's unpickler reads without error, as far as that can be told
// without importing the classes it names: every opcode known (protocols
// 0 to 5), every argument whole and well formed, the stack and the marks
// never underflowing, every memo entry fetched set before, and the STOP
// opcode last. It does not build the objects: a
// pickle of gigabytes costs a pass over its bytes and a set of memo
// indices.
//
// A torn write (dirdb writes entries in place) mostly fails this at its
// end; a file that merely ends in '.' (the old check) does not pass it.
func validatePickle(r io.Reader, size int64) error {
	p := &pickleScanner{r: bufio.NewReaderSize(r, 64<<10), size: size, memo: map[uint64]struct{}{}}
	return p.run()
}

// pickleStackLimit bounds the simulated stack (Python has no such limit;
// a real pickle never comes near).
const pickleStackLimit = 1 << 40

type pickleScanner struct {
	r     *bufio.Reader
	off   int64 // bytes consumed
	size  int64
	depth int64 // objects on the stack since the last mark
	marks []int64
	memo  map[uint64]struct{}
	opOff int64
	op    byte
}

var errPickleEOF = errors.New("ends in the middle (a write was interrupted?)")

func (p *pickleScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("not a valid pickle: %s at byte %d: %s", opcodeName(p.op), p.opOff, fmt.Sprintf(format, args...))
}

// pickleOpNames are pickletools' names of the opcodes.
var pickleOpNames = map[byte]string{
	'(': "MARK", '.': "STOP", '0': "POP", '1': "POP_MARK", '2': "DUP", 'F': "FLOAT", 'I': "INT",
	'J': "BININT", 'K': "BININT1", 'L': "LONG", 'M': "BININT2", 'N': "NONE", 'P': "PERSID",
	'Q': "BINPERSID", 'R': "REDUCE", 'S': "STRING", 'T': "BINSTRING", 'U': "SHORT_BINSTRING",
	'V': "UNICODE", 'X': "BINUNICODE", 'a': "APPEND", 'b': "BUILD", 'c': "GLOBAL", 'd': "DICT",
	'}': "EMPTY_DICT", 'e': "APPENDS", 'g': "GET", 'h': "BINGET", 'i': "INST", 'j': "LONG_BINGET",
	'l': "LIST", ']': "EMPTY_LIST", 'o': "OBJ", 'p': "PUT", 'q': "BINPUT", 'r': "LONG_BINPUT",
	's': "SETITEM", 't': "TUPLE", ')': "EMPTY_TUPLE", 'u': "SETITEMS", 'G': "BINFLOAT",
	0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1",
	0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8a: "LONG1", 0x8b: "LONG4",
	'B': "BINBYTES", 'C': "SHORT_BINBYTES", 0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8",
	0x8e: "BINBYTES8", 0x8f: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
	0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
	0x98: "READONLY_BUFFER",
}

func opcodeName(op byte) string {
	if n, ok := pickleOpNames[op]; ok {
		return "opcode " + n
	}
	return fmt.Sprintf("byte 0x%02x (no opcode)", op)
}

// take checks that n more bytes are there. (Frames are only a hint to
// the reader: CPython's unpickler reads across their ends.)
func (p *pickleScanner) take(n int64) error {
	if n > p.size-p.off {
		return errPickleEOF
	}
	return nil
}

func (p *pickleScanner) read(n int) ([]byte, error) {
	if err := p.take(int64(n)); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, errPickleEOF
	}
	p.off += int64(n)
	return b, nil
}

func (p *pickleScanner) uint(n int) (uint64, error) {
	b, err := p.read(n)
	return leUint(b), err
}

// leUint decodes a pickle's little-endian unsigned argument.
func leUint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// line reads a protocol 0 argument: up to and without the newline.
func (p *pickleScanner) line() (string, error) {
	var b []byte
	for {
		c, err := p.r.ReadByte()
		if err != nil || p.off >= p.size {
			return "", errPickleEOF
		}
		p.off++
		if c == '\n' {
			return string(b), nil
		}
		if len(b) > 1<<20 {
			return "", p.errorf("a text argument longer than 1 MiB")
		}
		b = append(b, c)
	}
}

// skip consumes a counted argument of n bytes; text ones (utf8) must be
// UTF-8 as Python decodes it (surrogates allowed).
func (p *pickleScanner) skip(n uint64, utf8Text bool) error {
	if n > uint64(p.size) {
		return errPickleEOF
	}
	if err := p.take(int64(n)); err != nil {
		return err
	}
	var tail []byte // an incomplete rune carried between chunks
	for left := int64(n); left > 0; {
		chunk := min(left, 64<<10)
		b := make([]byte, chunk)
		if _, err := io.ReadFull(p.r, b); err != nil {
			return errPickleEOF
		}
		p.off += chunk
		left -= chunk
		if utf8Text {
			var err error
			if tail, err = p.checkUTF8(append(tail, b...), left == 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUTF8 validates b and returns what may be the start of a rune
// that continues in the next chunk.
func (p *pickleScanner) checkUTF8(b []byte, last bool) ([]byte, error) {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			if !last && len(b) < utf8.UTFMax && !utf8.FullRune(b) {
				return b, nil
			}
			// Python's surrogatepass: an encoded surrogate is allowed.
			if len(b) >= 3 && b[0] == 0xED && b[1]&0xE0 == 0xA0 && b[2]&0xC0 == 0x80 {
				b = b[3:]
				continue
			}
			return nil, p.errorf("a string that is not UTF-8")
		}
		b = b[n:]
	}
	return nil, nil
}

func (p *pickleScanner) push(n int64) error {
	p.depth += n
	if p.depth > pickleStackLimit {
		return p.errorf("the stack grows without bound")
	}
	return nil
}

// need checks that n objects are on the stack above the last mark.
func (p *pickleScanner) need(n int64) error {
	if p.depth < n {
		return p.errorf("needs %d objects on the stack, finds %d", n, p.depth)
	}
	return nil
}

// popMark drops the objects above the last mark and the mark, and
// returns how many objects there were.
func (p *pickleScanner) popMark() (int64, error) {
	if len(p.marks) == 0 {
		return 0, p.errorf("no MARK before it")
	}
	n := p.depth
	p.depth = p.marks[len(p.marks)-1]
	p.marks = p.marks[:len(p.marks)-1]
	return n, nil
}

// popMarkPairs is popMark of keys and values, which come in pairs.
func (p *pickleScanner) popMarkPairs() error {
	n, err := p.popMark()
	if err == nil && n%2 != 0 {
		err = p.errorf("an odd number of keys and values")
	}
	return err
}

func (p *pickleScanner) run() error {
	for {
		p.opOff = p.off
		if p.off >= p.size {
			if p.off == 0 {
				return errors.New("empty: not a pickle (a write was interrupted?)")
			}
			return fmt.Errorf("not a valid pickle: %v: no STOP opcode after byte %d", errPickleEOF, p.off)
		}
		b, err := p.read(1)
		if err != nil {
			return err
		}
		p.op = b[0]
		done, err := p.step()
		if errors.Is(err, errPickleEOF) {
			return fmt.Errorf("not a valid pickle: %v: the argument of %s at byte %d runs past the end of the file", errPickleEOF, opcodeName(p.op), p.opOff)
		}
		if err != nil {
			return err
		}
		if done {
			if p.off != p.size {
				return fmt.Errorf("%d bytes after the end of the pickle (STOP at byte %d): not what dirdb writes", p.size-p.off, p.opOff)
			}
			return nil
		}
	}
}

// step checks one opcode and its argument; done at STOP.
func (p *pickleScanner) step() (done bool, err error) {
	switch op := p.op; op {
	// Objects pushed, argument of fixed size.
	case 'N', ']', ')', '}', 0x88, 0x89, 0x8f: // NONE, EMPTY_*, NEWTRUE/FALSE
		return false, p.push(1)
	case 'K', 'C', 'U', 0x82, 0x8a, 0x8c: // 1-byte argument or length
		n, err := p.uint(1)
		if err != nil {
			return false, err
		}
		switch op {
		case 'C', 'U', 0x8a: // SHORT_BINBYTES, SHORT_BINSTRING, LONG1
			err = p.skip(n, false)
		case 0x8c: // SHORT_BINUNICODE
			err = p.skip(n, true)
		}
		if err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'M', 0x83: // BININT2, EXT2
		if _, err := p.uint(2); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'J', 0x84: // BININT, EXT4
		if _, err := p.uint(4); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'G': // BINFLOAT
		if _, err := p.uint(8); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'T', 'X', 'B', 0x8b: // BINSTRING, BINUNICODE, BINBYTES, LONG4: 4-byte length
		n, err := p.uint(4)
		if err != nil {
			return false, err
		}
		if (op == 'T' || op == 0x8b) && int32(n) < 0 {
			return false, p.errorf("a negative length")
		}
		if err := p.skip(n, op == 'X'); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 0x8d, 0x8e, 0x96: // BINUNICODE8, BINBYTES8, BYTEARRAY8
		n, err := p.uint(8)
		if err != nil {
			return false, err
		}
		if err := p.skip(n, op == 0x8d); err != nil {
			return false, err
		}
		return false, p.push(1)

	// Protocol 0 text arguments.
	case 'I', 'L':
		s, err := p.line()
		if err != nil {
			return false, err
		}
		if op == 'L' {
			s = trimSuffixByte(s, 'L')
		}
		if !isPyInt(s) {
			return false, p.errorf("%q is not an integer", s)
		}
		return false, p.push(1)
	case 'F':
		s, err := p.line()
		if err != nil {
			return false, err
		}
		if _, err := strconv.ParseFloat(string(bytes.TrimSpace([]byte(s))), 64); err != nil && !errors.Is(err, strconv.ErrRange) {
			return false, p.errorf("%q is not a float", s)
		}
		return false, p.push(1)
	case 'S':
		s, err := p.line()
		if err != nil {
			return false, err
		}
		if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
			return false, p.errorf("the STRING argument is not quoted")
		}
		return false, p.push(1)
	case 'V':
		if _, err := p.line(); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'c', 'i': // GLOBAL, INST: module and name lines
		for range 2 {
			s, err := p.line()
			if err != nil {
				return false, err
			}
			if s == "" {
				return false, p.errorf("an empty module or class name")
			}
		}
		if op == 'i' {
			if _, err := p.popMark(); err != nil {
				return false, err
			}
		}
		return false, p.push(1)

	// The memo.
	case 'p', 'q', 'r', 0x94: // PUT, BINPUT, LONG_BINPUT, MEMOIZE
		var idx uint64
		switch op {
		case 'p':
			s, err := p.line()
			if err != nil {
				return false, err
			}
			var ok bool
			if idx, ok = parseMemoIndex(s); !ok {
				return false, p.errorf("%q is not a memo index", s)
			}
		case 'q':
			idx, err = p.uint(1)
		case 'r':
			idx, err = p.uint(4)
		default:
			idx = uint64(len(p.memo))
		}
		if err != nil {
			return false, err
		}
		if err := p.need(1); err != nil {
			return false, err
		}
		p.memo[idx] = struct{}{}
		return false, nil
	case 'g', 'h', 'j': // GET, BINGET, LONG_BINGET
		var idx uint64
		switch op {
		case 'g':
			s, err := p.line()
			if err != nil {
				return false, err
			}
			var ok bool
			if idx, ok = parseMemoIndex(s); !ok {
				return false, p.errorf("%q is not a memo index", s)
			}
		case 'h':
			idx, err = p.uint(1)
		default:
			idx, err = p.uint(4)
		}
		if err != nil {
			return false, err
		}
		if _, ok := p.memo[idx]; !ok {
			return false, p.errorf("memo entry %d was never set", idx)
		}
		return false, p.push(1)

	// Stack effects with no argument.
	case '(': // MARK
		p.marks = append(p.marks, p.depth)
		p.depth = 0
		return false, nil
	case 'l', 't', 0x91: // LIST, TUPLE, FROZENSET
		if _, err := p.popMark(); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'd': // DICT
		if err := p.popMarkPairs(); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'o': // OBJ
		n, err := p.popMark()
		if err != nil {
			return false, err
		}
		if n < 1 {
			return false, p.errorf("no class to call")
		}
		return false, p.push(1)
	case 'e', 0x90: // APPENDS, ADDITEMS
		if _, err := p.popMark(); err != nil {
			return false, err
		}
		return false, p.need(1)
	case 'u': // SETITEMS
		if err := p.popMarkPairs(); err != nil {
			return false, err
		}
		return false, p.need(1)
	case '1': // POP_MARK
		_, err := p.popMark()
		return false, err
	case '0': // POP: an object, or else the last mark
		if p.depth > 0 {
			p.depth--
			return false, nil
		}
		_, err := p.popMark()
		return false, err
	case '2': // DUP
		if err := p.need(1); err != nil {
			return false, err
		}
		return false, p.push(1)
	case 'a', 'R', 'b', 0x81, 0x93, 0x86: // APPEND, REDUCE, BUILD, NEWOBJ, STACK_GLOBAL, TUPLE2: 2 -> 1
		if err := p.need(2); err != nil {
			return false, err
		}
		p.depth--
		return false, nil
	case 0x85, 0x98: // TUPLE1, READONLY_BUFFER: 1 -> 1
		return false, p.need(1)
	case 's', 0x87, 0x92: // SETITEM, TUPLE3, NEWOBJ_EX: 3 -> 1
		if err := p.need(3); err != nil {
			return false, err
		}
		p.depth -= 2
		return false, nil

	// Framing and protocol.
	case 0x80: // PROTO
		v, err := p.uint(1)
		if err != nil {
			return false, err
		}
		if v > 5 {
			return false, p.errorf("unsupported protocol %d", v)
		}
		return false, nil
	case 0x95: // FRAME
		n, err := p.uint(8)
		if err != nil {
			return false, err
		}
		if n > uint64(p.size-p.off) {
			return false, p.errorf("a frame of %d bytes runs past the end of the file", n)
		}
		return false, nil
	case '.': // STOP
		return true, p.need(1)

	// Opcodes pickle.load refuses without arguments dirdb never passes.
	case 'P', 'Q':
		return false, p.errorf("a persistent id, which pickle.load cannot resolve without a persistent_load")
	case 0x97:
		return false, p.errorf("out-of-band data (NEXT_BUFFER), which pickle.load cannot read without buffers")
	}
	return false, p.errorf("not an opcode of any pickle protocol")
}

func trimSuffixByte(s string, c byte) string {
	if len(s) > 0 && s[len(s)-1] == c {
		return s[:len(s)-1]
	}
	return s
}

// isPyInt reports whether s is what int() accepts in a protocol 0
// pickle: an optional sign and decimal digits, single underscores
// between them (INT's "00" and "01" are False and True), surrounding
// blanks allowed.
func isPyInt(s string) bool {
	t := bytes.TrimSpace([]byte(s))
	if len(t) > 0 && (t[0] == '-' || t[0] == '+') {
		t = t[1:]
	}
	if len(t) == 0 || t[0] == '_' || t[len(t)-1] == '_' {
		return false
	}
	for i, c := range t {
		if c == '_' && t[i-1] != '_' {
			continue
		}
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseMemoIndex parses PUT's and GET's text argument as int() does.
func parseMemoIndex(s string) (uint64, bool) {
	if !isPyInt(s) {
		return 0, false
	}
	t := strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "+"), "_", "")
	v, err := strconv.ParseUint(t, 10, 63)
	return v, err == nil
}
