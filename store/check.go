package store

import (
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Check validates every item it recognises under the dataset directory
// root and returns one Problem per thing wrong, sorted by path. It only
// reads, and follows no symbolic link.
func Check(root string, cfg Config) ([]Problem, error) {
	back, err := OpenBacking(root)
	if err != nil {
		return nil, err
	}
	defer back.Close()
	var problems []Problem
	var walk func(rel string)
	walk = func(rel string) {
		names, err := readDirNames(back, rel)
		if err != nil {
			problems = append(problems, Problem{Path: rel, Reason: unwrapPath(err).Error()})
			return
		}
		for _, c := range checkers {
			problems = append(problems, c(back, rel, names, cfg)...)
		}
		for _, n := range names {
			child := filepath.Join(rel, n)
			if st, err := back.Lstat(child); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR && !IsStageName(n) {
				walk(child)
			}
		}
	}
	walk(".")
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Path < problems[j].Path })
	return problems, nil
}

// A checker validates the items of one format in one directory. Each
// format registers its own.
type checker func(back *Backing, dirRel string, names []string, cfg Config) []Problem

var checkers = []checker{checkStaged, checkArrays}

// readDirNames lists directory rel of back, sorted.
func readDirNames(back *Backing, rel string) ([]string, error) {
	names, err := back.ReadDirNames(rel)
	sort.Strings(names)
	return names, err
}

func checkStaged(back *Backing, dirRel string, names []string, cfg Config) []Problem {
	var out []Problem
	for _, n := range names {
		if IsStageName(n) && !back.StageOwned(dirRel, n) {
			out = append(out, Problem{Path: filepath.Join(dirRel, n),
				Reason: "staged file left by an interrupted write (the old content is intact; the next mount removes it)"})
		}
	}
	return out
}

// checkArrays validates every daf array of a directory: each NAME.yaml
// with a data file beside it.
func checkArrays(back *Backing, dirRel string, names []string, cfg Config) []Problem {
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	var out []Problem
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ExtYAML)
		if !ok || base == "" {
			continue
		}
		var first string
		for _, ext := range dafDataExts {
			if has[base+ext] {
				first = base + ext
				break
			}
		}
		if first == "" {
			continue // a scalar property or any other yaml
		}
		item, p, err := validateArray(back, dirRel, first)
		if err == nil && p == nil && item != nil && item.meta.Sparse {
			p = checkSparseContent(back, dirRel, base, item.meta)
		}
		if err != nil {
			out = append(out, Problem{Path: filepath.Join(dirRel, first), Reason: err.Error()})
		} else if p != nil {
			out = append(out, Problem{Path: filepath.Join(dirRel, p.Path), Reason: p.Reason})
		}
	}
	return out
}
