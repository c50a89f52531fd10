// Package engine is what every format of arrayfs is served with, and
// knows no format itself:
//
//   - Backing: the dataset directory, through which every access to a
//     backing file goes, each path resolved under the directory's own
//     descriptor without following a symbolic link (backing.go);
//   - Mapping and View: read-only shared mappings of backing files,
//     pinned while a reader holds a slice of them (mapping.go);
//   - Pool: the LRU write-back pool every write lands in first, with its
//     states and eviction policy in one place (pool.go);
//   - Stage: a whole-file replacement written beside the file and
//     published by rename (stage.go);
//   - Error, Problem and Reporter: every refusal names the path, the
//     reason and the errno; each problem is logged once (errors.go);
//   - FileSig: one version of a file, to tell a change made behind
//     arrayfs's back (filesig.go);
//   - Format, Env and Formats: what a dataset asks of a format, what it
//     gives one, and the dispatch over them (format.go, formats.go).
//
// It imports no package of arrayfs. Invariants: no path it resolves ever
// leaves the dataset or follows a link; a write reaches a backing file
// only through the pool's write-back or a Stage's commit; a unit handed
// to the pool is immutable.
package engine
