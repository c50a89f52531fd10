package mountopts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// fstabOnly are options that mount(8) and fstab consume themselves and
// that would reach arrayfs only because they share the options field.
var fstabOnly = map[string]bool{
	"defaults": true,
	"noauto":   true,
	"auto":     true,
	"user":     true,
	"users":    true,
	"nofail":   true,
	"_netdev":  true,
	"nodev":    true,
	"nosuid":   true,
	"exec":     true,
	"noexec":   true,
	"suid":     true,
	"dev":      true,
}

// ParseFstab parses one /etc/fstab line for arrayfs,
//
//	DATASET MOUNTPOINT fuse.arrayfs OPTIONS 0 0
//
// returning the dataset, the mount point and the options. The type must be
// "fuse.arrayfs" or "arrayfs"; the dump and pass fields may be omitted, as
// fstab(5) allows. Options meant for mount(8) itself ("defaults", "noauto",
// "nofail", "x-systemd.*", ...) are ignored here, though Parse rejects them.
func ParseFstab(line string) (dataset, mountpoint string, o Options, err error) {
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return "", "", Options{}, errors.New("fstab: empty line")
	case strings.HasPrefix(f[0], "#"):
		return "", "", Options{}, errors.New("fstab: comment line")
	case len(f) < 4 || len(f) > 6:
		return "", "", Options{}, fmt.Errorf("fstab: want 4 to 6 fields (DATASET MOUNTPOINT TYPE OPTIONS [DUMP [PASS]]), got %d", len(f))
	case f[2] != "fuse.arrayfs" && f[2] != "arrayfs":
		return "", "", Options{}, fmt.Errorf("fstab: type %q is not fuse.arrayfs or arrayfs", f[2])
	}
	for _, n := range f[4:] {
		if _, err := strconv.ParseUint(n, 10, 31); err != nil {
			return "", "", Options{}, fmt.Errorf("fstab: dump/pass field %q is not a number", n)
		}
	}

	var kept []string
	for item := range strings.SplitSeq(f[3], ",") {
		key, _, _ := strings.Cut(strings.TrimSpace(item), "=")
		// mount(8) reserves x-* for userspace tools such as systemd and
		// never passes them on, so any x- option is not ours.
		if fstabOnly[key] || strings.HasPrefix(key, "x-") {
			continue
		}
		kept = append(kept, item)
	}
	o, err = Parse(strings.Join(kept, ","))
	if err != nil {
		return "", "", Options{}, err
	}
	return unescape(f[0]), unescape(f[1]), o, nil
}

// unescape decodes the octal escapes fstab uses for blanks and backslashes
// in paths ("\040" for space), as getmntent(3) does.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
