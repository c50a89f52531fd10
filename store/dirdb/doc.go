// Package dirdb serves dirdb databases (../shared/formats/dirdb.md): a
// directory holding NAME.pickle files is a database, every subdirectory
// of a database a sub-database.
// Entry NAME is NAME.pickle (the data), NAME.json (optional metadata) and
// NAME.lock (dirdb's lock file, never shown).
//
// Python dirdb processes rewrite entries in place (truncate, write) under
// an exclusive flock on NAME.lock, so the mount may never read a backing
// entry file without that lock, and never write one in place:
//   - reading serves a Snapshot: a private copy taken under the lock
//     (snapshot.go);
//   - writing goes to a Stage beside the entry, published by rename(2)
//     under the lock (write.go);
//   - unlink and rename move the entry's files together, under the lock
//     (namespace.go).
//
// Lock order: Entry.mu (in path order when there are several), then
// flocks (in path order), then Databases.mu. Python holds one flock at a
// time, so it cannot close a cycle.
//
// It imports store/engine and nothing else of arrayfs. Invariants: a
// backing entry file is read only under its lock and never written in
// place; every change of an entry is published by one rename under its
// lock, after an fsync; an Entry is held (refs) by every handle, File
// and stage of it, and is dropped from Databases once nothing holds it.
package dirdb
