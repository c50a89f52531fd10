package dirdb

import (
	"bufio"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reading a numpy ndarray out of a pickle, for data.npy of an entry,
// without running anything: a small stack machine that knows the
// opcodes numpy's pickles use (protocols 2 to 5) and builds inert values
// (a call is recorded, never made). Any opcode it does not need, or a
// shape of values that is not numpy's, means "not an ndarray".
//
// numpy pickles an array as
//
//	_reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype, fortran, data)
//
// (numpy.core.multiarray or numpy._core.multiarray), where dtype is
// dtype(str, False, True) + BUILD (3, byteorder, ...), and data the raw
// bytes (protocol 2: _codecs.encode(text, 'latin1')); protocol 5 uses
// numeric._frombuffer(buffer, dtype, shape, order) instead. The raw
// bytes are located, not copied, so data.npy serves them from the
// entry's snapshot.

// ndArrayInfo is what data.npy of an entry is made of.
type ndArrayInfo struct {
	descr   string // numpy dtype.str, "<f8"
	shape   []int64
	fortran bool
	// The data: at [off, off+n) of the pickle, or (protocol 2) decoded.
	off, n int64
	data   []byte
}

// pickle values of the stack machine.
type (
	pyGlobal struct{ module, name string }
	pyCall   struct {
		fn    any
		args  []any
		state any // set by BUILD
	}
	pyBytes struct {
		off, n int64 // where the payload is in the pickle
	}
	pyMark struct{}
)

// errNotArray ends a parse that found something else than an ndarray.
type errNotArray struct{ why string }

func (e *errNotArray) Error() string { return e.why }

func notArray(format string, args ...any) error {
	return &errNotArray{fmt.Sprintf(format, args...)}
}

// parseNdArray reads the pickle r (size bytes); why says why it is not
// an ndarray when it is not one.
func parseNdArray(r io.ReaderAt, size int64) (*ndArrayInfo, string) {
	m := &pickleVM{r: r, br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10), size: size, memo: map[uint64]any{}}
	top, err := m.run()
	if err != nil {
		return nil, err.Error()
	}
	a, err := m.ndarray(top)
	if err != nil {
		return nil, err.Error()
	}
	return a, ""
}

type pickleVM struct {
	r     io.ReaderAt
	br    *bufio.Reader
	off   int64
	size  int64
	stack []any
	memo  map[uint64]any
	ops   int
}

// maxSmall bounds the arguments the machine copies (strings, small
// bytes); an array's data is only located.
const maxSmall = 1 << 20

func (m *pickleVM) byte1() (byte, error) {
	if m.off >= m.size {
		return 0, notArray("the pickle ends early")
	}
	c, err := m.br.ReadByte()
	if err != nil {
		return 0, notArray("the pickle ends early")
	}
	m.off++
	return c, nil
}

func (m *pickleVM) read(n int64) ([]byte, error) {
	if n < 0 || n > m.size-m.off || n > maxSmall {
		return nil, notArray("an argument of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(m.br, b); err != nil {
		return nil, notArray("the pickle ends early")
	}
	m.off += n
	return b, nil
}

// skip passes over a payload of n bytes without reading it (an array's
// data), returning where it is.
func (m *pickleVM) skip(n int64) (pyBytes, error) {
	if n < 0 || n > m.size-m.off {
		return pyBytes{}, notArray("a payload of %d bytes past the end", n)
	}
	at := m.off
	m.off += n
	if n <= int64(m.br.Buffered()) {
		m.br.Discard(int(n))
	} else {
		m.br.Reset(io.NewSectionReader(m.r, m.off, m.size-m.off))
	}
	return pyBytes{off: at, n: n}, nil
}

func (m *pickleVM) uint(n int) (uint64, error) {
	b, err := m.read(int64(n))
	return leUint(b), err
}

func (m *pickleVM) push(v any) { m.stack = append(m.stack, v) }

func (m *pickleVM) pop() (any, error) {
	if len(m.stack) == 0 {
		return nil, notArray("the stack underflows")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	if _, ok := v.(pyMark); ok {
		return nil, notArray("a mark where a value was expected")
	}
	return v, nil
}

func (m *pickleVM) top() (any, error) {
	if len(m.stack) == 0 {
		return nil, notArray("the stack underflows")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark pops the values down to the last mark.
func (m *pickleVM) popMark() ([]any, error) {
	for i := len(m.stack) - 1; i >= 0; i-- {
		if _, ok := m.stack[i].(pyMark); ok {
			vals := append([]any(nil), m.stack[i+1:]...)
			m.stack = m.stack[:i]
			return vals, nil
		}
	}
	return nil, notArray("no mark")
}

func (m *pickleVM) popN(n int) ([]any, error) {
	if len(m.stack) < n {
		return nil, notArray("the stack underflows")
	}
	vals := append([]any(nil), m.stack[len(m.stack)-n:]...)
	for _, v := range vals {
		if _, ok := v.(pyMark); ok {
			return nil, notArray("a mark in a tuple")
		}
	}
	m.stack = m.stack[:len(m.stack)-n]
	return vals, nil
}

func (m *pickleVM) str(n int64) (string, error) {
	b, err := m.read(n)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", notArray("a string that is not UTF-8")
	}
	return string(b), nil
}

// argWidth is the size of the little-endian integer argument (an int, a
// length, a memo index) of the opcodes that have one.
var argWidth = [256]int{
	'K': 1, 'M': 2, 'J': 4, // BININT1, BININT2, BININT
	0x8c: 1, 'X': 4, 0x8d: 8, // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
	'C': 1, 'B': 4, 0x8e: 8, 0x96: 8, 'U': 1, 'T': 4, // bytes, bytearray, py2 str
	'q': 1, 'r': 4, 'h': 1, 'j': 4, // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET
}

// run executes the pickle to its STOP and returns the value it made.
func (m *pickleVM) run() (any, error) {
	for {
		if m.ops++; m.ops > 1<<20 {
			return nil, notArray("more opcodes than an array's pickle has")
		}
		op, err := m.byte1()
		if err != nil {
			return nil, err
		}
		switch op {
		case 0x80: // PROTO
			if _, err := m.byte1(); err != nil {
				return nil, err
			}
		case 0x95: // FRAME
			if _, err := m.uint(8); err != nil {
				return nil, err
			}
		case '.': // STOP
			return m.pop()
		case '(': // MARK
			m.push(pyMark{})
		case 'N':
			m.push(nil)
		case 0x88:
			m.push(true)
		case 0x89:
			m.push(false)
		case 'K', 'M', 'J': // BININT1, BININT2, BININT
			n := argWidth[op]
			v, err := m.uint(n)
			if err != nil {
				return nil, err
			}
			if op == 'J' {
				m.push(int64(int32(uint32(v))))
			} else {
				m.push(int64(v))
			}
		case 0x8a: // LONG1
			n, err := m.byte1()
			if err != nil {
				return nil, err
			}
			b, err := m.read(int64(n))
			if err != nil {
				return nil, err
			}
			v, ok := littleSigned(b)
			if !ok {
				return nil, notArray("an integer too large")
			}
			m.push(v)
		case 0x8c, 'X', 0x8d: // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
			n, err := m.uint(argWidth[op])
			if err != nil {
				return nil, err
			}
			s, err := m.str(int64(n))
			if err != nil {
				return nil, err
			}
			m.push(s)
		case 'C', 'B', 0x8e, 0x96, 'U', 'T': // bytes, bytearray, py2 str
			n, err := m.uint(argWidth[op])
			if err != nil {
				return nil, err
			}
			b, err := m.skip(int64(n))
			if err != nil {
				return nil, err
			}
			m.push(b)
		case ')':
			m.push([]any{})
		case 't':
			vals, err := m.popMark()
			if err != nil {
				return nil, err
			}
			m.push(vals)
		case 0x85, 0x86, 0x87: // TUPLE1..3
			vals, err := m.popN(int(op - 0x84))
			if err != nil {
				return nil, err
			}
			m.push(vals)
		case 'c': // GLOBAL module\nname\n
			mod, err := m.line()
			if err != nil {
				return nil, err
			}
			name, err := m.line()
			if err != nil {
				return nil, err
			}
			m.push(pyGlobal{mod, name})
		case 0x93: // STACK_GLOBAL
			vals, err := m.popN(2)
			if err != nil {
				return nil, err
			}
			mod, ok1 := vals[0].(string)
			name, ok2 := vals[1].(string)
			if !ok1 || !ok2 {
				return nil, notArray("STACK_GLOBAL of values that are not strings")
			}
			m.push(pyGlobal{mod, name})
		case 'R': // REDUCE
			vals, err := m.popN(2)
			if err != nil {
				return nil, err
			}
			args, ok := vals[1].([]any)
			if !ok {
				return nil, notArray("REDUCE without an argument tuple")
			}
			m.push(&pyCall{fn: vals[0], args: args})
		case 'b': // BUILD
			state, err := m.pop()
			if err != nil {
				return nil, err
			}
			obj, err := m.top()
			if err != nil {
				return nil, err
			}
			c, ok := obj.(*pyCall)
			if !ok {
				return nil, notArray("BUILD on something that is not an object")
			}
			c.state = state
		case 0x94: // MEMOIZE
			v, err := m.top()
			if err != nil {
				return nil, err
			}
			m.memo[uint64(len(m.memo))] = v
		case 'q', 'r': // BINPUT, LONG_BINPUT
			i, err := m.uint(argWidth[op])
			if err != nil {
				return nil, err
			}
			v, err := m.top()
			if err != nil {
				return nil, err
			}
			m.memo[i] = v
		case 'h', 'j': // BINGET, LONG_BINGET
			i, err := m.uint(argWidth[op])
			if err != nil {
				return nil, err
			}
			v, ok := m.memo[i]
			if !ok {
				return nil, notArray("a memo entry fetched before it was set")
			}
			m.push(v)
		case 'p', 'g': // PUT, GET (protocol 0 lines)
			l, err := m.line()
			if err != nil {
				return nil, err
			}
			i, err := strconv.ParseUint(l, 10, 64)
			if err != nil {
				return nil, notArray("a memo index %q", l)
			}
			if op == 'p' {
				v, err := m.top()
				if err != nil {
					return nil, err
				}
				m.memo[i] = v
			} else {
				v, ok := m.memo[i]
				if !ok {
					return nil, notArray("a memo entry fetched before it was set")
				}
				m.push(v)
			}
		default:
			return nil, notArray("%s, which an array's pickle does not use", opcodeName(op))
		}
	}
}

func (m *pickleVM) line() (string, error) {
	var b []byte
	for len(b) < 1024 {
		c, err := m.byte1()
		if err != nil {
			return "", err
		}
		if c == '\n' {
			return string(b), nil
		}
		b = append(b, c)
	}
	return "", notArray("a line too long")
}

// littleSigned decodes a LONG1 payload (two's complement, little-endian).
func littleSigned(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, true
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if !v.IsInt64() {
		return 0, false
	}
	return v.Int64(), true
}

func isNumpy(g any, names ...string) bool {
	gl, ok := g.(pyGlobal)
	if !ok {
		return false
	}
	for _, n := range names {
		mod, name, _ := strings.Cut(n, ":")
		if gl.module == mod && gl.name == name {
			return true
		}
	}
	return false
}

// ndarray recognises numpy's pickle of an array in the value v.
func (m *pickleVM) ndarray(v any) (*ndArrayInfo, error) {
	c, ok := v.(*pyCall)
	if !ok {
		return nil, notArray("the pickle holds no object")
	}
	switch {
	case isNumpy(c.fn, "numpy.core.multiarray:_reconstruct", "numpy._core.multiarray:_reconstruct"):
		st, ok := c.state.([]any)
		if !ok || len(st) != 5 {
			return nil, notArray("an ndarray whose state is not numpy's")
		}
		a := &ndArrayInfo{}
		var err error
		if a.shape, err = intTuple(st[1]); err != nil {
			return nil, err
		}
		if a.descr, err = m.dtype(st[2]); err != nil {
			return nil, err
		}
		if a.fortran, ok = st[3].(bool); !ok {
			return nil, notArray("an ndarray whose order is not a bool")
		}
		return a, m.data(a, st[4])
	case isNumpy(c.fn, "numpy.core.numeric:_frombuffer", "numpy._core.numeric:_frombuffer"):
		if len(c.args) != 4 {
			return nil, notArray("_frombuffer with %d arguments", len(c.args))
		}
		a := &ndArrayInfo{}
		var err error
		if a.descr, err = m.dtype(c.args[1]); err != nil {
			return nil, err
		}
		if a.shape, err = intTuple(c.args[2]); err != nil {
			return nil, err
		}
		order, _ := c.args[3].(string)
		if order != "C" && order != "F" {
			return nil, notArray("_frombuffer of order %v", c.args[3])
		}
		a.fortran = order == "F"
		return a, m.data(a, c.args[0])
	}
	return nil, notArray("the pickle holds an object that is not an ndarray")
}

func intTuple(v any) ([]int64, error) {
	t, ok := v.([]any)
	if !ok {
		return nil, notArray("a shape that is not a tuple")
	}
	out := make([]int64, len(t))
	for i, e := range t {
		n, ok := e.(int64)
		if !ok || n < 0 {
			return nil, notArray("a shape that is not of integers")
		}
		out[i] = n
	}
	return out, nil
}

// dtype recognises numpy.dtype(str, False, True) + BUILD (3, order, ...)
// of a plain (not structured, not object) dtype.
func (m *pickleVM) dtype(v any) (string, error) {
	c, ok := v.(*pyCall)
	if !ok || !isNumpy(c.fn, "numpy:dtype") || len(c.args) < 1 {
		return "", notArray("a dtype that is not numpy's")
	}
	ts, ok := c.args[0].(string)
	if !ok || len(ts) < 2 || strings.ContainsAny(ts, "O[(") {
		return "", notArray("dtype %v, which a .npy of raw bytes cannot hold", c.args[0])
	}
	st, ok := c.state.([]any)
	if !ok || len(st) < 5 {
		return "", notArray("a dtype whose state is not numpy's")
	}
	order, _ := st[1].(string)
	if st[3] != nil || st[4] != nil {
		return "", notArray("a structured dtype")
	}
	switch order {
	case "=":
		order = "<" // the pickle's writer was little-endian (x86, arm64)
	case "<", ">", "|":
	default:
		return "", notArray("a dtype of byte order %q", order)
	}
	kind := ts[0]
	if !strings.ContainsRune("biufcUSVmM", rune(kind)) {
		return "", notArray("dtype %s", ts)
	}
	return order + ts, nil
}

// data locates the array's bytes: a bytes or bytearray payload, or
// (protocol 2) _codecs.encode(text, 'latin1').
func (m *pickleVM) data(a *ndArrayInfo, v any) error {
	want, ok := dataSize(a.descr, a.shape)
	if !ok {
		return notArray("dtype %s", a.descr)
	}
	switch d := v.(type) {
	case pyBytes:
		if d.n != want {
			return notArray("%d bytes of data, dtype %s and shape %v make %d", d.n, a.descr, a.shape, want)
		}
		a.off, a.n = d.off, d.n
		return nil
	case *pyCall:
		if isNumpy(d.fn, "builtins:bytes", "__builtin__:bytes") && len(d.args) == 0 && want == 0 {
			a.data = []byte{} // protocol 2's b''
			return nil
		}
		if !isNumpy(d.fn, "_codecs:encode") || len(d.args) != 2 || d.args[1] != "latin1" {
			return notArray("data that is not bytes")
		}
		text, ok := d.args[0].(string)
		if !ok {
			return notArray("data that is not bytes")
		}
		b := make([]byte, 0, len(text))
		for _, r := range text {
			if r > 0xff {
				return notArray("latin1 data with a code point past 255")
			}
			b = append(b, byte(r))
		}
		if int64(len(b)) != want {
			return notArray("%d bytes of data, dtype %s and shape %v make %d", len(b), a.descr, a.shape, want)
		}
		a.data, a.n = b, int64(len(b))
		return nil
	}
	return notArray("data that is not bytes (an object array?)")
}

// dataSize is the bytes an array of descr and shape holds.
func dataSize(descr string, shape []int64) (int64, bool) {
	n, err := strconv.ParseInt(descr[2:], 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	if descr[1] == 'U' {
		n *= 4
	}
	for _, d := range shape {
		if d != 0 && n > (1<<62)/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}
