package dirdb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// validateJSON checks that r holds exactly one JSON value, as Python's
// json.load (which dirdb reads NAME.json with) accepts it: RFC 8259 plus
// the NaN, Infinity and -Infinity that json.dump writes for such floats;
// UTF-8; no control characters inside strings. It streams, so a large
// file costs no memory.
func validateJSON(r io.Reader) error {
	s := &jsonScanner{r: bufio.NewReaderSize(r, 64<<10)}
	return s.run()
}

// maxJSONDepth bounds nesting (Python itself stops near 1000).
const maxJSONDepth = 100000

type jsonScanner struct {
	r   *bufio.Reader
	off int64
}

func (s *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", s.off, fmt.Sprintf(format, args...))
}

func (s *jsonScanner) next() (byte, error) {
	c, err := s.r.ReadByte()
	if err == nil {
		s.off++
	}
	return c, err
}

func (s *jsonScanner) unread() {
	s.r.UnreadByte()
	s.off--
}

func (s *jsonScanner) skipWS() (byte, error) {
	for {
		c, err := s.next()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, nil
		}
	}
}

// Scanner states: what may come next.
const (
	jsValue      = iota // a value
	jsValueOrEnd        // after '[': a value or ']'
	jsKeyOrEnd          // after '{': a key or '}'
	jsKey               // after ',' in an object: a key
	jsAfter             // after a value: ',' or the end of its container (or of the file)
)

func (s *jsonScanner) run() error {
	var stack []byte
	state := jsValue
	for {
		c, err := s.skipWS()
		if errors.Is(err, io.EOF) {
			switch {
			case state == jsAfter && len(stack) == 0:
				return nil
			case s.off == 0:
				return errors.New("empty file: no JSON value")
			}
			return s.errorf("the file ends inside a value")
		}
		if err != nil {
			return err
		}
		switch state {
		case jsKeyOrEnd, jsKey:
			if c == '}' && state == jsKeyOrEnd {
				stack = stack[:len(stack)-1]
				state = jsAfter
				continue
			}
			if c != '"' {
				return s.errorf("expected a string key, found %q", c)
			}
			if err := s.str(); err != nil {
				return err
			}
			if c, err := s.skipWS(); err != nil || c != ':' {
				return s.errorf("expected ':' after a key")
			}
			state = jsValue
		case jsValueOrEnd, jsValue:
			if c == ']' && state == jsValueOrEnd {
				stack = stack[:len(stack)-1]
				state = jsAfter
				continue
			}
			state = jsAfter
			switch {
			case c == '{' || c == '[':
				if len(stack) >= maxJSONDepth {
					return s.errorf("nested more than %d deep", maxJSONDepth)
				}
				stack = append(stack, c)
				state = jsValueOrEnd
				if c == '{' {
					state = jsKeyOrEnd
				}
			case c == '"':
				err = s.str()
			case c == '-' || ('0' <= c && c <= '9'):
				err = s.number(c)
			default:
				err = s.literal(c)
			}
			if err != nil {
				return err
			}
		case jsAfter:
			if len(stack) == 0 {
				return s.errorf("extra data after the JSON value")
			}
			top := stack[len(stack)-1]
			switch {
			case c == ',' && top == '{':
				state = jsKey
			case c == ',':
				state = jsValue
			case c == '}' && top == '{', c == ']' && top == '[':
				stack = stack[:len(stack)-1]
			default:
				return s.errorf("expected ',' or %q, found %q", closing(top), c)
			}
		}
	}
}

func closing(open byte) byte {
	if open == '{' {
		return '}'
	}
	return ']'
}

// str scans a string after its opening quote.
func (s *jsonScanner) str() error {
	var rb [utf8.UTFMax]byte
	for {
		c, err := s.next()
		if err != nil {
			return s.errorf("unterminated string")
		}
		switch {
		case c == '"':
			return nil
		case c == '\\':
			c, err = s.next()
			if err != nil {
				return s.errorf("unterminated string")
			}
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for i := 0; i < 4; i++ {
					h, err := s.next()
					if err != nil || !isHex(h) {
						return s.errorf("bad \\u escape")
					}
				}
			default:
				return s.errorf("bad escape \\%c", c)
			}
		case c < 0x20:
			return s.errorf("control character %#x in a string", c)
		case c >= utf8.RuneSelf:
			rb[0] = c
			n := 1
			for n < utf8.UTFMax && !utf8.FullRune(rb[:n]) {
				b, err := s.next()
				if err != nil {
					return s.errorf("invalid UTF-8")
				}
				rb[n] = b
				n++
			}
			if !utf8.Valid(rb[:n]) {
				return s.errorf("invalid UTF-8")
			}
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number scans a number whose first byte is c (or -Infinity).
func (s *jsonScanner) number(c byte) error {
	var err error
	if c == '-' {
		if c, err = s.next(); err != nil {
			return s.errorf("bad number")
		}
		if c == 'I' {
			return s.literal(c)
		}
	}
	digits := func() (int, byte, error) {
		n := 0
		for {
			c, err := s.next()
			if err != nil {
				return n, 0, err
			}
			if c < '0' || c > '9' {
				return n, c, nil
			}
			n++
		}
	}
	switch {
	case c == '0':
		c, err = s.next()
	case '1' <= c && c <= '9':
		_, c, err = digits()
	default:
		return s.errorf("bad number")
	}
	if err == nil && c == '.' {
		var n int
		if n, c, err = digits(); n == 0 {
			return s.errorf("bad number: no digits after '.'")
		}
	}
	if err == nil && (c == 'e' || c == 'E') {
		if c, err = s.next(); err == nil && (c == '+' || c == '-') {
			c, err = s.next()
		}
		if err != nil || c < '0' || c > '9' {
			return s.errorf("bad number: no digits in the exponent")
		}
		_, c, err = digits()
	}
	if err == nil {
		s.unread() // c is not part of the number
		if '0' <= c && c <= '9' {
			return s.errorf("bad number: leading zero")
		}
	}
	return nil
}

// literal scans true, false, null, NaN or Infinity whose first byte is c.
func (s *jsonScanner) literal(c byte) error {
	for _, lit := range []string{"true", "false", "null", "NaN", "Infinity"} {
		if lit[0] != c {
			continue
		}
		for i := 1; i < len(lit); i++ {
			if b, err := s.next(); err != nil || b != lit[i] {
				return s.errorf("bad literal (expected %s)", lit)
			}
		}
		return nil
	}
	return s.errorf("unexpected character %q", c)
}
