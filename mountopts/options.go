// Package mountopts parses arrayfs mount options: the comma lists given
// with -o on the command line or in the fourth field of an /etc/fstab line.
package mountopts

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Views says whether the /.arrayfs/ directory shows up when listing the root.
type Views int

const (
	ViewsHidden Views = iota // default: /.arrayfs/ not listed in readdir of the root, but reachable by name
	ViewsVisible
)

func (v Views) String() string {
	switch v {
	case ViewsHidden:
		return "hidden"
	case ViewsVisible:
		return "visible"
	}
	return fmt.Sprintf("Views(%d)", int(v))
}

// Options is the typed result of parsing -o lists (mount(8) style comma lists).
type Options struct {
	ReadOnly           bool // "ro" (and "rw" sets it back to false; the last one wins)
	AllowOther         bool // "allow_other"
	DefaultPermissions bool // "default_permissions"
	// NoDefaultPermissions ("no_default_permissions") turns off the
	// permission checks allow_other implies: every user may then do what
	// the daemon may. Insecure; the mount logs a warning.
	NoDefaultPermissions bool
	PoolSize             int           // "pool_size=N": max dirty units in the write-back pool; N >= 1; default 1000
	PoolBytes            int64         // "pool_bytes=SIZE": max dirty bytes; default 64 MiB; SIZE >= 4096
	Writeback            time.Duration // "writeback=DURATION": periodic write-back interval; default 5s; 0 = only on eviction/fsync/unmount
	KeyLength            int           // "key_length=N": docarray key length; 0 = auto-detect (default); N in 1..4096 when given
	Views                Views         // "views=hidden|visible"; default hidden
	Debug                bool          // "debug"
	// StoreConnections ("store_connections") serves each docarray store
	// directory of a read-only mount on a FUSE connection of its own,
	// mounted over it, that never asks the daemon to open or flush a
	// document (fs/storeconn.go).
	StoreConnections bool
	// ArrayPassthrough ("array_passthrough") lets the readers of an
	// array on a read-write mount pass through to its data file while
	// no writer has it open; a writer waits for them (fs/iomode.go).
	// Read-only mounts always pass through.
	ArrayPassthrough bool
}

const (
	minPoolBytes = 4096
	maxKeyLength = 4096
)

// Error reports a single bad item of an option list.
type Error struct {
	Option string // the item as the user wrote it, e.g. "pool_size=abc"
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("mount option %q: %s", e.Option, e.Reason)
}

// Default returns the options used when none are given.
func Default() Options {
	return Options{
		PoolSize:  1000,
		PoolBytes: 64 << 20,
		Writeback: 5 * time.Second,
		Views:     ViewsHidden,
	}
}

// Parse parses one or more comma lists on top of the defaults
// (Parse("") == Default(), nil).
func Parse(lists ...string) (Options, error) {
	o := Default()
	for _, list := range lists {
		if err := o.Set(list); err != nil {
			return Options{}, err
		}
	}
	return o, nil
}

// Set applies one comma list on top of o, so several -o flags accumulate
// and later items win. On error o is left unchanged.
func (o *Options) Set(list string) error {
	next := *o
	for item := range strings.SplitSeq(list, ",") {
		// mount(8) skips empty items, so "ro,,debug" and trailing commas are fine.
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if err := next.apply(item); err != nil {
			return err
		}
	}
	*o = next
	return nil
}

// option describes one key. Exactly one of flag and set is non-nil.
type option struct {
	flag  func(o *Options)
	set   func(o *Options, val string) (reason string)
	usage string // how to write the value, for "needs a value" errors
}

var options = map[string]option{
	"ro":                     {flag: func(o *Options) { o.ReadOnly = true }},
	"rw":                     {flag: func(o *Options) { o.ReadOnly = false }},
	"allow_other":            {flag: func(o *Options) { o.AllowOther = true }},
	"default_permissions":    {flag: func(o *Options) { o.DefaultPermissions, o.NoDefaultPermissions = true, false }},
	"no_default_permissions": {flag: func(o *Options) { o.DefaultPermissions, o.NoDefaultPermissions = false, true }},
	"debug":                  {flag: func(o *Options) { o.Debug = true }},
	"store_connections":      {flag: func(o *Options) { o.StoreConnections = true }},
	"array_passthrough":      {flag: func(o *Options) { o.ArrayPassthrough = true }},
	"pool_size":              {set: setPoolSize, usage: "pool_size=N, e.g. 1000"},
	"pool_bytes":             {set: setPoolBytes, usage: "pool_bytes=SIZE, e.g. 64M"},
	"writeback":              {set: setWriteback, usage: "writeback=DURATION, e.g. 5s"},
	"key_length":             {set: setKeyLength, usage: "key_length=N, e.g. 16"},
	"views":                  {set: setViews, usage: "views=hidden or views=visible"},
}

func (o *Options) apply(item string) error {
	key, val, hasVal := strings.Cut(item, "=")
	opt, ok := options[key]
	var reason string
	switch {
	case !ok:
		reason = unknown(key)
	case opt.flag != nil && hasVal:
		reason = "takes no value"
	case opt.flag != nil:
		opt.flag(o)
	case val == "":
		reason = "needs a value (" + opt.usage + ")"
	default:
		reason = opt.set(o, val)
	}
	if reason != "" {
		return &Error{Option: item, Reason: reason}
	}
	return nil
}

// unknown explains an unknown key, pointing out case mistakes since keys
// are case-sensitive and "RO" looking unknown would otherwise puzzle users.
func unknown(key string) string {
	if _, ok := options[strings.ToLower(key)]; ok {
		return fmt.Sprintf("unknown option (did you mean %q?)", strings.ToLower(key))
	}
	return "unknown option"
}

func setPoolSize(o *Options, val string) string {
	n, err := strconv.Atoi(val)
	switch {
	case errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(val, "-"):
		return "too large"
	case err != nil || n < 1:
		return "not a positive integer"
	}
	o.PoolSize = n
	return ""
}

func setPoolBytes(o *Options, val string) string {
	n, reason := parseSize(val)
	switch {
	case reason != "":
		return reason
	case n < minPoolBytes:
		return "must be at least 4096 bytes (4K)"
	}
	o.PoolBytes = n
	return ""
}

func setWriteback(o *Options, val string) string {
	d, err := time.ParseDuration(val)
	switch {
	case err != nil && strings.Trim(val, "0123456789") == "":
		return "missing unit (e.g. 5s)"
	case err != nil:
		return "not a duration (e.g. 5s, 1m30s)"
	case d < 0:
		return "must not be negative"
	}
	o.Writeback = d
	return ""
}

func setKeyLength(o *Options, val string) string {
	n, err := strconv.Atoi(val)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return "not an integer"
	// Accepting 0 lets a later -o undo an earlier key_length.
	case err != nil || n < 0 || n > maxKeyLength:
		return "must be between 1 and 4096, or 0 to auto-detect"
	}
	o.KeyLength = n
	return ""
}

func setViews(o *Options, val string) string {
	switch val {
	case "hidden":
		o.Views = ViewsHidden
	case "visible":
		o.Views = ViewsVisible
	default:
		return "must be hidden or visible"
	}
	return ""
}

// CheckPermissions reports whether the kernel checks every access
// against the modes and owners shown (the mount option
// default_permissions): when asked for, and whenever allow_other lets
// other users in, unless no_default_permissions says otherwise. Without
// it a FUSE file system run by root would let any user read 0600 files
// and change root's.
func (o Options) CheckPermissions() bool {
	return o.DefaultPermissions || (o.AllowOther && !o.NoDefaultPermissions)
}

// String renders o as a canonical comma list that Parse reads back to the
// same value.
func (o Options) String() string {
	var b strings.Builder
	if o.ReadOnly {
		b.WriteString("ro")
	} else {
		b.WriteString("rw")
	}
	if o.AllowOther {
		b.WriteString(",allow_other")
	}
	if o.DefaultPermissions {
		b.WriteString(",default_permissions")
	}
	if o.NoDefaultPermissions {
		b.WriteString(",no_default_permissions")
	}
	fmt.Fprintf(&b, ",pool_size=%d,pool_bytes=%s,writeback=%s", o.PoolSize, FormatSize(o.PoolBytes), o.Writeback)
	if o.KeyLength != 0 {
		fmt.Fprintf(&b, ",key_length=%d", o.KeyLength)
	}
	fmt.Fprintf(&b, ",views=%s", o.Views)
	if o.Debug {
		b.WriteString(",debug")
	}
	if o.StoreConnections {
		b.WriteString(",store_connections")
	}
	if o.ArrayPassthrough {
		b.WriteString(",array_passthrough")
	}
	return b.String()
}

// units are the size suffixes, each 1024 times the previous one.
const units = "KMGTPE"

// FormatSize renders n the way users write sizes: "64M", "1G", "512K",
// or plain bytes when n is not a whole multiple of 1024.
func FormatSize(n int64) string {
	unit := -1
	for n != 0 && n%1024 == 0 && unit < len(units)-1 {
		n /= 1024
		unit++
	}
	if unit < 0 {
		return strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10) + units[unit:unit+1]
}

// ParseSize parses a byte count such as "4096", "512K", "64M", "1G" or "2T".
// Units are binary multiples (1024) and case-insensitive, and may carry an
// "i", "iB" or "B" suffix ("64MiB", "64MB", "64m"), because users write
// all of these and mean the same thing.
func ParseSize(s string) (int64, error) {
	n, reason := parseSize(s)
	if reason != "" {
		return 0, fmt.Errorf("size %q: %s", s, reason)
	}
	return n, nil
}

// parseSize returns a reason instead of an error so that callers can put
// it into their own message.
func parseSize(s string) (int64, string) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	digits, suffix := s[:i], s[i:]
	switch {
	case s == "":
		return 0, "empty size"
	case s[0] == '-':
		return 0, "must not be negative"
	case digits == "":
		return 0, "not a size (e.g. 64M)"
	case suffix != "" && suffix[0] == '.':
		return 0, "must be a whole number (e.g. 1536K, not 1.5M)"
	}
	shift, ok := unitShift(suffix)
	if !ok {
		return 0, fmt.Sprintf("unknown unit %q (use K, M, G or T)", suffix)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, "too large"
	}
	return n << shift, ""
}

// unitShift returns log2 of the multiplier a size suffix stands for.
func unitShift(suffix string) (uint, bool) {
	s := strings.ToLower(suffix)
	if s == "" || s == "b" {
		return 0, true
	}
	i := strings.IndexByte(strings.ToLower(units), s[0])
	if i < 0 {
		return 0, false
	}
	switch s[1:] {
	case "", "i", "ib", "b":
		return 10 * uint(i+1), true
	}
	return 0, false
}
