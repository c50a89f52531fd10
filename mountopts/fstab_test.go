package mountopts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseFstab(t *testing.T) {
	tests := []struct {
		line                string
		dataset, mountpoint string
		want                Options
	}{
		{"/data/set /mnt/a fuse.arrayfs ro 0 0", "/data/set", "/mnt/a", with(func(o *Options) { o.ReadOnly = true })},
		{"/data/set /mnt/a arrayfs defaults 0 0", "/data/set", "/mnt/a", Default()},
		{"/data/set /mnt/a fuse.arrayfs defaults", "/data/set", "/mnt/a", Default()},
		{"/data/set /mnt/a fuse.arrayfs defaults 0", "/data/set", "/mnt/a", Default()},
		{"\t/d   /m\tfuse.arrayfs  ro,debug  0  2  ", "/d", "/m", with(func(o *Options) { o.ReadOnly, o.Debug = true, true })},
		{`/data/my\040set /mnt/with\040space\134x fuse.arrayfs defaults 0 0`, "/data/my set", `/mnt/with space\x`, Default()},
		{`/d\09 /m\ fuse.arrayfs defaults 0 0`, `/d\09`, `/m\`, Default()},
		{"/d /m fuse.arrayfs defaults,noauto,auto,user,users,nofail,_netdev,nodev,nosuid,exec,noexec,suid,dev,allow_other 0 0",
			"/d", "/m", with(func(o *Options) { o.AllowOther = true })},
		{"/d /m fuse.arrayfs x-systemd.automount,x-systemd.requires=foo.mount,x-gvfs-show,writeback=1s 0 0",
			"/d", "/m", with(func(o *Options) { o.Writeback = time.Second })},
		{"/d /m fuse.arrayfs pool_size=10,pool_bytes=1G,key_length=32,views=visible,,rw 0 0",
			"/d", "/m", with(func(o *Options) { o.PoolSize, o.PoolBytes, o.KeyLength, o.Views = 10, 1<<30, 32, ViewsVisible })},
	}
	for _, tt := range tests {
		ds, mp, o, err := ParseFstab(tt.line)
		if err != nil {
			t.Errorf("ParseFstab(%q): %v", tt.line, err)
			continue
		}
		if ds != tt.dataset || mp != tt.mountpoint || o != tt.want {
			t.Errorf("ParseFstab(%q) = %q, %q, %+v; want %q, %q, %+v", tt.line, ds, mp, o, tt.dataset, tt.mountpoint, tt.want)
		}
	}
}

func TestParseFstabErrors(t *testing.T) {
	tests := []struct {
		line string
		want string // substring of the error
	}{
		{"", "empty line"},
		{"   \t ", "empty line"},
		{"# /d /m fuse.arrayfs ro 0 0", "comment line"},
		{"  #/d /m fuse.arrayfs ro 0 0", "comment line"},
		{"/d /m fuse.arrayfs", "want 4 to 6 fields"},
		{"/d", "got 1"},
		{"/d /m fuse.arrayfs ro 0 0 extra", "got 7"},
		{"/d /m ext4 ro 0 0", `type "ext4" is not`},
		{"/d /m fuse ro 0 0", `type "fuse" is not`},
		{"/d /m fuse.sshfs ro 0 0", `type "fuse.sshfs" is not`},
		{"/d /m Arrayfs ro 0 0", `type "Arrayfs" is not`},
		{"/d /m fuse.arrayfs ro x 0", `dump/pass field "x"`},
		{"/d /m fuse.arrayfs ro 0 -1", `dump/pass field "-1"`},
	}
	for _, tt := range tests {
		_, _, _, err := ParseFstab(tt.line)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFstab(%q) error = %v, want one line containing %q", tt.line, err, tt.want)
		}
	}
}

// Errors in arrayfs options must reach the caller unchanged so they can be
// inspected like those from Parse.
func TestParseFstabOptionErrors(t *testing.T) {
	tests := []struct{ line, option, reason string }{
		{"/d /m fuse.arrayfs defaults,bogus 0 0", "bogus", "unknown option"},
		{"/d /m fuse.arrayfs pool_size=0 0 0", "pool_size=0", "not a positive integer"},
		{"/d /m arrayfs nofail,views=shown", "views=shown", "must be hidden or visible"},
		{"/d /m fuse.arrayfs ro=1 0 0", "ro=1", "takes no value"},
		{"/d /m fuse.arrayfs writeback 0 0", "writeback", "needs a value (writeback=DURATION, e.g. 5s)"},
		{"/d /m fuse.arrayfs Defaults 0 0", "Defaults", "unknown option"},
	}
	for _, tt := range tests {
		ds, mp, o, err := ParseFstab(tt.line)
		var e *Error
		if !errors.As(err, &e) || e.Option != tt.option || e.Reason != tt.reason {
			t.Errorf("ParseFstab(%q) error = %v, want *Error{%q, %q}", tt.line, err, tt.option, tt.reason)
		}
		if ds != "" || mp != "" || o != (Options{}) {
			t.Errorf("ParseFstab(%q) returned %q, %q, %+v with an error", tt.line, ds, mp, o)
		}
	}
}
