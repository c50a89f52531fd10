package daf

import (
	"bytes"
	"encoding/csv"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Axis files: AXIS#.csv of a daf dataset names each entry of an axis,
// one per line after a header line (the axis name). They name the rows
// and columns of ROWS,COLS#NAME and the elements of AXIS#NAME in views.

// axisCache keeps each axis file's names while its signature holds.
type axisCache struct {
	mu sync.Mutex
	m  map[string]axisNames
}

type axisNames struct {
	sig   engine.FileSig
	names []string
}

// axis returns the entries of axis in directory dirRel; nil when the
// dataset has no (readable) AXIS#.csv.
func (d *Arrays) axis(dirRel, axis string) []string {
	if axis == "" {
		return nil
	}
	rel := filepath.Join(dirRel, axis+"#.csv")
	st, err := d.back.Lstat(rel)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil
	}
	sig := engine.SigOf(&st.Stat_t)
	d.axes.mu.Lock()
	c, ok := d.axes.m[rel]
	d.axes.mu.Unlock()
	if ok && c.sig == sig {
		return c.names
	}
	data, err := d.back.ReadFile(rel)
	if err != nil {
		return nil
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	records, err := r.ReadAll()
	if err != nil || len(records) == 0 {
		return nil
	}
	names := make([]string, 0, len(records)-1)
	for _, rec := range records[1:] {
		if len(rec) > 0 {
			names = append(names, rec[0])
		} else {
			names = append(names, "")
		}
	}
	d.axes.mu.Lock()
	if d.axes.m == nil {
		d.axes.m = map[string]axisNames{}
	}
	d.axes.m[rel] = axisNames{sig: sig, names: names}
	d.axes.mu.Unlock()
	return names
}
