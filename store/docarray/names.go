package docarray

import (
	"fmt"
	"hash/fnv"
	"strings"
	"unicode/utf8"
)

// File names of documents. A key is shown as its own name unless that
// cannot be a file name; the rule is reversible, and documented in the
// README:
//
//   - the bytes '/', NUL and '%' are written %2F, %00 and %25, wherever
//     they are; nothing else is escaped;
//   - the whole keys "", "." and ".." are written "%", "%2E" and "%2E%2E";
//   - a name that would be one the store directory keeps for itself (the
//     marker .docarray, and .arrayfs or .arrayfs-*, arrayfs's own) has
//     its leading '.' written %2E: the key ".docarray" is "%2Edocarray";
//   - a name that would be longer than 255 bytes keeps the longest prefix
//     of its escaped form that fits in 237 bytes (cut between characters)
//     and ends in "%#" and 16 hex digits of the FNV-1a 64 hash of the
//     key. "%#" appears in no other name, since '%' is otherwise always
//     followed by two hex digits.
//
// A name is accepted only in its canonical form (the one NameOfKey gives
// its key), so that every document has exactly one name.
const (
	maxNameBytes  = 255
	hashedSuffix  = 18 // "%#" + 16 hex digits
	hashedPrefixN = maxNameBytes - hashedSuffix
)

// NameOfKey is the file name of key.
func NameOfKey(key string) string {
	switch key {
	case "":
		return "%"
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	if !strings.ContainsAny(key, "/%\x00") && len(key) <= maxNameBytes && !reservedName(key) {
		return key
	}
	name := escapeBytes(key)
	if reservedName(name) {
		name = "%2E" + name[1:]
	}
	if len(name) <= maxNameBytes {
		return name
	}
	return hashedName(name, key)
}

// reservedName reports whether name is one a store directory keeps for
// itself, which no document may have.
func reservedName(name string) bool {
	return name == MarkerName || name == ".arrayfs" || strings.HasPrefix(name, ".arrayfs-")
}

// escapeBytes writes the bytes '/', NUL and '%' of key as escapes.
func escapeBytes(key string) string {
	if !strings.ContainsAny(key, "/%\x00") {
		return key
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '/':
			b.WriteString("%2F")
		case 0:
			b.WriteString("%00")
		case '%':
			b.WriteString("%25")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func hashedName(escaped, key string) string {
	cut := hashedPrefixN
	// Back off to a character boundary that is not inside an escape.
	for cut > 0 && !utf8.RuneStart(escaped[cut]) {
		cut--
	}
	if i := strings.LastIndexByte(escaped[:cut], '%'); i >= 0 && i+3 > cut {
		cut = i
	}
	return fmt.Sprintf("%s%%#%016x", escaped[:cut], keyHash(key))
}

func keyHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// isHashedName reports whether name is the shortened form of a long key.
func isHashedName(name string) bool {
	if len(name) < hashedSuffix || name[len(name)-hashedSuffix:len(name)-hashedSuffix+2] != "%#" {
		return false
	}
	for _, c := range name[len(name)-16:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// KeyOfName is the key a (canonical, not hashed) file name stands for.
func KeyOfName(name string) (string, bool) {
	switch name {
	case "%":
		return "", true
	case "%2E":
		return ".", true
	case "%2E%2E":
		return "..", true
	}
	if !strings.Contains(name, "%") {
		return name, utf8.ValidString(name) && name != "." && name != ".." && name != "" && !reservedName(name)
	}
	var b strings.Builder
	i := 0
	if strings.HasPrefix(name, "%2E") {
		// A key whose name would be a reserved one (NameOfKey checks below
		// that it is).
		b.WriteByte('.')
		i = 3
	}
	for ; i < len(name); i++ {
		c := name[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+3 > len(name) {
			return "", false
		}
		switch name[i+1 : i+3] {
		case "2F":
			b.WriteByte('/')
		case "00":
			b.WriteByte(0)
		case "25":
			b.WriteByte('%')
		default:
			return "", false
		}
		i += 2
	}
	key := b.String()
	if !utf8.ValidString(key) || NameOfKey(key) != name {
		return "", false
	}
	return key, true
}

// badDocName explains why name cannot name a document.
func badDocName(name string) string {
	if !utf8.ValidString(name) {
		return "document names must be UTF-8 (keys are Unicode)"
	}
	if reservedName(name) {
		return fmt.Sprintf("%s is a name the store keeps for itself: a document with that key is named %s", name, "%2E"+name[1:])
	}
	return "not a document name: in a store, '%' is written %25, and only %2F, %00, %25 (and the names %, %2E, %2E%2E, and %2E before a name the store keeps for itself) are escapes"
}
