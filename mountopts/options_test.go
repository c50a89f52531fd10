package mountopts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// with returns the defaults changed by f, so table rows only show what differs.
func with(f func(o *Options)) Options {
	o := Default()
	f(&o)
	return o
}

func TestDefault(t *testing.T) {
	want := Options{PoolSize: 1000, PoolBytes: 64 << 20, Writeback: 5 * time.Second, Views: ViewsHidden}
	if got := Default(); got != want {
		t.Errorf("Default() = %+v, want %+v", got, want)
	}
	for _, lists := range [][]string{nil, {""}, {"", ""}, {",,,"}, {" , "}} {
		got, err := Parse(lists...)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want defaults", lists, got, err)
		}
	}
}

func TestViewsString(t *testing.T) {
	for v, want := range map[Views]string{ViewsHidden: "hidden", ViewsVisible: "visible", 7: "Views(7)"} {
		if got := v.String(); got != want {
			t.Errorf("Views(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		lists []string
		want  Options
	}{
		{[]string{"ro"}, with(func(o *Options) { o.ReadOnly = true })},
		{[]string{"rw"}, Default()},
		{[]string{"ro,rw"}, Default()},
		{[]string{"rw,ro"}, with(func(o *Options) { o.ReadOnly = true })},
		{[]string{"allow_other"}, with(func(o *Options) { o.AllowOther = true })},
		{[]string{"default_permissions"}, with(func(o *Options) { o.DefaultPermissions = true })},
		{[]string{"no_default_permissions"}, with(func(o *Options) { o.NoDefaultPermissions = true })},
		{[]string{"no_default_permissions,default_permissions"}, with(func(o *Options) { o.DefaultPermissions = true })},
		{[]string{"default_permissions", "no_default_permissions"}, with(func(o *Options) { o.NoDefaultPermissions = true })},
		{[]string{"debug"}, with(func(o *Options) { o.Debug = true })},
		{[]string{"ro,store_connections"}, with(func(o *Options) { o.ReadOnly, o.StoreConnections = true, true })},
		{[]string{"array_passthrough"}, with(func(o *Options) { o.ArrayPassthrough = true })},
		{[]string{"pool_size=1"}, with(func(o *Options) { o.PoolSize = 1 })},
		{[]string{"pool_size=50000"}, with(func(o *Options) { o.PoolSize = 50000 })},
		{[]string{"pool_bytes=4096"}, with(func(o *Options) { o.PoolBytes = 4096 })},
		{[]string{"pool_bytes=4K"}, with(func(o *Options) { o.PoolBytes = 4096 })},
		{[]string{"pool_bytes=128M"}, with(func(o *Options) { o.PoolBytes = 128 << 20 })},
		{[]string{"pool_bytes=1GiB"}, with(func(o *Options) { o.PoolBytes = 1 << 30 })},
		{[]string{"writeback=0"}, with(func(o *Options) { o.Writeback = 0 })},
		{[]string{"writeback=0s"}, with(func(o *Options) { o.Writeback = 0 })},
		{[]string{"writeback=250ms"}, with(func(o *Options) { o.Writeback = 250 * time.Millisecond })},
		{[]string{"writeback=1m30s"}, with(func(o *Options) { o.Writeback = 90 * time.Second })},
		{[]string{"key_length=1"}, with(func(o *Options) { o.KeyLength = 1 })},
		{[]string{"key_length=4096"}, with(func(o *Options) { o.KeyLength = 4096 })},
		{[]string{"key_length=16,key_length=0"}, Default()},
		{[]string{"views=visible"}, with(func(o *Options) { o.Views = ViewsVisible })},
		{[]string{"views=visible,views=hidden"}, Default()},

		// Combinations, list syntax and accumulation.
		{[]string{"ro,allow_other,default_permissions,pool_size=10,pool_bytes=1M,writeback=1s,key_length=8,views=visible,debug"},
			Options{true, true, true, false, 10, 1 << 20, time.Second, 8, ViewsVisible, true, false, false}},
		{[]string{" ro , debug ,"}, with(func(o *Options) { o.ReadOnly, o.Debug = true, true })},
		{[]string{"ro,,debug,"}, with(func(o *Options) { o.ReadOnly, o.Debug = true, true })},
		{[]string{"pool_size=5,pool_size=7"}, with(func(o *Options) { o.PoolSize = 7 })},
		{[]string{"ro", "allow_other"}, with(func(o *Options) { o.ReadOnly, o.AllowOther = true, true })},
		{[]string{"ro,pool_size=3", "rw", "pool_size=9"}, with(func(o *Options) { o.PoolSize = 9 })},
		{[]string{"views=visible", "", "writeback=0"}, with(func(o *Options) { o.Views, o.Writeback = ViewsVisible, 0 })},
	}
	for _, tt := range tests {
		got, err := Parse(tt.lists...)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.lists, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.lists, got, tt.want)
		}
	}
}

// TestCheckPermissions: allow_other lets other users in, so it implies
// the kernel's permission checks unless explicitly turned off.
func TestCheckPermissions(t *testing.T) {
	for list, want := range map[string]bool{
		"":                                   false,
		"default_permissions":                true,
		"allow_other":                        true,
		"allow_other,no_default_permissions": false,
		"no_default_permissions,allow_other": false,
		"allow_other,no_default_permissions,default_permissions": true,
		"no_default_permissions":                                 false,
	} {
		o, err := Parse(list)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.CheckPermissions(); got != want {
			t.Errorf("Parse(%q).CheckPermissions() = %v, want %v", list, got, want)
		}
		back, err := Parse(o.String())
		if err != nil || back != o {
			t.Errorf("String() of %q = %q does not parse back: %+v %v", list, o.String(), back, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		list   string
		option string // Error.Option
		reason string // Error.Reason, or a prefix of it ending in "..."
	}{
		{"foo", "foo", "unknown option"},
		{"foo=bar", "foo=bar", "unknown option"},
		{"=1", "=1", "unknown option"},
		{"defaults", "defaults", "unknown option"},
		{"noauto", "noauto", "unknown option"},
		{"RO", "RO", `unknown option (did you mean "ro"?)`},
		{"Pool_Size=5", "Pool_Size=5", `unknown option (did you mean "pool_size"?)`},
		{"Views=visible", "Views=visible", `unknown option (did you mean "views"?)`},
		{"ro,debug,bogus", "bogus", "unknown option"},

		{"ro=1", "ro=1", "takes no value"},
		{"ro=", "ro=", "takes no value"},
		{"rw=0", "rw=0", "takes no value"},
		{"allow_other=yes", "allow_other=yes", "takes no value"},
		{"default_permissions=1", "default_permissions=1", "takes no value"},
		{"debug=true", "debug=true", "takes no value"},

		{"pool_size", "pool_size", "needs a value (pool_size=N, e.g. 1000)"},
		{"pool_size=", "pool_size=", "needs a value (pool_size=N, e.g. 1000)"},
		{"pool_size=abc", "pool_size=abc", "not a positive integer"},
		{"pool_size=1.5", "pool_size=1.5", "not a positive integer"},
		{"pool_size=0", "pool_size=0", "not a positive integer"},
		{"pool_size=-3", "pool_size=-3", "not a positive integer"},
		{"pool_size=-99999999999999999999", "pool_size=-99999999999999999999", "not a positive integer"},
		{"pool_size=99999999999999999999", "pool_size=99999999999999999999", "too large"},

		{"pool_bytes", "pool_bytes", "needs a value (pool_bytes=SIZE, e.g. 64M)"},
		{"pool_bytes=", "pool_bytes=", "needs a value (pool_bytes=SIZE, e.g. 64M)"},
		{"pool_bytes=abc", "pool_bytes=abc", "not a size (e.g. 64M)"},
		{"pool_bytes=0", "pool_bytes=0", "must be at least 4096 bytes (4K)"},
		{"pool_bytes=4095", "pool_bytes=4095", "must be at least 4096 bytes (4K)"},
		{"pool_bytes=-64M", "pool_bytes=-64M", "must not be negative"},
		{"pool_bytes=1.5G", "pool_bytes=1.5G", "must be a whole number (e.g. 1536K, not 1.5M)"},
		{"pool_bytes=64X", "pool_bytes=64X", `unknown unit "X" (use K, M, G or T)`},
		{"pool_bytes=64MX", "pool_bytes=64MX", `unknown unit "MX" (use K, M, G or T)`},
		{"pool_bytes=16E", "pool_bytes=16E", "too large"},
		{"pool_bytes=99999999999999999999", "pool_bytes=99999999999999999999", "too large"},

		{"writeback", "writeback", "needs a value (writeback=DURATION, e.g. 5s)"},
		{"writeback=", "writeback=", "needs a value (writeback=DURATION, e.g. 5s)"},
		{"writeback=5x", "writeback=5x", "not a duration (e.g. 5s, 1m30s)"},
		{"writeback=soon", "writeback=soon", "not a duration (e.g. 5s, 1m30s)"},
		{"writeback=5", "writeback=5", "missing unit (e.g. 5s)"},
		{"writeback=-1s", "writeback=-1s", "must not be negative"},
		{"writeback=9999999h", "writeback=9999999h", "not a duration (e.g. 5s, 1m30s)"},

		{"key_length", "key_length", "needs a value (key_length=N, e.g. 16)"},
		{"key_length=", "key_length=", "needs a value (key_length=N, e.g. 16)"},
		{"key_length=abc", "key_length=abc", "not an integer"},
		{"key_length=-1", "key_length=-1", "must be between 1 and 4096, or 0 to auto-detect"},
		{"key_length=4097", "key_length=4097", "must be between 1 and 4096, or 0 to auto-detect"},
		{"key_length=99999999999999999999", "key_length=99999999999999999999", "must be between 1 and 4096, or 0 to auto-detect"},

		{"views", "views", "needs a value (views=hidden or views=visible)"},
		{"views=", "views=", "needs a value (views=hidden or views=visible)"},
		{"views=shown", "views=shown", "must be hidden or visible"},
		{"views=Visible", "views=Visible", "must be hidden or visible"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.list)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q) = %+v, %v; want *Error", tt.list, got, err)
			continue
		}
		if got != (Options{}) {
			t.Errorf("Parse(%q) returned %+v with an error, want zero Options", tt.list, got)
		}
		if e.Option != tt.option || e.Reason != tt.reason {
			t.Errorf("Parse(%q) error = {%q, %q}, want {%q, %q}", tt.list, e.Option, e.Reason, tt.option, tt.reason)
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, `mount option "`) {
			t.Errorf("Parse(%q) error %q is not one mount option line", tt.list, msg)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	tests := map[string]string{
		"foo":           `mount option "foo": unknown option`,
		"pool_size=abc": `mount option "pool_size=abc": not a positive integer`,
		"writeback":     `mount option "writeback": needs a value (writeback=DURATION, e.g. 5s)`,
		"ro=1":          `mount option "ro=1": takes no value`,
		"views=shown":   `mount option "views=shown": must be hidden or visible`,
	}
	for list, want := range tests {
		if _, err := Parse(list); err == nil || err.Error() != want {
			t.Errorf("Parse(%q) error = %v, want %s", list, err, want)
		}
	}
}

// A failed Set must not leave half a list applied.
func TestSetKeepsOptionsOnError(t *testing.T) {
	o := with(func(o *Options) { o.PoolSize = 5 })
	before := o
	if err := o.Set("ro,pool_size=9,bogus"); err == nil {
		t.Fatal("Set accepted an unknown option")
	}
	if o != before {
		t.Errorf("after failed Set: %+v, want %+v", o, before)
	}
	if err := o.Set("ro"); err != nil || !o.ReadOnly || o.PoolSize != 5 {
		t.Errorf("Set(ro) = %v, options %+v", err, o)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Default(), "rw,pool_size=1000,pool_bytes=64M,writeback=5s,views=hidden"},
		{Options{true, true, true, false, 1, 4096, 0, 16, ViewsVisible, true, true, true},
			"ro,allow_other,default_permissions,pool_size=1,pool_bytes=4K,writeback=0s,key_length=16,views=visible,debug,store_connections,array_passthrough"},
		{with(func(o *Options) { o.PoolBytes = 4097 }), "rw,pool_size=1000,pool_bytes=4097,writeback=5s,views=hidden"},
		{with(func(o *Options) { o.Writeback = 90 * time.Second }), "rw,pool_size=1000,pool_bytes=64M,writeback=1m30s,views=hidden"},
	}
	for _, tt := range tests {
		if got := tt.o.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.o, got, tt.want)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, o := range []Options{
		Default(),
		{true, true, true, false, 1, 4096, 0, 1, ViewsVisible, true, true, true},
		with(func(o *Options) { o.PoolBytes = 4097 }),
		with(func(o *Options) { o.PoolBytes = 1<<20 + 1024 }),
		with(func(o *Options) { o.PoolBytes = 3 << 40 }),
		with(func(o *Options) { o.PoolBytes = 7 << 60 }),
		with(func(o *Options) { o.PoolBytes = 1<<63 - 1 }),
		with(func(o *Options) { o.PoolSize = 1<<31 - 1 }),
		with(func(o *Options) { o.Writeback = time.Nanosecond }),
		with(func(o *Options) { o.Writeback = 26*time.Hour + 3*time.Millisecond }),
		with(func(o *Options) { o.KeyLength = 4096 }),
	} {
		s := o.String()
		got, err := Parse(s)
		if err != nil || got != o {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", s, got, err, o)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{"4096B", 4096},
		{"007", 7},
		{"512K", 512 << 10},
		{"512k", 512 << 10},
		{"64M", 64 << 20},
		{"64m", 64 << 20},
		{"64Mi", 64 << 20},
		{"64MiB", 64 << 20},
		{"64MB", 64 << 20},
		{"64mib", 64 << 20},
		{"1G", 1 << 30},
		{"2T", 2 << 40},
		{"3P", 3 << 50},
		{"7E", 7 << 60},
		{"8191P", 8191 << 50},
		{"9223372036854775807", 1<<63 - 1},
	}
	for _, tt := range tests {
		if got, err := ParseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `size "": empty size`},
		{"-1", `size "-1": must not be negative`},
		{"-64M", `size "-64M": must not be negative`},
		{"1.5G", `size "1.5G": must be a whole number (e.g. 1536K, not 1.5M)`},
		{"M", `size "M": not a size (e.g. 64M)`},
		{"+5", `size "+5": not a size (e.g. 64M)`},
		{" 5", `size " 5": not a size (e.g. 64M)`},
		{"5 M", `size "5 M": unknown unit " M" (use K, M, G or T)`},
		{"5X", `size "5X": unknown unit "X" (use K, M, G or T)`},
		{"5iB", `size "5iB": unknown unit "iB" (use K, M, G or T)`},
		{"5MBi", `size "5MBi": unknown unit "MBi" (use K, M, G or T)`},
		{"1e3", `size "1e3": unknown unit "e3" (use K, M, G or T)`},
		{"8E", `size "8E": too large`},
		{"8192P", `size "8192P": too large`},
		{"9223372036854775808", `size "9223372036854775808": too large`},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want error %s", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1025, "1025"},
		{4096, "4K"},
		{1536, "1536"},
		{512 << 10, "512K"},
		{1 << 20, "1M"},
		{1<<20 + 1024, "1025K"},
		{64 << 20, "64M"},
		{1 << 30, "1G"},
		{2 << 40, "2T"},
		{3 << 50, "3P"},
		{7 << 60, "7E"},
		{1<<63 - 1, "9223372036854775807"},
		{-1024, "-1K"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		if back, err := ParseSize(FormatSize(tt.in)); err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
